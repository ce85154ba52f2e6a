"""What the pool's calls give back: ``multiprocessing``'s ``AsyncResult`` (``apply_async``,
``map_async``) and ``imap``'s iterator, with their semantics.

* ``get(timeout)`` raises ``multiprocessing.TimeoutError`` when the result is not ready
  in time, ``successful()`` raises ``ValueError`` before it is; a ``map`` fails with the
  first item that raised, once every item has run (multiprocessing's order).
* ``callback`` (with the value) or ``error_callback`` (with the exception) runs in the
  caller's process, in the pool's result thread, before ``wait()`` returns.
* ``imap``'s iterator hands on each result in its turn; ``next(timeout)`` raises
  ``multiprocessing.TimeoutError``; an error (of an item, of the iterable) comes out of
  ``next()`` after the results before it.
"""

from __future__ import annotations

import collections
import threading
import time
import traceback
from collections.abc import Iterator
from multiprocessing import TimeoutError
from typing import Any, Callable, Optional

from .collect import Call, outcome_values
from .inbox import Chunk
from .pickling import Values

Callback = Optional[Callable[[Any], object]]


class ApplyResult:
    """The result of ``apply_async`` (one value) or ``map_async`` (a list: ``total``
    values), filled chunk by chunk as they arrive."""

    def __init__(self, total: int, single: bool, callback: Callback = None,
                 error_callback: Callback = None) -> None:
        self._single = single
        self._values: list[Any] = [None] * total
        self._error: Optional[BaseException] = None
        self._callback = callback
        self._error_callback = error_callback
        self._event = threading.Event()

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error is None

    def wait(self, timeout: Optional[float] = None) -> None:
        self._event.wait(timeout)

    def get(self, timeout: Optional[float] = None) -> Any:
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._values[0] if self._single else self._values

    # -- filled by whoever drives the call ------------------------------------------
    def add(self, chunk: Chunk) -> None:
        """A chunk's outcomes: values in place, the first error kept."""
        start, outcomes = chunk
        if isinstance(outcomes, Values):  # every item returned: the values in place at once
            self._values[start:start + len(outcomes)] = outcomes
            return
        for j, (ok, value) in enumerate(outcome_values(start, outcomes)):
            if ok:
                self._values[start + j] = value
            elif self._error is None:
                self._error = value

    def fail(self, error: BaseException) -> None:
        """The call itself failed (a chunk lost, the pool terminated): unless an item
        failed first, that is the result."""
        if self._error is None:
            self._error = error

    def finish(self) -> None:
        """Every item is in: the callback runs, then the result is ready."""
        if self._event.is_set():
            return
        try:
            if self._error is None and self._callback is not None:
                self._callback(self._values[0] if self._single else self._values)
            elif self._error is not None and self._error_callback is not None:
                self._error_callback(self._error)
        except Exception:
            traceback.print_exc()  # as multiprocessing's result thread would show it
        finally:
            if self._error is not None:
                self._values = []  # a failed map keeps no half-list alive
            self._event.set()


AsyncResult = ApplyResult


class MapResult(ApplyResult):
    """The result of ``map_async`` and ``starmap_async``: a list."""

    def __init__(self, total: int, callback: Callback = None, error_callback: Callback = None) -> None:
        super().__init__(total, False, callback, error_callback)


def drive(call: Call, result: ApplyResult) -> None:
    """Look at the call until every chunk is in (in the caller's thread: ``map``)."""
    try:
        while True:
            for chunk in call.poll():
                result.add(chunk)
            if call.done:
                break
            call.sleep()
        call.show(end=True)
    except BaseException as exc:
        result.fail(exc)
        if not isinstance(exc, Exception):
            raise
    finally:
        call.abandon()
        result.finish()


class IMapIterator(Iterator[Any]):
    """``imap`` and ``imap_unordered``'s iterator: driven by ``next()`` itself (the
    items are read and sent as the results come back)."""

    def __init__(self, call: Optional[Call], on_error: Callable[[BaseException], None]) -> None:
        self._call = call
        self._ready: collections.deque[tuple[bool, Any]] = collections.deque()
        self._on_error = on_error
        self._lock = threading.Lock()

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: Optional[float] = None) -> Any:
        with self._lock:
            try:
                return self._next(timeout)
            except BaseException as exc:
                self._on_error(exc)
                raise

    def _next(self, timeout: Optional[float]) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            call = self._call
            if call is None:
                raise StopIteration
            if call.done:
                self._end(call)
                continue
            try:
                chunks = call.poll()
            except BaseException:
                self._close()
                raise
            for start, outcomes in chunks:
                self._ready.extend(outcome_values(start, outcomes))
            if self._ready:
                break
            if deadline is None:
                call.sleep()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            call.sleep(left)
        ok, value = self._ready.popleft()
        if not ok:
            raise value
        return value

    def _end(self, call: Call) -> None:
        call.show(end=True)
        self._close()
        if call.feeder.error is not None:
            self._ready.append((False, call.feeder.error))

    def close(self) -> None:
        """Stop reading the items (as a generator's ``close()``): the call is over."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._call is not None:
            self._call.abandon()
            self._call = None

    def __del__(self) -> None:
        call = self._call
        if call is not None:
            call.abandon()


IMapUnorderedIterator = IMapIterator
