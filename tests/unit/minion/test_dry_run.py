"""DRY=1: what would run, one line per param, on the stream; nothing taken."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from minionize import ProcessCallback
from minionize.engines.base import Engine
from minionize.engines.sweep.engine import SweepEngine
from minionize.minion.dry_run import show_dry_run
from minionize.testing import MemoryEngine


def test_each_param_gives_one_line_and_nothing_is_taken() -> None:
    engine = MemoryEngine(["a b", 2])
    out = io.StringIO()
    show_dry_run(engine, ProcessCallback(["echo", "hi"]), out)
    assert out.getvalue() == "echo hi 'a b'\necho hi 2\n"
    assert engine.status()["todo"] == 2 and engine.events == []


class Blind(MemoryEngine):
    def peek(self, limit: int) -> list[object]:
        return list(Engine.peek(self, limit))


def test_an_engine_that_cannot_peek_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="minionize"):
        show_dry_run(Blind([1]), ProcessCallback(["echo"]), out)
    assert out.getvalue() == ""
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("minionize.minion", "DRY: the memory engine cannot show params without taking them"),
    ]


def sweep_queue(path: Path, count: int) -> SweepEngine:
    engine = SweepEngine(str(path))
    engine.create()
    engine.fill(range(count))
    return engine


def test_the_sweep_engine_yields_its_first_param_before_reading_the_rest(tmp_path: Path) -> None:
    engine = sweep_queue(tmp_path / "q", 5000)
    # The last param is damaged (same length, so the queue still opens): a peek that
    # reads every param before the first is handed out fails before it.
    params_file = tmp_path / "q" / "params.jsonl"
    data = params_file.read_bytes()
    params_file.write_bytes(data[:-5] + b"}}}}\n")
    params = engine.peek(sys.maxsize)
    assert not isinstance(params, list)
    assert next(iter(params)) == 0
    engine.close()


def test_a_sweep_peek_is_the_todo_params_in_take_order(tmp_path: Path) -> None:
    engine = sweep_queue(tmp_path / "q", 6)
    taken = engine.take(3, 0.0)
    engine.retry(taken[1], "again")  # put back behind the cursor: taken after 3, 4, 5
    engine.ack(taken[0])
    engine.flush()
    assert list(engine.peek(sys.maxsize)) == [3, 4, 5, 1]
    assert list(engine.peek(2)) == [3, 4]
    assert [d.param for d in engine.take(10, 0.0)] == [3, 4, 5, 1]
    engine.close()


def test_a_dry_run_writes_what_it_could_show_then_warns_of_a_damaged_param(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sweep_queue(tmp_path / "q", 3)
    params_file = tmp_path / "q" / "params.jsonl"
    params_file.write_bytes(b"0\n1\n}\n")
    out = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="minionize"):
        show_dry_run(engine, ProcessCallback(["echo"]), out)
    assert out.getvalue() == "echo 0\necho 1\n"
    [record] = caplog.records
    assert record.getMessage().startswith("DRY: ")
    assert "params.jsonl" in record.getMessage() and "damaged" in record.getMessage()
    engine.close()


class Lines(io.StringIO):
    """A stream that records what had been flushed when each line was written."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = ""

    def flush(self) -> None:
        self.flushed = self.getvalue()


def test_a_long_dry_run_is_flushed_as_it_goes(tmp_path: Path) -> None:
    engine = sweep_queue(tmp_path / "q", 2500)
    out = Lines()
    seen_before_end: list[int] = []

    def params() -> Iterator[int]:
        for param in engine.peek(sys.maxsize):
            seen_before_end.append(out.flushed.count("\n"))
            yield param

    class Peeking(MemoryEngine):
        def peek(self, limit: int) -> Iterator[int]:  # type: ignore[override]
            return params()

    show_dry_run(Peeking([]), ProcessCallback(["echo"]), out)
    assert out.getvalue().count("\n") == 2500
    # Lines were flushed while params were still being read, not only at the end.
    assert 0 < seen_before_end[-1] < 2500
    engine.close()
