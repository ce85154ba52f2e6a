"""Several reporters as one: the configured reporter plus the command line's extras
(``--joblog``, ``--results``, ``--tag``, ``--keep-order``, ``--delay``, ``--bar``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

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
        for reporter in self.reporters:
            try:
                reporter.task_started(task)
            except Exception as exc:
                log.warning("reporter %s failed: %s", reporter.name, exc)

    def task_finished(self, report: TaskReport) -> None:
        for reporter in self.reporters:
            try:
                reporter.task_finished(report)
            except Exception as exc:
                log.warning("reporter %s failed: %s", reporter.name, exc)

    def heartbeat(self, running: Sequence[Task]) -> None:
        for reporter in self.reporters:
            try:
                reporter.heartbeat(running)
            except Exception as exc:
                log.warning("reporter %s failed: %s", reporter.name, exc)

    def stop(self, exit_code: int) -> None:
        for reporter in self.reporters:
            try:
                reporter.stop(exit_code)
            except Exception as exc:
                log.warning("reporter %s failed: %s", reporter.name, exc)
