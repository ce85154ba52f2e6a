"""The executor's thread: it hands the submitted calls to the workers, a few at a time,
and fills their futures as the results come back.

Submitted calls wait in the caller's process until a worker is about to be free: at most
``capacity`` calls are out (written to the queue) at once, so that ``cancel()`` and
``shutdown(cancel_futures=True)`` cancel what no worker started. A call's function and
arguments are pickled when it goes out, and the caller's references to them dropped.

An item's exception carries the worker's traceback as its ``__cause__`` (a
``concurrent.futures.process._RemoteTraceback``, as ``ProcessPoolExecutor``'s do); a call
lost for good is a :class:`TaskLost` on its own future; workers that cannot start, or
that are all lost, break the executor (:class:`BrokenPoolError` on every future left).
"""

from __future__ import annotations

import collections
import logging
import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures.process import _RemoteTraceback
from typing import Any, Callable, Optional

from .collect import MAX_TICK, Call
from .errors import BrokenPoolError, PoolError, TaskLost
from .pickling import decode_chunk
from .run import Run, start_run

#: concurrent.futures' logger: a broken executor is reported there, as the standard
#: library's executors report a failed initializer.
LOGGER = logging.getLogger("concurrent.futures")

#: A submitted call: its future, function, arguments and keyword arguments.
Work = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Dispatcher:
    """The submitted calls of one executor, waiting or out, and the thread that drives
    them. It starts the run's workers, and ends the run once no call is left after
    :meth:`shutdown` (or once nothing holds it)."""

    def __init__(self, run: Run, capacity: int) -> None:
        self.run = run
        self.capacity = capacity
        self._finish = start_run(run, self)
        self._waiting: collections.deque[Work] = collections.deque()
        self._out: list[tuple[Call, Future[Any]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        #: Calls being sent by the callers' threads.
        self._sending = 0
        #: Why the executor is broken, once it is ("": it is not).
        self.broken = ""
        self._thread: Optional[threading.Thread] = None

    def submit(self, work: Work) -> None:
        """A call: sent at once (by the caller's thread) while fewer than ``capacity`` are
        out, else kept waiting for the executor's thread to send it."""
        with self._lock:
            if self.broken:
                raise BrokenPoolError(self.broken)
            if self._stopping:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="minionize-executor", daemon=True)
                self._thread.start()
            now = not self._waiting and len(self._out) + self._sending < self.capacity
            if now:
                self._sending += 1
            else:
                self._waiting.append(work)
                self._wake.notify()
                return
        try:
            self._send(work)
        finally:
            with self._lock:
                self._sending -= 1
                self._wake.notify()

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """No more calls; ``cancel_futures``: cancel those still waiting; ``wait``: until
        every call left is over and the workers are stopped."""
        with self._lock:
            self._stopping = True
            if cancel_futures:
                for work in self._waiting:
                    work[0].cancel()
                self._waiting.clear()
            self._wake.notify_all()
            thread = self._thread
        if thread is None:
            self._finish()
        elif wait and thread is not threading.current_thread():
            thread.join()

    # -- the thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while self._turn():
                pass
        finally:
            self._finish()

    def _turn(self) -> bool:
        """Send what may go out, look once at each call out; False once all is over."""
        with self._lock:
            while not (self._waiting or self._out or self._stopping or self._sending):
                self._wake.wait()
            if not (self._waiting or self._out or self._sending):
                return False
            room = self.capacity - len(self._out) - self._sending
            sending = [self._waiting.popleft() for _ in range(max(0, min(len(self._waiting), room)))]
            out = list(self._out)
        sending.reverse()
        while sending:  # each call's references dropped once it is sent
            self._send(sending.pop())
        tick = MAX_TICK
        out.reverse()
        while out:  # no reference to a future kept once it is set (nor to its result)
            call, future = out.pop()
            tick = min(tick, call.tick)
            try:
                outcome = self._look(call)
            except PoolError as exc:
                self._break(exc)
                return False
            if outcome is not None:
                call.abandon()
                with self._lock:
                    self._out.remove((call, future))
                _settle(future, *outcome)
            del future, outcome
        with self._lock:
            if not (self._waiting and len(self._out) + self._sending < self.capacity):
                self._wake.wait(tick)
        return True

    def _send(self, work: Work) -> None:
        future, func, args, kwargs = work
        if not future.set_running_or_notify_cancel():
            return
        try:
            call = self.run.call(func, [(args, kwargs)], 1, apply=True)
        except BaseException as exc:
            future.set_exception(exc)
            return
        with self._lock:
            if not self.broken:
                self._out.append((call, future))
                return
        call.abandon()
        future.set_exception(BrokenPoolError(self.broken))

    @staticmethod
    def _look(call: Call) -> Optional[tuple[bool, Any]]:
        """One look at a call: its outcome (ok, the value or exception) once it is over."""
        try:
            chunks = call.poll()
        except TaskLost as exc:
            return False, exc
        except PoolError:
            raise
        except Exception as exc:
            return False, exc
        for start, outcomes in chunks:
            ok, value, text = next(decode_chunk(start, outcomes))
            if not ok and text:
                value.__cause__ = _RemoteTraceback(text)  # type: ignore[arg-type]
            return ok, value
        return None

    def _break(self, error: PoolError) -> None:
        """Workers that cannot start, or all lost: every future left fails."""
        LOGGER.critical("the executor is broken: %s", error)
        self.run.keep = True  # for a look: the error ends the executor
        with self._lock:
            self.broken = str(error)
            self._stopping = True
            left = [work[0] for work in self._waiting] + [future for _, future in self._out]
            out, self._out = self._out, []
            self._waiting.clear()
        for call, _ in out:
            call.abandon()
        for future in left:
            try:
                future.set_exception(BrokenPoolError(self.broken))
            except InvalidStateError:
                pass  # cancelled meanwhile


def _settle(future: Future[Any], ok: bool, value: Any) -> None:
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
