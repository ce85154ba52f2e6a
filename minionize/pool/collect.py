"""One call of a pool, from its first chunk written to its last result handed on.

The call's items are read as its results come back: at most ``ahead`` chunks are out
(written and not handed on yet), so ``imap`` on an endless iterable yields results, and
an exception of the iterable comes out after the results of the items before it.
A call is driven by looking at it (:meth:`Call.poll`) until it is :attr:`Call.done`:
by the caller (``map``, ``imap``'s ``next()``) or by the pool's result thread (the
``*_async`` methods).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any, Optional

from .calls import ChunkQueue, Feeder
from .errors import RemoteTraceback
from .inbox import Arrivals, Chunk, Inbox
from .pickling import Outcomes, Values, decode_chunk
from .progress import ProgressLine
from .supervisor import Supervisor

#: How often the caller looks at the queue and the workers (results are read more often).
CHECK_SECONDS = 0.2
#: Shortest and longest sleep between two reads of the results files (a wait that
#: arriving results end at once, for local workers: see ``Inbox.max_tick``).
MIN_TICK = 0.0005
MAX_TICK = 0.005


class Call:
    """A call's feed (:class:`Feeder`), its arrivals, and its chunks as their turn comes.

    ``ahead``: the chunks out at most (None: every chunk at once, as ``map`` does);
    ``total``: the number of items, when known (for the progress line)."""

    def __init__(self, *, feeder: Feeder, inbox: Inbox, queue: ChunkQueue,
                 supervisor: Supervisor, ordered: bool, ahead: Optional[int],
                 progress: bool, total: Optional[int]) -> None:
        self.feeder = feeder
        self.inbox = inbox
        self.queue = queue
        self.supervisor = supervisor
        self.arrivals = Arrivals(ordered)
        self.ahead = ahead
        self.total = total
        self.display = ProgressLine(total) if progress else None
        #: The next sleep between two looks (short while chunks arrive).
        self.tick = MIN_TICK
        #: The inbox's count of arrivals at the last look.
        self._seen = 0
        self._next_check = time.monotonic() + CHECK_SECONDS

    def feed(self) -> None:
        """Write more chunks while fewer than half of ``ahead`` are out."""
        feeder = self.feeder
        if feeder.exhausted:
            return
        out = len(feeder.starts) - self.arrivals.handed
        if self.ahead is not None and out > self.ahead // 2:
            return
        params = feeder.feed(None if self.ahead is None else self.ahead - out)
        if params:
            self.queue.fill(params)

    @property
    def done(self) -> bool:
        """Every chunk written and handed on (then ``feeder.error``, if any, is next)."""
        return self.feeder.exhausted and self.arrivals.handed >= len(self.feeder.starts)

    def poll(self) -> list[Chunk]:
        """One look: more chunks written, the chunks whose turn came (raises the pool's
        errors: a chunk lost for good, workers that cannot start)."""
        feeder, arrivals = self.feeder, self.arrivals
        self.feed()
        self._seen = self.inbox.arrivals
        arrived = arrivals.add(self.inbox.read(feeder.call))
        for number in arrived:
            feeder.arrived(number)
        ready = list(arrivals.ready())
        now = time.monotonic()
        if now >= self._next_check and not self.done:
            self._next_check = now + CHECK_SECONDS
            self.supervisor.check(feeder.call, feeder.starts, arrivals.seen)
            self.show(end=False)
        self.tick = MIN_TICK if arrived else min(self.inbox.max_tick, self.tick * 2)
        return ready

    def sleep(self, limit: Optional[float] = None) -> None:
        """Wait for the next look: until a chunk arrives on the socket (or ``max_tick``,
        for the supervisor's checks), or ``tick`` seconds for results files; ``limit``:
        at most that long."""
        timeout = self.tick if self.inbox.files else self.inbox.max_tick
        self.inbox.wait(self._seen, timeout if limit is None else min(timeout, limit))

    def abandon(self) -> None:
        """The call is over: its late chunks are dropped, its pickles removed (workers
        skip its leftover chunks)."""
        self.inbox.forget(self.feeder.call)
        self.queue.remove_call(self.feeder.call)

    def show(self, end: bool) -> None:
        if self.display is not None:
            counts = (self.arrivals.done, *self.supervisor.worker_counts(), self.arrivals.failed)
            if end:
                self.display.end(*counts)
            else:
                self.display.update(*counts)


def outcome_values(start: int, outcomes: Outcomes) -> Iterator[tuple[bool, Any]]:
    """``(ok, value)`` of each item of a chunk; an exception carries the worker's
    traceback in its ``__cause__`` (a ``multiprocessing.pool.RemoteTraceback``, as
    multiprocessing does)."""
    if isinstance(outcomes, Values):
        return zip(itertools.repeat(True), outcomes)
    return _decoded(start, outcomes)


def _decoded(start: int, outcomes: Outcomes) -> Iterator[tuple[bool, Any]]:
    for ok, value, text in decode_chunk(start, outcomes):
        if not ok and text:
            value.__cause__ = RemoteTraceback(text)
        yield ok, value
