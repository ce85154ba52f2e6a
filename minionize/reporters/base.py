"""The Reporter protocol: what a minion tells the world about itself and its tasks.

Reporters are called from several threads (worker threads report their tasks, the
monitor sends heartbeats): implementations guard their state with a lock. A reporter
must never raise into the loop for a param it cannot encode: it reports its ``repr``.
"""

from __future__ import annotations

import abc
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ..callbacks.base import Task
    from ..config import Settings

JOB_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "OAR_JOB_ID",
    "OAR_ARRAY_ID",
    "OAR_ARRAY_INDEX",
)


@dataclass
class MinionInfo:
    """Who this minion is: enough to find it on a cluster."""

    minion_id: str
    host: str
    pid: int
    start: float
    jobs: dict[str, str] = field(default_factory=dict)
    pod: Optional[str] = None
    engine: str = ""
    concurrency: int = 1

    @classmethod
    def current(cls, env: Mapping[str, str] | None = None) -> MinionInfo:
        env = os.environ if env is None else env
        pod = env.get("HOSTNAME") if env.get("KUBERNETES_SERVICE_HOST") else None
        return cls(
            minion_id=uuid.uuid4().hex[:12],
            host=socket.gethostname(),
            pid=os.getpid(),
            start=time.time(),
            jobs={name: env[name] for name in JOB_VARIABLES if env.get(name)},
            pod=pod,
        )

    @property
    def job_label(self) -> str:
        """``1234_5`` for an array task, ``1234`` for a job, ``""`` outside a scheduler."""
        jobs = self.jobs
        if "SLURM_ARRAY_JOB_ID" in jobs and "SLURM_ARRAY_TASK_ID" in jobs:
            return f"{jobs['SLURM_ARRAY_JOB_ID']}_{jobs['SLURM_ARRAY_TASK_ID']}"
        if "SLURM_JOB_ID" in jobs:
            return jobs["SLURM_JOB_ID"]
        if "OAR_JOB_ID" in jobs:
            return jobs["OAR_JOB_ID"]
        return ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskReport:
    """How one attempt of one param ended."""

    param: Any
    param_id: str
    attempt: int
    #: ``done`` (acked), ``retry`` (failed, requeued), ``dead`` (dead-lettered),
    #: ``released`` (given back on shutdown, attempt not counted).
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
        """Called every few seconds by the monitor with the tasks running now."""

    def stop(self, exit_code: int) -> None:
        """The minion ends: flush."""


class NullReporter(Reporter):
    """Reports nothing (the default)."""

    name = "null"

    def task_finished(self, report: TaskReport) -> None:
        pass
