"""The Callback protocol: what runs one param, and how it is stopped.

:meth:`Callback.run` is called in a slot thread of the minion loop and blocks until
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
from typing import Any, Callable, Optional

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
    """One delivery being run: shared between the slot thread that runs it and the
    monitor that stops it. What runs it (a process, a container, a function's process)
    is attached and detached by the callback through the task's methods, and stops go
    through them too: under the task's own lock, a stop never meets a half-started or
    already reaped process."""

    delivery: Delivery
    #: Monotonic start time, and deadline (None: no timeout).
    started: float = field(default_factory=time.monotonic)
    wall_start: float = field(default_factory=time.time)
    deadline: Optional[float] = None
    #: Set by :meth:`mark_stopping` when minionize stops the task.
    stop_reason: Optional[StopReason] = None
    #: When the polite stop was sent (the kill follows after the grace period).
    terminated_at: Optional[float] = None
    killed: bool = False
    #: Set once the loop settled the delivery (acked, retried, released, dead-lettered).
    settled: bool = False
    #: Private to the callback: a process id, a container, ... (see :meth:`attach`).
    handle: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    #: A stop came before anything was attached: :meth:`attach` starts nothing.
    _stopped_early: bool = field(default=False, init=False, repr=False)
    #: What ran the task ended and was detached: a stop asked after it stops nothing.
    _ended: bool = field(default=False, init=False, repr=False)

    @property
    def param(self) -> Param:
        return self.delivery.param

    @property
    def attempt(self) -> int:
        return self.delivery.attempt

    def running_for(self) -> float:
        return time.monotonic() - self.started

    def starts_now(self) -> None:
        """The task starts now, not when it was made (``--delay`` waited in between):
        its start times, and a deadline counted from them, move to now."""
        now = time.monotonic()
        if self.deadline is not None:
            self.deadline += now - self.started
        self.started, self.wall_start = now, time.time()

    @property
    def lock(self) -> threading.Lock:
        """The task's lock, for callbacks written before :meth:`attach` and
        :meth:`signal` (which take it for you): hold it while setting or signalling
        :attr:`handle`."""
        return self._lock

    # -- what runs the task (the callback's side) -------------------------------------
    @property
    def stop_asked(self) -> bool:
        """Minionize stops the task, or a stop came before anything was attached."""
        return self.stop_reason is not None or self._stopped_early

    def attach(self, start: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Start what runs the task, unless a stop was asked: ``start(*args, **kwargs)``
        runs under the task's lock and what it returns becomes :attr:`handle`, returned;
        None when a stop came first (``start`` is not called)."""
        with self._lock:
            if self.stop_asked:
                return None
            self.handle = start(*args, **kwargs)
            return self.handle

    def detach(self) -> None:
        """What ran the task is gone (reap it after this): stops no longer reach it."""
        with self._lock:
            self._ended = self._ended or self.handle is not None
            self.handle = None

    def signal(self, send: Callable[..., None], *args: Any) -> None:
        """``send(handle, *args)`` under the task's lock while something is attached, so
        that it never reaches a process reaped meanwhile; before anything is attached,
        remember that a stop came first."""
        with self._lock:
            if self.handle is None:
                self._stopped_early = True
                return
            send(self.handle, *args)

    def stop_target(self) -> Any:
        """The handle to stop (to signal outside the lock, when that may block); None
        before anything is attached, and then the stop is remembered as in :meth:`signal`."""
        with self._lock:
            if self.handle is None:
                self._stopped_early = True
            return self.handle

    # -- the loop's side ---------------------------------------------------------------
    def mark_stopping(self, reason: StopReason) -> None:
        """Minionize stops the task for ``reason``: a shutdown wins over a timeout. A
        task whose process had already ended (detached) is not stopped: it ended by
        itself, and its result is its own (a success just before a stop is done, not
        given back to run again)."""
        with self._lock:
            if self._ended and self.stop_reason is None:
                return
            if self.stop_reason is None or reason is StopReason.SHUTDOWN:
                self.stop_reason = reason

    def settle_once(self) -> bool:
        """Mark the task settled; False when it was already (released at shutdown)."""
        with self._lock:
            if self.settled:
                return False
            self.settled = True
            return True


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
