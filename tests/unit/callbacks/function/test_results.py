"""A function's return value is its task's result, stored with the ack (as JSON)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from contextlib import redirect_stdout
from typing import Any

import pytest

from minionize import FuncCallback
from minionize.callbacks.base import Outcome, Task
from minionize.config import Settings
from minionize.engines.base import Delivery, Engine
from minionize.minion.run import Minion
from minionize.task_result import UnstorableResult, decode_result, encode_result
from minionize.testing import MemoryEngine


def run(func: Any, params: list[Any], mode: str = "process", **env: str) -> MemoryEngine:
    engine = MemoryEngine(params)
    settings = Settings.from_env(env, max_attempts=1)
    Minion(FuncCallback(func, mode=mode), engine=engine, settings=settings).run()
    return engine


def double(param: int) -> Any:
    return {"param": param, "double": 2 * param, "text": "été"}


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_results_come_back_in_queue_order_with_their_param(mode: str) -> None:
    engine = run(double, [3, 1, 2], mode=mode)
    rows = list(engine.results())
    assert [row["param"] for row in rows] == [3, 1, 2]
    assert [row["result"] for row in rows] == [double(3), double(1), double(2)]


@pytest.mark.parametrize("mode", ["process", "thread"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (object(), "cannot be stored as JSON: TypeError"),
        ({1, 2}, "cannot be stored as JSON: TypeError"),
        (math.nan, "cannot be stored as JSON: ValueError"),
        ([1.0, math.inf], "cannot be stored as JSON: ValueError"),
        ({(1, 2): "tuple key"}, "cannot be stored as JSON: TypeError"),
    ],
)
def test_a_result_json_cannot_hold_is_a_failed_attempt_that_says_so(
    mode: str, value: Any, reason: str
) -> None:
    engine = run(lambda param: value, [1], mode=mode)
    assert engine.done == []
    [(param, why)] = engine.dead
    assert param == 1 and reason in why


def test_a_result_larger_than_the_limit_is_a_failed_attempt_naming_the_variable() -> None:
    engine = run(lambda param: "x" * param, [10, 200], MINION_RESULT_MAX_BYTES="100")
    assert [row["result"] for row in engine.results()] == ["x" * 10]
    [(param, why)] = engine.dead
    assert param == 200
    assert "202 bytes as JSON" in why and "MINION_RESULT_MAX_BYTES" in why


def test_none_stores_nothing_and_every_done_param_is_listed() -> None:
    engine = run(lambda param: None if param == 2 else param, [1, 2, 3])
    assert list(engine.results()) == [
        {"id": "0", "param": 1, "result": 1},
        {"id": "1", "param": 2, "result": None},
        {"id": "2", "param": 3, "result": 3},
    ]


def test_values_keep_their_exact_type_through_the_queue() -> None:
    values = [0.1, 3.10, 10**30, "3.10", True, [], {"b": [1, {"a": None}]}, "\udc80", "\u2028"]
    for value in values:
        text = encode_result(value)
        assert decode_result(text) == value and type(decode_result(text)) is type(value)
        assert text is not None and text.encode("utf-8")  # storable as UTF-8 text


def test_a_deep_structure_is_unstorable_not_a_crash() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(UnstorableResult, match="cannot be stored as JSON"):
        encode_result(deep)


class OldEngine(MemoryEngine):
    """An engine written before results: ack takes the delivery alone."""

    keeps_results = False

    def ack(self, delivery: Delivery) -> None:  # type: ignore[override]
        super().ack(delivery)


def test_an_engine_that_keeps_no_results_runs_functions_as_before() -> None:
    engine = OldEngine([1, 2])
    Minion(FuncCallback(lambda p: object()), engine=engine,
           settings=Settings.from_env({})).run()
    assert engine.done == [1, 2] and engine.dead == []


def test_a_command_stores_no_result() -> None:
    from minionize.callbacks.process.callback import ProcessCallback

    engine = MemoryEngine(["a"])
    Minion(ProcessCallback(["true"]), engine=engine, settings=Settings.from_env({})).run()
    assert list(engine.results()) == [{"id": "0", "param": "a", "result": None}]


def test_minion_queue_results_prints_queue_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from minionize.cli import queue as cli

    engine = MemoryEngine([2, "b"])
    Minion(FuncCallback(lambda p: [p, "é"]), engine=engine, settings=Settings.from_env({})).run()
    for as_json, expected in (
        (False, '2\t[2,"é"]\n"b"\t["b","é"]\n'),
        (True, "".join(json.dumps(row, sort_keys=True) + "\n" for row in engine.results())),
    ):
        args = cli.build_parser().parse_args(["results", *(["--json"] if as_json else [])])
        out = io.StringIO()
        with redirect_stdout(out):
            assert cli.COMMANDS["results"](engine, args) == 0
        assert out.getvalue().replace(", ", ",") == expected.replace(", ", ",")


def test_an_engine_without_results_says_which_engines_keep_them() -> None:
    from minionize.errors import UnsupportedOperation

    class Plain(Engine):
        name = "plain"

        @classmethod
        def from_settings(cls, settings: Settings) -> Engine:
            return cls()

        def take(self, max_count: int, timeout: float) -> list[Delivery]:
            return []

        def ack(self, delivery: Delivery, result: Any = None) -> None: ...
        def retry(self, delivery: Delivery, reason: str) -> None: ...
        def release(self, delivery: Delivery) -> None: ...
        def dead_letter(self, delivery: Delivery, reason: str) -> None: ...

    with pytest.raises(UnsupportedOperation, match="does not keep results.*sweep, file and redis"):
        iter_results: Iterator[Any] = Plain().results()
        next(iter_results)


def test_the_outcome_of_a_stored_result_is_ok_with_its_text() -> None:
    callback = FuncCallback(double)
    callback.keep_results(1000)
    try:
        result = callback.run(Task(Delivery(4, "4")))
    finally:
        callback.teardown()
    assert result.outcome is Outcome.OK
    assert json.loads(result.result or "") == double(4)
