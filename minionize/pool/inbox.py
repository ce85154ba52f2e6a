"""The results of a pool's calls, as the workers append them to their results files
(or send them over the run directory's socket: :meth:`Inbox.deliver`).

Calls may be collected by several threads at once, or by ``imap`` generators side by
side: whichever reads the files keeps the chunks of the other calls for them. One call's
chunks, once read, wait in its :class:`Arrivals` for their turn.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections.abc import Iterator

from .pickling import Outcomes, Values, failures
from .rundir import RecordReader, check_private

#: A chunk as it came back: the index of its first item, and per item its outcome,
#: still pickled (unpickled by the call that owns it: see ``pickling.decode_chunk``),
#: or its plain values.
Chunk = tuple[int, Outcomes]

#: The longest sleep between two reads of the results files.
MAX_FILE_TICK = 0.005


#: The longest wait for results that arrive on the socket (each one ends it).
RUNG_TICK = 0.05


class Inbox:
    """The chunks read from ``rundir/results`` (``files``), or delivered, by call, until
    each call takes them."""

    def __init__(self, rundir: str, files: bool = True) -> None:
        self.rundir = rundir
        self.files = files
        #: The longest sleep between two looks of a call (delivered chunks end it).
        self.max_tick = MAX_FILE_TICK if files else RUNG_TICK
        self._readers: dict[str, RecordReader] = {}
        #: Chunks read for the calls being collected, by call.
        self._chunks: dict[int, dict[int, Chunk]] = {}
        self._calls = 0
        #: The calls whose first look checked the run directory (socket results).
        self._checked: set[int] = set()
        self._lock = threading.Lock()
        self._rung = threading.Condition(self._lock)
        #: Chunks delivered (and dead letters rung) so far.
        self.arrivals = 0

    def open_call(self) -> int:
        """The number of a new call, whose chunks are kept from now on."""
        with self._lock:
            call = self._calls
            self._calls += 1
            self._chunks[call] = {}
            return call

    def read(self, call: int) -> list[tuple[int, Chunk]]:
        """The chunks of ``call`` read since the last time: ``(chunk, outcomes)``."""
        with self._lock:
            if self.files:
                check_private(self.rundir)  # results come through it: its files
                self._read_files()
            mine = self._chunks.get(call)
            if not self.files and (mine or call not in self._checked):
                # Or its socket: at the call's first look, and whenever chunks came.
                self._checked.add(call)
                check_private(self.rundir)
            if not mine:
                return []
            self._chunks[call] = {}
            return list(mine.items())

    def _read_files(self) -> None:
        results = os.path.join(self.rundir, "results")
        check_private(results)
        for name in os.listdir(results):
            reader = self._readers.get(name)
            if reader is None:
                reader = self._readers[name] = RecordReader(os.path.join(results, name))
            for data in reader.read():
                self._keep(data)

    def _keep(self, data: bytes) -> None:
        k, chunk, start, outcomes = pickle.loads(data)  # bytes and numbers
        if isinstance(outcomes, bytes):
            outcomes = Values(pickle.loads(outcomes))  # plain values: no code runs
        if k in self._chunks:  # else: a call over, a late duplicate
            self._chunks[k].setdefault(chunk, (start, outcomes))

    def deliver(self, data: bytes) -> None:
        """A chunk's record, sent by a worker: kept, and the callers waiting woken."""
        with self._lock:
            self._keep(data)
            self.arrivals += 1
            self._rung.notify_all()

    def ring(self) -> None:
        """Wake the callers waiting (a dead letter to see)."""
        with self._lock:
            self.arrivals += 1
            self._rung.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Sleep ``timeout`` seconds, or less if a chunk is delivered after ``seen``."""
        if self.files:
            time.sleep(timeout)
            return
        with self._lock:
            if self.arrivals == seen:
                self._rung.wait(timeout)

    def forget(self, call: int) -> None:
        """The call is over: its late chunks are dropped."""
        with self._lock:
            self._chunks.pop(call, None)
            self._checked.discard(call)


class Arrivals:
    """One call's chunks as they arrive, each counted once (a chunk run twice counts
    once), handed on in chunk order (``ordered``, for ``map`` and ``imap``) or as they
    come (``imap_unordered``)."""

    def __init__(self, ordered: bool) -> None:
        self.ordered = ordered
        #: Chunks arrived and not handed on yet.
        self._got: dict[int, Chunk] = {}
        #: Every chunk arrived; items done and failed; chunks handed on.
        self.seen: set[int] = set()
        self.done = self.failed = 0
        self.handed = 0

    def add(self, chunks: list[tuple[int, Chunk]]) -> list[int]:
        """Keep the chunks not seen yet; return their numbers."""
        arrived = []
        for chunk, (start, outcomes) in chunks:
            if chunk not in self.seen:
                self.seen.add(chunk)
                self._got[chunk] = (start, outcomes)
                arrived.append(chunk)
                self.done += len(outcomes)
                self.failed += failures(outcomes)
        return arrived

    def ready(self) -> Iterator[Chunk]:
        """The outcomes of the chunks whose turn came."""
        if self.ordered:
            while self.handed in self._got:
                outcomes = self._got.pop(self.handed)
                self.handed += 1
                yield outcomes
        else:
            for chunk in sorted(self._got):
                self.handed += 1
                yield self._got.pop(chunk)
