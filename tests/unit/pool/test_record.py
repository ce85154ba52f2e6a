"""A chunk's record, as a worker's function process makes it (``worker._record``)."""

from __future__ import annotations

import pickle
from typing import Any

from minionize.pool.calls import Feeder
from minionize.pool.collect import outcome_values
from minionize.pool.pickling import Values, decode_chunk, dump_items
from minionize.pool.results import ApplyResult
from minionize.pool.worker import _record

PARAM = {"call": 0, "chunk": 1, "start": 10}


def _outcomes(data: bytes) -> Any:
    call, chunk, start, outcomes = pickle.loads(data)
    assert (call, chunk, start) == (0, 1, 10)
    return Values(pickle.loads(outcomes)) if isinstance(outcomes, bytes) else outcomes


def test_plain_values_travel_as_one_pickle() -> None:
    outcomes = _outcomes(_record(abs, PARAM, [-1, 2, -3]))
    assert isinstance(outcomes, Values) and outcomes == [1, 2, 3]


def test_each_item_runs_once_when_one_raises() -> None:
    ran: list[int] = []

    def inverse(x: int) -> float:
        ran.append(x)
        return 1 / x

    outcomes = _outcomes(_record(inverse, PARAM, [1, 0, 2, 0, 4]))
    assert ran == [1, 0, 2, 0, 4]
    decoded = list(decode_chunk(10, outcomes))
    assert [ok for ok, _, _ in decoded] == [True, False, True, False, True]
    assert [v for ok, v, _ in decoded if ok] == [1.0, 0.5, 0.25]
    assert isinstance(decoded[1][1], ZeroDivisionError) and "ZeroDivisionError" in decoded[1][2]


def test_star_and_apply_items() -> None:
    assert _outcomes(_record(pow, {**PARAM, "star": True}, [(2, 3), (3, 2)])) == [8, 9]
    apply = {**PARAM, "apply": True}
    assert _outcomes(_record(pow, apply, [((2,), {"exp": 5})])) == [32]


def test_values_that_are_not_plain_are_pickled_one_by_one() -> None:
    outcomes = _outcomes(_record(lambda x: complex(x, 1), PARAM, [1, 2]))
    assert not isinstance(outcomes, Values)
    assert [v for _, v, _ in decode_chunk(10, outcomes)] == [1 + 1j, 2 + 1j]


def test_items_pickled_plain_or_by_value() -> None:
    assert pickle.loads(dump_items([1, "a", (2.5, None)], "x")) == [1, "a", (2.5, None)]
    square = pickle.loads(dump_items([lambda x: x * x], "x"))[0]
    assert square(3) == 9


def test_a_chunk_of_values_fills_the_result_in_place() -> None:
    result = ApplyResult(5, single=False)
    result.add((2, Values([7, 8, 9])))
    result.add((0, Values([5, 6])))
    result.finish()
    assert result.get() == [5, 6, 7, 8, 9]
    assert list(outcome_values(0, Values([1, 2]))) == [(True, 1), (True, 2)]


class _Store:
    def __init__(self) -> None:
        self.batches: dict[tuple[int, int], bytes] = {}

    def put_batch(self, call: int, batch: int, data: bytes) -> None:
        self.batches[(call, batch)] = data

    def remove_batch(self, call: int, batch: int) -> None:
        del self.batches[(call, batch)]


def test_a_list_is_read_by_slices_an_iterator_by_chunks() -> None:
    for items in (list(range(7)), iter(range(7))):
        store = _Store()
        feeder = Feeder(store, 0, items, 3, star=False)
        params = feeder.feed(None)
        assert feeder.exhausted and feeder.starts == [0, 3, 6]
        data = store.batches[(0, 0)]
        chunks = [pickle.loads(data[p["offset"]:p["offset"] + p["size"]]) for p in params]
        assert chunks == [[0, 1, 2], [3, 4, 5], [6]]
