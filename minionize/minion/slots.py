"""The workers of a minion: ``concurrency`` threads that each loop take -> run -> settle.

Only one worker is in ``engine.take`` at a time, and it asks for as many params as there
are free workers; the extras of a batch wait in a stash. The run ends when the queue is
drained (``engine.exhausted()``) or idle for ``MINION_IDLE_TIMEOUT`` while nothing runs
and the engine reaches its server (``engine.reachable_since()``: an outage is never idle).
A worker never settles a param itself: it hands the result to ``settle``
(:meth:`minionize.minion.run.Minion._settle`, the one place that acts on the decision).
"""

from __future__ import annotations

import collections
import threading
import time
import traceback
from typing import TYPE_CHECKING, Callable, Optional

from ..callbacks.base import Outcome, Result, StopReason, Task
from ..errors import CommandLineError
from .parts import MinionPart

if TYPE_CHECKING:
    from ..callbacks.base import Callback
    from ..config import Settings
    from ..engines.base import Delivery, Engine
    from ..reporters.base import Reporter

#: Longest wait in ``engine.take`` (and between polls of a queue that answers at once).
POLL_SECONDS = 0.5
#: Exit codes of a task killed by a stop signal (SIGHUP, SIGINT, SIGKILL, SIGTERM), as
#: a signal number (negative) or as a shell reports it (128 + n).
STOP_SIGNAL_EXITS = frozenset(
    code for n in (1, 2, 9, 15) for code in (-n, 128 + n)
)
#: How long a task killed by such a signal waits for the minion's own stop signal.
SIGNAL_SETTLE_SECONDS = 0.5


class Workers(MinionPart):
    """The worker threads, the running tasks and the stash of taken params.

    ``changed`` is the minion's condition (notified on a settle, a stop, a halt);
    ``stop`` is set once a stop was asked and ``halted()`` says whether ``--halt``
    stopped the taking; ``fail(exc)`` stops the minion because the queue or the command
    line failed; ``settle(task, result)`` settles.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        callback: Callback,
        reporter: Optional[Reporter],
        settings: Settings,
        changed: threading.Condition,
        stop: threading.Event,
        halted: Callable[[], bool],
        fail: Callable[[BaseException], None],
        settle: Callable[[Task, Result], None],
    ) -> None:
        super().__init__(engine=engine, callback=callback, reporter=reporter)
        self.settings = settings
        self._changed = changed
        self._stop = stop
        self._halted = halted
        self._fail = fail
        self._settle = settle
        self._take_lock = threading.Lock()
        self._stash: collections.deque[Delivery] = collections.deque()
        self._running: set[Task] = set()
        self._ended = False
        self._idle_since = time.monotonic()
        self.threads = [
            threading.Thread(target=self._work, name=f"minion-worker-{i}", daemon=True)
            for i in range(settings.concurrency)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

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
        """Take nothing new: a stop was asked, or ``--halt`` halted the minion."""
        return self._stop.is_set() or self._halted()

    # -- take -> run -> settle -------------------------------------------------------
    def _work(self) -> None:
        while not self._stopped():
            try:
                delivery = self._next_delivery()
            except Exception as exc:
                # The queue itself failed: stop gracefully, then report it (exit 2).
                self._fail(exc)
                return
            if delivery is None:
                if self._ended:
                    return
                continue
            if self._stopped():
                self._settle(Task(delivery, stop_reason=StopReason.SHUTDOWN),
                             Result(Outcome.FAILED, reason="minion stopping"))
                return
            self._run_one(delivery)

    def _next_delivery(self) -> Optional[Delivery]:
        with self._take_lock:
            if self._stopped() or self._ended:
                return None
            if self._stash:
                return self._stash.popleft()
            free = max(1, self.settings.concurrency - len(self._running))
            asked = time.monotonic()
            batch = self.engine.take(free, POLL_SECONDS)
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
                    if not self._stop.is_set():
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
        timeout = self.settings.idle_timeout
        if self.engine.exhausted() or (timeout is not None and idle_for >= timeout):
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _run_one(self, delivery: Delivery) -> None:
        task = Task(delivery)
        if self.settings.task_timeout is not None:
            task.deadline = task.started + self.settings.task_timeout
        with self._changed:
            self._running.add(task)
        try:
            if delivery.error is not None:
                result = Result(Outcome.REJECTED, reason=delivery.error)
            else:
                if self.reporter is not None:
                    self.reporter.task_started(task)
                result = self._call(task)
                killed = not result.ok and result.exit_code in STOP_SIGNAL_EXITS
                if killed and task.stop_reason is None:
                    # Not stopped by us: a scheduler stopping the job signals the tasks
                    # and the minion at the same time; let our own handler run first.
                    self._stop.wait(SIGNAL_SETTLE_SECONDS)
            self._settle(task, result)
        finally:
            with self._changed:
                self._running.discard(task)
                self._idle_since = time.monotonic()
                self._changed.notify_all()

    def _call(self, task: Task) -> Result:
        try:
            return self.callback.run(task)
        except CommandLineError as exc:
            # Not this param's fault: give it back, stop, exit 2 with this line.
            with task.lock:
                task.stop_reason = StopReason.SHUTDOWN
            self._fail(exc)
            return Result(Outcome.FAILED, reason=str(exc))
        except Exception as exc:  # a callback bug or a raising function: a failed attempt
            tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
            return Result(Outcome.FAILED, reason=f"{type(exc).__name__}: {exc}", stderr_tail=tail)
