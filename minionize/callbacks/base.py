"""The Callback protocol: what runs one param, and how it is stopped.

:meth:`Callback.run` is called in a worker thread of the minion loop and blocks until
the param is done, returning a :class:`Result`. Another thread (the loop's monitor) may
call :meth:`Callback.terminate` and then :meth:`Callback.kill` on the same
:class:`Task` when its timeout passes or the minion is asked to stop. A callback knows
nothing of queues: retries, acks and dead letters are the loop's business.
"""

from __future__ import annotations

import abc
import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ..engines.base import Delivery
from ..params import Param


class Outcome(enum.Enum):
    """How a task ended, as its callback says: ok, failed or rejected. Not the
    :class:`~minionize.engines.base.Settle` (done, retry, dead, released: what the
    engine does with the delivery), which the loop chooses from it."""

    OK = "ok"
    #: The attempt failed; another attempt may succeed.
    FAILED = "failed"
    #: The param itself cannot be run (e.g. a mapping without --template): dead-letter
    #: it at once, retrying cannot help.
    REJECTED = "rejected"


@dataclass
class Result:
    outcome: Outcome
    reason: str = ""
    exit_code: Optional[int] = None
    #: Last lines of the task's standard error, when they were captured.
    stderr_tail: str = ""
    #: Where the task's output was saved (per-task logs), if it was.
    stdout_path: Optional[str] = None
    stderr_path: Optional[str] = None
    #: What the task returned, as the JSON text the queue stores with the ack
    #: (:mod:`minionize.task_result`); None: nothing to store.
    result: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


class StopReason(enum.Enum):
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"


@dataclass(eq=False)
class Task:
    """One delivery being run: shared between the worker thread and the monitor."""

    delivery: Delivery
    #: Monotonic start time, and deadline (None: no timeout).
    started: float = field(default_factory=time.monotonic)
    wall_start: float = field(default_factory=time.time)
    deadline: Optional[float] = None
    #: Set once, by the monitor, when the task must stop.
    stop_reason: Optional[StopReason] = None
    #: When the polite stop was sent (the kill follows after the grace period).
    terminated_at: Optional[float] = None
    killed: bool = False
    #: Set once the loop settled the delivery (acked, retried, released, dead-lettered).
    settled: bool = False
    #: Private to the callback: a process id, a container id, ...
    handle: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def param(self) -> Param:
        return self.delivery.param

    @property
    def attempt(self) -> int:
        return self.delivery.attempt

    def running_for(self) -> float:
        return time.monotonic() - self.started


class Callback(abc.ABC):
    """Runs params. Subclass it, or one of ProcessCallback, FuncCallback, DockerCallback."""

    #: Whether :meth:`terminate` really stops a task. When it does, a task the minion
    #: stopped is never done, whatever it returns (it may have exited 0 on SIGTERM).
    #: When it does not (a Python function), a success that comes in while the minion
    #: stops is the task's own, and is done.
    can_stop: bool = True

    def keep_results(self, max_bytes: int) -> None:
        """Called by the loop, before :meth:`setup`, when its engine stores results: a
        callback whose tasks return a value (a function) then puts its JSON text in
        :attr:`Result.result`; one whose JSON is not exact or larger than ``max_bytes``
        is a failed attempt (:func:`minionize.task_result.encode_result`)."""

    def setup(self) -> None:
        """Once per minion, before the first param (check the program exists, connect)."""

    @abc.abstractmethod
    def run(self, task: Task) -> Result:
        """Run ``task.param`` to completion and say how it went. Exceptions count as a
        failed attempt."""

    def terminate(self, task: Task) -> None:
        """Ask the task to stop (SIGTERM to its process group). May be called before
        ``run`` has started it, or after it ended: then it does nothing harmful."""

    def kill(self, task: Task) -> None:
        """Stop the task now (SIGKILL)."""

    def describe(self, param: Param) -> str:
        """What would run for ``param`` (printed by ``DRY=1``)."""
        return repr(param)

    def teardown(self) -> None:
        """Once per minion, after the last param."""
