"""The monitor of a minion: one thread that watches the running tasks.

Every tick (0.1 s) it

* stops a task past its timeout (``MINION_TASK_TIMEOUT``): SIGTERM, then SIGKILL after
  the grace period; :func:`minionize.minion.settle.decide` later makes that a failed attempt;
* on a graceful stop (:mod:`minionize.minion.stopping`), says so once and stops every running
  task the same way (at once with SIGKILL after a second signal);
* writes the settles the engine batched (``engine.flush``);
* renews the leases of the running params every ``engine.lease_renewal_interval()``
  seconds (``engine.extend``), so that no other minion takes them;
* gives the reporter a heartbeat every 2 s.

It never settles a param: the :class:`~minionize.minion.settle.Settler` does, when the
task ends. A task is stopped from a thread of its own (a ``docker stop`` may block).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Callable, Optional

from ..callbacks.base import StopReason

if TYPE_CHECKING:
    from ..callbacks.base import Callback, Task
    from ..engines.base import Engine
    from ..reporters.base import Reporter
    from .slots import Slots
    from .stopping import GracefulStop
    from .timeouts import MedianTimeout

log = logging.getLogger("minionize.minion")

#: How often the monitor wakes to check timeouts.
TICK_SECONDS = 0.1
#: How often the reporter gets a heartbeat.
REPORT_HEARTBEAT_SECONDS = 2.0


class Monitor:
    """Timeouts, the grace period, lease renewal, engine flushes and report heartbeats.

    It watches the tasks of ``slots``, gives them the deadlines of ``deadlines``
    (``--timeout X%``, None: fixed ones) and stops them through ``callback``;
    ``reporter`` is None when nobody listens. :meth:`start` starts the thread,
    :meth:`finish` ends it.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        callback: Callback,
        reporter: Optional[Reporter],
        stop: GracefulStop,
        slots: Slots,
        deadlines: Optional[MedianTimeout],
        grace_period: float,
    ) -> None:
        self.engine = engine
        self.callback = callback
        self.reporter = reporter
        self.stop = stop
        self.slots = slots
        self.deadlines = deadlines
        self.grace_period = grace_period
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="minion-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        """End the monitor (at its next tick; the loop does not wait for it)."""
        self._done.set()

    def _run(self) -> None:
        interval = self.engine.lease_renewal_interval()
        next_renewal = time.monotonic() + interval if interval else float("inf")
        next_report = time.monotonic() + REPORT_HEARTBEAT_SECONDS
        announced = False
        while not self._done.wait(TICK_SECONDS):
            now = time.monotonic()
            tasks = self.slots.running()
            if self.deadlines is not None:
                self.deadlines.apply(tasks)
            stopping = self.stop.asked.is_set()
            hurried = self.stop.hurried
            if stopping and not announced and self.stop.signal is not None:
                announced = True
                self._announce(self.stop.signal, len(tasks))
            for task in tasks:
                self._police(task, now, stopping, hurried)
            try:
                self.engine.flush()
            except Exception as exc:
                log.warning("could not write settles to the queue: %s", exc)
            if now >= next_renewal and tasks:
                next_renewal = now + (interval or 0)
                try:
                    self.engine.extend([t.delivery for t in tasks if not t.settled])
                except Exception as exc:
                    log.warning("could not renew leases: %s", exc)
            if now >= next_report:
                next_report = now + REPORT_HEARTBEAT_SECONDS
                if self.reporter is not None:
                    self.reporter.heartbeat(tasks)

    def _announce(self, signum: int, running: int) -> None:
        name = signal.Signals(signum).name
        log.warning(
            "%s: stopping; %d running task(s) get SIGTERM, SIGKILL after %gs, and their "
            "params go back to the queue (send %s again to stop at once)",
            name, running, self.grace_period, name,
        )

    def _police(self, task: Task, now: float, stopping: bool, hurried: bool) -> None:
        """SIGTERM a task past its deadline or on a stop; SIGKILL it once its grace
        period is over (at once after a second signal)."""
        if task.terminated_at is None:
            reason: Optional[StopReason] = None
            if stopping:
                reason = StopReason.SHUTDOWN
            elif task.deadline is not None and now >= task.deadline:
                reason = StopReason.TIMEOUT
            if reason is not None:
                task.mark_stopping(reason)
                task.terminated_at = now
                self._in_background(self.callback.terminate, task)
        overdue = task.terminated_at is not None and (
            hurried or now - task.terminated_at >= self.grace_period
        )
        if overdue and not task.killed:
            task.killed = True
            self._in_background(self.callback.kill, task)

    @staticmethod
    def _in_background(action: Callable[[Task], None], task: Task) -> None:
        # A docker stop may block: never let it hold up the monitor.
        def call() -> None:
            try:
                action(task)
            except Exception as exc:
                log.warning("could not stop task %s: %s", task.delivery.id, exc)

        threading.Thread(target=call, name="minion-stopper", daemon=True).start()
