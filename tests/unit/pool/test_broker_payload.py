"""A local pool's chunk comes to its worker with its items, and with its call's function
unless the worker said it holds it; a call over sends neither (the worker skips it)."""

from __future__ import annotations

from typing import Any

from minionize.pool.broker import Broker


def _answer(broker: Broker, held: tuple[int, ...] = ()) -> Any:
    answers: list[Any] = []
    broker.take("w0.1", answers.append, held)
    (answer,) = answers
    return answer


def test_items_and_function_come_with_the_chunk() -> None:
    broker = Broker(60.0, 3, lambda: None)
    broker.put_function(0, b"F")
    broker.put_batch(0, 0, b"aaabb")
    broker.fill([{"call": 0, "chunk": 0, "start": 0, "batch": 0, "offset": 0, "size": 3},
                 {"call": 0, "chunk": 1, "start": 3, "batch": 0, "offset": 3, "size": 2}])
    kind, param, attempt, func, items = _answer(broker)
    assert (kind, param["chunk"], attempt, func, items) == ("chunk", 0, 1, b"F", b"aaa")
    assert _answer(broker, held=(0,))[3:] == (None, b"bb")


def test_a_chunk_of_a_call_over_comes_without_its_pickles() -> None:
    broker = Broker(60.0, 3, lambda: None)
    broker.put_function(0, b"F")
    broker.put_batch(0, 0, b"aaa")
    broker.fill([{"call": 0, "chunk": 0, "start": 0, "batch": 0, "offset": 0, "size": 3}])
    assert _answer(broker)[3:] == (b"F", b"aaa")
    broker.start((0, 0))
    broker.remove_call(0)  # the call is over while its chunk runs; the chunk fails
    broker.settle("retry", (0, 0), "exit code 3")
    assert _answer(broker)[3:] == (None, None)
