"""The pool's result thread: it drives the ``*_async`` calls, so that their results fill
(and their callbacks run) while the caller does something else.

It holds the calls and their results, never the pool: a pool nobody holds any more is
collected (with a ``ResourceWarning`` if it was running), and its finalizer stops this
thread.
"""

from __future__ import annotations

import threading
from typing import Optional

from .collect import MAX_TICK, Call
from .errors import PoolError
from .results import ApplyResult

#: How long an idle result thread waits for a call before it looks again.
IDLE_SECONDS = 0.5


class ResultThread:
    """Started at the first async call; each turn looks once at each call it drives."""

    def __init__(self) -> None:
        self._jobs: list[tuple[Call, ApplyResult]] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    def add(self, call: Call, result: ApplyResult) -> None:
        with self._lock:
            if self._stopping:
                raise ValueError("Pool not running")
            self._jobs.append((call, result))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="minionize-pool-results",
                                                daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def drain(self, timeout: Optional[float] = None) -> bool:
        """Wait until every call it drives is over (True), or ``timeout`` seconds."""
        with self._lock:
            return self._changed.wait_for(lambda: not self._jobs, timeout)

    def stop(self, reason: str) -> None:
        """Stop now; the calls still running fail with a :class:`PoolError` (``reason``)."""
        with self._lock:
            self._stopping = True
            self._changed.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            jobs, self._jobs = self._jobs, []
            self._changed.notify_all()
        for call, result in jobs:
            call.abandon()
            result.fail(PoolError(reason))
            result.finish()

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._changed.wait_for(lambda: self._jobs or self._stopping, IDLE_SECONDS)
                if self._stopping:
                    return
                jobs = list(self._jobs)
            tick = MAX_TICK
            for call, result in jobs:
                if self._turn(call, result):
                    with self._lock:
                        self._jobs.remove((call, result))
                        self._changed.notify_all()
                tick = min(tick, call.tick)
            with self._lock:
                self._changed.wait_for(lambda: self._stopping, tick)

    @staticmethod
    def _turn(call: Call, result: ApplyResult) -> bool:
        """One look at a call; True once it is over (its result finished)."""
        try:
            for chunk in call.poll():
                result.add(chunk)
            if not call.done:
                return False
            call.show(end=True)
        except Exception as exc:
            result.fail(exc)
        call.abandon()
        result.finish()
        return True
