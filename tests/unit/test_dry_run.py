"""DRY=1: what would run, one line per param, on the stream; nothing taken."""

from __future__ import annotations

import io
import logging

import pytest

from minionize import ProcessCallback
from minionize.dry_run import show_dry_run
from minionize.engines.base import Engine
from minionize.testing import MemoryEngine


def test_each_param_gives_one_line_and_nothing_is_taken() -> None:
    engine = MemoryEngine(["a b", 2])
    out = io.StringIO()
    show_dry_run(engine, ProcessCallback(["echo", "hi"]), out)
    assert out.getvalue() == "echo hi 'a b'\necho hi 2\n"
    assert engine.status()["todo"] == 2 and engine.events == []


class Blind(MemoryEngine):
    def peek(self, limit: int) -> list[object]:
        return Engine.peek(self, limit)


def test_an_engine_that_cannot_peek_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="minionize"):
        show_dry_run(Blind([1]), ProcessCallback(["echo"]), out)
    assert out.getvalue() == ""
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("minionize.minion", "DRY: the memory engine cannot show params without taking them"),
    ]
