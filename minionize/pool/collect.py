"""One call of a pool, from its first chunk written to its last result handed on.

The call's items are read as its results come back: at most ``ahead`` chunks are out
(written and not handed on yet), so ``imap`` on an endless iterable yields results, and
an exception of the iterable comes out after the results of the items before it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

from .calls import Feeder, remove_call
from .errors import RemoteTraceback
from .inbox import Arrivals, Chunk, Inbox
from .pickling import decode_outcome
from .progress import Progress
from .rundir import write_private
from .supervisor import Supervisor

if TYPE_CHECKING:
    from ..engines.sweep.engine import SweepEngine

#: How often the caller looks at the queue and the workers (results are read more often).
CHECK_SECONDS = 0.2
#: Longest sleep between two reads of the results files.
MAX_TICK = 0.005


class Call:
    """A call's feed (:class:`Feeder`), its arrivals, and the generator of its results.

    ``ahead``: the chunks out at most (None: every chunk at once, as ``map`` does);
    ``total``: the number of items, when known (for the progress line)."""

    def __init__(self, *, rundir: str, feeder: Feeder, inbox: Inbox, queue: SweepEngine,
                 supervisor: Supervisor, ordered: bool, ahead: Optional[int],
                 progress: bool, total: Optional[int]) -> None:
        self.rundir = rundir
        self.feeder = feeder
        self.inbox = inbox
        self.queue = queue
        self.supervisor = supervisor
        self.arrivals = Arrivals(ordered)
        self.ahead = ahead
        self.display = Progress(total) if progress else None

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
            write_private(os.path.join(self.rundir, "bell"), str(feeder.call).encode())

    def results(self) -> Iterator[Any]:
        """The call's results (``map``'s order, or as they come), then its input's error."""
        arrivals, feeder = self.arrivals, self.feeder
        tick = 0.0005
        next_check = time.monotonic() + CHECK_SECONDS
        try:
            while True:
                self.feed()
                arrived = arrivals.add(self.inbox.read(feeder.call))
                for number in arrived:
                    feeder.arrived(number)
                for chunk in arrivals.ready():
                    yield from _values(chunk)
                if feeder.exhausted and arrivals.handed >= len(feeder.starts):
                    break
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + CHECK_SECONDS
                    self.supervisor.check(feeder.call, feeder.starts, arrivals.seen)
                    self._show(end=False)
                tick = 0.0005 if arrived else min(MAX_TICK, tick * 2)
                time.sleep(tick)
            self._show(end=True)
            if feeder.error is not None:
                raise feeder.error
        finally:
            self.abandon()

    def abandon(self) -> None:
        """The call is over: its late chunks are dropped, its pickles removed (workers
        skip its leftover chunks)."""
        self.inbox.forget(self.feeder.call)
        remove_call(self.rundir, self.feeder.call)

    def _show(self, end: bool) -> None:
        if self.display is not None:
            counts = (self.arrivals.done, *self.supervisor.worker_counts(), self.arrivals.failed)
            if end:
                self.display.end(*counts)
            else:
                self.display.update(*counts)


def _values(chunk: Chunk) -> Iterator[Any]:
    start, outcomes = chunk
    for j, outcome in enumerate(outcomes):
        ok, value, text = decode_outcome(start + j, outcome)
        if ok:
            yield value
        else:
            if text:
                value.__cause__ = RemoteTraceback(text)
            raise value
