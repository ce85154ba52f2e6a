"""The Reporter protocol: what a minion tells the world about itself and its tasks.

Reporters are called from several threads (slot threads report their tasks, the
monitor sends heartbeats): implementations guard their state with a lock. A reporter
must never raise into the loop for a param it cannot encode: it reports its ``repr``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from ..identity import JOB_VARIABLES, MinionInfo

if TYPE_CHECKING:
    from ..callbacks.base import Task
    from ..config import Settings

#: MinionInfo lives in :mod:`minionize.identity`; named here too for reporters' authors.
__all__ = ["JOB_VARIABLES", "MinionInfo", "NullReporter", "Reporter", "TaskReport"]


@dataclass
class TaskReport:
    """How one attempt of one param ended."""

    param: Any
    param_id: str
    attempt: int
    #: How the attempt was settled: the value of a :class:`~minionize.engines.base.Settle`,
    #: ``done`` (acked), ``retry`` (failed, requeued), ``dead`` (dead-lettered),
    #: ``released`` (given back on shutdown, attempt not counted). Not the callback's
    #: :class:`~minionize.callbacks.base.Outcome` (ok, failed, rejected).
    outcome: str
    start: float
    duration: float
    exit_code: Optional[int] = None
    reason: str = ""
    stderr_tail: str = ""
    stdout_path: Optional[str] = None
    stderr_path: Optional[str] = None


class Reporter(abc.ABC):
    """Receives the minion's events. Every method is cheap and never raises."""

    name = "reporter"

    @classmethod
    def from_settings(cls, settings: Settings) -> Reporter:
        return cls()

    def start(self, minion: MinionInfo) -> None:
        """The minion starts."""

    def task_started(self, task: Task) -> None:
        """A task starts running."""

    @abc.abstractmethod
    def task_finished(self, report: TaskReport) -> None:
        """A task's attempt ended and was settled."""

    def heartbeat(self, running: Sequence[Task]) -> None:
        """Called every few seconds by the monitor with the tasks running now: the
        report's sign of life (leases are renewed by the engine's ``extend``, apart)."""

    def stop(self, exit_code: int) -> None:
        """The minion ends: flush."""


class NullReporter(Reporter):
    """Reports nothing (the default)."""

    name = "null"

    def task_finished(self, report: TaskReport) -> None:
        pass
