"""The slots of a minion: ``concurrency`` threads that each loop take -> run -> settle.

Only one slot is in ``engine.take`` at a time, and it asks for as many params as there
are free slots; the extras of a batch wait in a stash. The run ends when the queue is
drained (``engine.exhausted()``) or idle for ``MINION_IDLE_TIMEOUT`` while nothing runs
and the engine reaches its server (``engine.reachable_since()``: an outage is never idle).
A slot never settles a param itself: it hands the result to the
:class:`~minionize.minion.settle.Settler` (the one place that acts on the decision).
With a start interval (``--delay``), two task starts of the minion are at least that far
apart. With a walltime (:class:`~minionize.minion.time_left.TimeLeft`), a slot asks it
before each take and stops taking, for good, once it says no: the params taken but not
started go back at once (released, no attempt counted), and the slots end as their
tasks finish.
"""

from __future__ import annotations

import collections
import threading
import time
import traceback
from typing import TYPE_CHECKING, Optional

from ..callbacks.base import Outcome, Result, StopReason, Task
from ..errors import CommandLineError

if TYPE_CHECKING:
    from ..callbacks.base import Callback
    from ..config import Settings
    from ..engines.base import Delivery, Engine
    from ..reporters.base import Reporter
    from .hooks import Hooks
    from .settle import Settler
    from .stopping import GracefulStop
    from .time_left import TimeLeft

#: Longest wait in ``engine.take`` (and between polls of a queue that answers at once).
POLL_SECONDS = 0.5
#: Exit codes of a task killed by a stop signal (SIGHUP, SIGINT, SIGKILL, SIGTERM), as
#: a signal number (negative) or as a shell reports it (128 + n).
STOP_SIGNAL_EXITS = frozenset(
    code for n in (1, 2, 9, 15) for code in (-n, 128 + n)
)
#: How long a task killed by such a signal waits for the minion's own stop signal.
SIGNAL_SETTLE_SECONDS = 0.5


class Slots:
    """The slot threads, the running tasks and the stash of taken params.

    ``stop`` says whether a stop was asked (it wakes a slot waiting for work) and takes
    the failure of the queue or of the command line; ``settler`` settles, and says
    whether ``--halt`` stopped the taking; ``reporter`` (None: nobody listens) and
    ``hooks`` are told of each task; ``start_interval`` is the least time between two
    task starts (None: none); ``time_left`` the walltime (None: none).
    """

    def __init__(
        self,
        *,
        engine: Engine,
        callback: Callback,
        settler: Settler,
        stop: GracefulStop,
        reporter: Optional[Reporter],
        hooks: Hooks,
        settings: Settings,
        start_interval: Optional[float] = None,
        time_left: Optional[TimeLeft] = None,
    ) -> None:
        self.engine = engine
        self.callback = callback
        self._settler = settler
        self._stop = stop
        self._reporter = reporter
        self._hooks = hooks if hooks else None
        self._concurrency = settings.concurrency
        self._task_timeout = settings.task_timeout
        self._idle_timeout = settings.idle_timeout
        self._start_interval = start_interval or None
        self._last_start: Optional[float] = None
        self._time_left = time_left
        self._start_lock = threading.Lock()
        self._changed = threading.Condition()
        self._take_lock = threading.Lock()
        self._stash: collections.deque[Delivery] = collections.deque()
        self._running: set[Task] = set()
        self._ended = self._out_of_time = False
        self._idle_since = time.monotonic()
        self.threads = [
            threading.Thread(target=self._work, name=f"minion-slot-{i}", daemon=True)
            for i in range(settings.concurrency)
        ]
        stop.when_asked(self.wake)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def wake(self) -> None:
        """Wake the slots waiting for work and a take riding out an outage (a stop)."""
        self.engine.stop_waiting()
        with self._changed:
            self._changed.notify_all()

    def running(self) -> list[Task]:
        """The tasks running now."""
        with self._changed:
            return list(self._running)

    def unsettled(self) -> tuple[list[Task], list[Delivery]]:
        """At the end: the tasks still running and the params taken but never run."""
        stash = list(self._stash)
        self._stash.clear()
        return self.running(), stash

    def _stopped(self) -> bool:
        """Take nothing new: a stop was asked, ``--halt`` halted the minion, or the
        walltime cannot finish another task."""
        return self._stop.asked.is_set() or self._settler.halted or self._out_of_time

    # -- take -> run -> settle -------------------------------------------------------
    def _work(self) -> None:
        while not self._stopped():
            try:
                delivery = self._next_delivery()
            except Exception as exc:
                # The queue itself failed: stop gracefully, then report it (exit 2).
                self._stop.fail(exc)
                return
            if delivery is None:
                if self._ended:
                    return
                continue
            if self._stopped():
                self._settler.settle(Task(delivery, stop_reason=StopReason.SHUTDOWN),
                                     Result(Outcome.FAILED, reason="minion stopping"))
                return
            self._run_one(delivery)

    def _next_delivery(self) -> Optional[Delivery]:
        with self._take_lock:
            if self._stopped() or self._ended:
                return None
            if self._time_left is not None and not self._time_left.admits():
                self._out_of_time = True  # for good: what was taken and not started goes back
                self._settler.give_back((), self.unsettled()[1])
                return None
            if self._stash:
                return self._stash.popleft()
            free = max(1, self._concurrency - len(self._running))
            asked = time.monotonic()
            if self._hooks is not None:
                self._hooks.before_take()
            batch = self.engine.take(free, POLL_SECONDS)
            if self._hooks is not None:
                self._hooks.after_take(batch)
            if batch:
                self._idle_since = time.monotonic()
                self._stash.extend(batch[1:])
                return batch[0]
            self._check_end()
        if not self._ended:
            # The engine answered at once: wait for a change here (a retry, a settle,
            # a stop) rather than spinning on the queue.
            remaining = POLL_SECONDS - (time.monotonic() - asked)
            if remaining > 0:
                with self._changed:
                    if not self._stop.asked.is_set():
                        self._changed.wait(remaining)
        return None

    def _check_end(self) -> None:
        """After an empty take: end when the queue is drained or idle for too long.

        Idle time counts only while the engine reaches its server: an outage (and the
        time the engine spent riding it out inside ``take``) is never an empty queue.
        """
        reachable = self.engine.reachable_since()
        with self._changed:
            if self._running:
                return
            now = time.monotonic()
            if reachable is None:  # in an outage now: not idle
                self._idle_since = now
                return
            self._idle_since = max(self._idle_since, reachable)
            idle_for = now - self._idle_since
        timeout = self._idle_timeout
        if self.engine.exhausted() or (timeout is not None and idle_for >= timeout):
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _run_one(self, delivery: Delivery) -> None:
        task = Task(delivery)
        if self._task_timeout is not None:
            task.deadline = task.started + self._task_timeout
        with self._changed:
            self._running.add(task)
        try:
            if delivery.error is not None:
                result = Result(Outcome.REJECTED, reason=delivery.error)
            else:
                if self._start_interval is not None:
                    self._space_start(self._start_interval)
                    task.starts_now()
                if self._reporter is not None:
                    self._reporter.task_started(task)
                if self._hooks is not None:
                    self._hooks.task_starting(task)
                result = self._call(task)
                if self._time_left is not None and task.stop_reason is not StopReason.SHUTDOWN:
                    self._time_left.ran(task.running_for())
                if self._hooks is not None:
                    self._hooks.task_finished(task, result)
                killed = not result.ok and result.exit_code in STOP_SIGNAL_EXITS
                if killed and task.stop_reason is None:
                    # Not stopped by us: a scheduler stopping the job signals the tasks
                    # and the minion at the same time; let our own handler run first.
                    self._stop.asked.wait(SIGNAL_SETTLE_SECONDS)
            self._settler.settle(task, result)
        finally:
            with self._changed:
                self._running.discard(task)
                self._idle_since = time.monotonic()
                self._changed.notify_all()

    def _space_start(self, interval: float) -> None:
        """``--delay``: wait until ``interval`` seconds passed since the last start."""
        with self._start_lock:
            now = time.monotonic()
            if self._last_start is not None and now < self._last_start + interval:
                time.sleep(self._last_start + interval - now)
            self._last_start = time.monotonic()

    def _call(self, task: Task) -> Result:
        try:
            return self.callback.run(task)
        except CommandLineError as exc:
            # Not this param's fault: give it back, stop, exit 2 with this line.
            task.mark_stopping(StopReason.SHUTDOWN)
            self._stop.fail(exc)
            return Result(Outcome.FAILED, reason=str(exc))
        except Exception as exc:  # a callback bug or a raising function: a failed attempt
            tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
            return Result(Outcome.FAILED, reason=f"{type(exc).__name__}: {exc}", stderr_tail=tail)
