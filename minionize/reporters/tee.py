"""Several reporters as one, each told every event in turn (what acts on a run, such
as GNU parallel's habits, is a hook: :mod:`minionize.minion.hooks`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable

from .base import MinionInfo, Reporter, TaskReport

if TYPE_CHECKING:
    from ..callbacks.base import Task

log = logging.getLogger("minionize")


class Tee(Reporter):
    """Calls each reporter in turn. ``start`` errors propagate (a joblog that cannot be
    opened is a configuration error); later errors are logged, never raised."""

    def __init__(self, reporters: Sequence[Reporter]) -> None:
        self.reporters = list(reporters)
        self.name = self.reporters[0].name if self.reporters else "tee"

    def start(self, minion: MinionInfo) -> None:
        for reporter in self.reporters:
            reporter.start(minion)

    def task_started(self, task: Task) -> None:
        self._each(lambda reporter: reporter.task_started(task))

    def task_finished(self, report: TaskReport) -> None:
        self._each(lambda reporter: reporter.task_finished(report))

    def heartbeat(self, running: Sequence[Task]) -> None:
        self._each(lambda reporter: reporter.heartbeat(running))

    def stop(self, exit_code: int) -> None:
        self._each(lambda reporter: reporter.stop(exit_code))

    def _each(self, call: Callable[[Reporter], None]) -> None:
        """``call`` on every reporter; a failure is logged, and the others still run."""
        for reporter in self.reporters:
            try:
                call(reporter)
            except Exception as exc:
                log.warning("reporter %s failed: %s", reporter.name, exc)
