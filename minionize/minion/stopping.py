"""The graceful stop of a minion: who asked, when, and whether a second signal came.

The first SIGTERM/SIGINT (or :meth:`GracefulStop.request`, what ``--halt now`` and a
command-line error do) asks the minion to stop: it takes nothing new, its monitor
(:mod:`minionize.minion.monitor`) SIGTERMs the running tasks and SIGKILLs them after the grace
period. A second signal hurries it: the tasks are killed at once and the minion exits
128 + the signal number. The signal handlers only set flags; the monitor and the
slots do the work.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("minionize.minion")

#: How often the main thread looks at the slots' threads while it waits for them.
JOIN_SECONDS = 0.1
#: After the kill that ends the grace period, how long to wait for tasks to go before
#: their params are released anyway (a task stuck in the kernel, or a Python function).
ABANDON_AFTER_KILL_SECONDS = 2.0


class GracefulStop:
    """The stop flags of one minion, and the failure that stopped it, if one did.
    What :meth:`when_asked` was given is called when a stop is asked (a slot waiting
    for work wakes up)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        #: Set once a stop was asked (read by the slots and the monitor).
        self.asked = threading.Event()
        self.asked_at: Optional[float] = None
        #: A second signal came: kill the running tasks at once.
        self.hurried = False
        self.hurried_at: Optional[float] = None
        #: The stop signal received, if a signal stopped the minion.
        self.signal: Optional[int] = None
        #: The queue failed, or the command line cannot run (the run raises it).
        self.failure: Optional[BaseException] = None

    def when_asked(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` each time a stop is asked (from the asking thread)."""
        self._listeners.append(listener)

    def request(self) -> None:
        """Ask for a graceful stop (what the first SIGTERM does)."""
        with self._lock:
            if self.asked_at is None:
                self.asked_at = time.monotonic()
            self.asked.set()
        for listener in self._listeners:
            listener()

    def fail(self, exc: BaseException) -> None:
        """The queue failed, or the command line cannot run: stop gracefully; the first
        failure is the one the run raises (exit 2)."""
        with self._lock:
            if self.failure is None:
                self.failure = exc
        self.request()

    def on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        """The handler of SIGTERM and SIGINT: only set flags."""
        if self.asked.is_set():
            self.hurried_at = time.monotonic()
            self.hurried = True
            self.signal = signum
            return
        self.signal = signum
        self.request()

    def install_handlers(self) -> Callable[[], None]:
        """Handle SIGTERM and SIGINT (from the main thread only); return what restores
        the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {
            signum: signal.signal(signum, self.on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    def join(self, threads: Sequence[threading.Thread], grace_period: float) -> None:
        """Wait for the slots' threads; once a stop was asked, no longer than the grace period
        and the kill allow (the params of tasks that did not stop are given back)."""
        while True:
            for thread in threads:
                thread.join(JOIN_SECONDS)
            if not any(thread.is_alive() for thread in threads):
                return
            if self.asked_at is not None:
                limit = self.asked_at + grace_period + ABANDON_AFTER_KILL_SECONDS
                if self.hurried_at is not None:
                    limit = min(limit, self.hurried_at + ABANDON_AFTER_KILL_SECONDS)
                if time.monotonic() >= limit:
                    log.warning("tasks did not stop in time: their params are given back "
                                "(or come back when their leases expire)")
                    return
