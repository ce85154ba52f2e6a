"""The hooks of a minion: called in their order at the loop's named points; a failing
one is logged and the others still run; ``start_interval`` spaces the task starts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import pytest

from minionize import FuncCallback
from minionize.callbacks.base import Result, Task
from minionize.config import Settings
from minionize.engines.base import Delivery
from minionize.minion.hooks import Hook
from minionize.minion.run import Minion
from minionize.reporters.base import MinionInfo, TaskReport
from minionize.testing import MemoryEngine


class Recording(Hook):
    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name = name
        self.calls = calls
        self.lock = threading.Lock()

    def _add(self, point: str) -> None:
        with self.lock:
            self.calls.append((self.name, point))

    def before_run(self, minion: MinionInfo) -> None:
        self._add("before_run")

    def before_take(self) -> None:
        self._add("before_take")

    def after_take(self, deliveries: Sequence[Delivery]) -> None:
        self._add(f"after_take {[d.param for d in deliveries]}")

    def task_starting(self, task: Task) -> None:
        self._add(f"starting {task.param}")

    def task_finished(self, task: Task, result: Result) -> None:
        self._add(f"finished {task.param} {result.outcome.value}")

    def task_settled(self, report: TaskReport) -> None:
        self._add(f"settled {report.param} {report.outcome}")

    def after_run(self, exit_code: int) -> None:
        self._add(f"after_run {exit_code}")


def test_hooks_are_called_in_order_at_each_point() -> None:
    calls: list[tuple[str, str]] = []
    engine = MemoryEngine(["a"])
    code = Minion(FuncCallback(lambda p: None, mode="thread"), engine,
                  settings=Settings.from_env({}),
                  hooks=[Recording("first", calls), Recording("second", calls)]).run()
    assert code == 0
    points = [point for name, point in calls if name == "first"]
    assert points[0] == "before_run" and points[-1] == "after_run 0"
    assert points[1:3] == ["before_take", "after_take ['a']"]
    assert points.index("starting a") < points.index("finished a ok") < points.index("settled a done")
    # Each point: every hook in its order before the next point.
    assert calls[:2] == [("first", "before_run"), ("second", "before_run")]
    settled = [i for i, call in enumerate(calls) if call[1] == "settled a done"]
    assert [calls[i][0] for i in settled] == ["first", "second"]


def test_a_failing_hook_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Hook):
        name = "broken"

        def task_settled(self, report: TaskReport) -> None:
            raise RuntimeError("boom")

    calls: list[tuple[str, str]] = []
    engine = MemoryEngine([1, 2])
    with caplog.at_level(logging.WARNING, logger="minionize"):
        code = Minion(FuncCallback(lambda p: None, mode="thread"), engine,
                      settings=Settings.from_env({}),
                      hooks=[Broken(), Recording("after", calls)]).run()
    assert code == 0 and sorted(engine.done) == [1, 2]
    assert "broken failed: boom" in caplog.text
    assert [p for _, p in calls if p.startswith("settled")] == ["settled 1 done", "settled 2 done"]


def test_a_start_interval_spaces_the_task_starts() -> None:
    starts: list[float] = []
    engine = MemoryEngine(range(3))
    Minion(FuncCallback(lambda p: starts.append(time.monotonic()), mode="thread"), engine,
           settings=Settings.from_env({}, concurrency=3), start_interval=0.2).run()
    starts.sort()
    assert len(starts) == 3
    assert all(b - a >= 0.19 for a, b in zip(starts, starts[1:]))
