"""A call of the pool on disk: its function and items pickled into ``calls/`` of the run
directory, and the queue's params that point at them, one per chunk (JSON: never a
pickle).

The items are read from the call's iterable as its results come back (a few chunks per
worker ahead, as ``imap`` on ``itertools.count()`` needs), a batch of chunks at a time:
a batch (``calls/<k>.items.<batch>``, or the caller's memory for local workers) holds
one pickle per chunk, side by side, and is removed once every chunk of it came back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, Optional, Protocol

from .pickling import dump_items


class CallStore(Protocol):
    """Where a call's pickles wait for the workers (:class:`~.sweepqueue.SweepQueue`'s
    files, or the :class:`~.broker.Broker`'s memory)."""

    def put_batch(self, call: int, batch: int, data: bytes) -> None: ...

    def remove_batch(self, call: int, batch: int) -> None: ...


class ChunkQueue(CallStore, Protocol):
    """The queue of a run's chunks, as its caller sees it: a call's function and chunks
    put in, its dead letters read, a lost worker's chunks taken back."""

    def put_function(self, call: int, data: bytes) -> None: ...

    def remove_call(self, call: int) -> None: ...

    def fill(self, params: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...

    def dead_count(self) -> int: ...

    def dead_letters(self) -> list[dict[str, Any]]: ...

    def expire(self) -> None: ...

    def reclaim(self, minion: str, reason: str) -> None: ...


def chunk_size(count: int, processes: int, chunksize: Optional[int]) -> int:
    """``chunksize``, or by default about four chunks per worker, as multiprocessing does."""
    if chunksize is None:
        chunksize, extra = divmod(count, processes * 4)
        chunksize += 1 if extra else 0
    return max(1, chunksize)


class Feeder:
    """One call's items, read from its iterable and written a batch of chunks at a time.

    An exception of the iterable, or an item that cannot be pickled, ends the feed: it is
    kept in ``error``, to be raised after the results of the chunks before it (the items
    of the chunk it cut are dropped, as multiprocessing drops them).
    """

    def __init__(self, store: CallStore, call: int, iterable: Iterable[Any], chunksize: int,
                 star: bool, apply: bool = False) -> None:
        self.store = store
        self.call = call
        self._items = iter(iterable)
        #: The items themselves when they are a list (``map``'s): read by slices.
        self._list = iterable if type(iterable) is list else None
        self.chunksize = chunksize
        self.star = star
        #: Each item is ``(args, kwargs)`` (``apply``).
        self.apply = apply
        #: The first item of each chunk written so far.
        self.starts: list[int] = []
        self.exhausted = False
        self.error: Optional[BaseException] = None
        self._batches = 0
        #: The index of the next item to read.
        self._next = 0
        #: Per batch not removed yet, its chunks that did not come back.
        self._pending: dict[int, set[int]] = {}
        self._batch_of: dict[int, int] = {}

    def feed(self, chunks: Optional[int]) -> list[dict[str, Any]]:
        """Read and write up to ``chunks`` more chunks (None: all); their params."""
        blobs: list[bytes] = []
        params: list[dict[str, Any]] = []
        offset = 0
        batch = self._batches
        counter = itertools.count() if chunks is None else range(chunks)
        for _ in counter:
            if self.exhausted:
                break
            start = self._next
            items = self._read()
            if not items:
                break
            try:
                blob = dump_items(items, f"item(s) {start}..{start + len(items) - 1}")
            except Exception as exc:
                self.exhausted, self.error = True, exc
                break
            chunk = len(self.starts)
            self.starts.append(start)
            self._next += len(items)
            params.append({"call": self.call, "chunk": chunk, "start": start, "batch": batch,
                           "offset": offset, "size": len(blob), "star": self.star})
            if self.apply:
                params[-1]["apply"] = True
            self._batch_of[chunk] = batch
            blobs.append(blob)
            offset += len(blob)
        if params:
            self._batches += 1
            self._pending[batch] = {p["chunk"] for p in params}
            self.store.put_batch(self.call, batch, b"".join(blobs))
        return params

    def _read(self) -> list[Any]:
        if self._list is not None:
            items = self._list[self._next:self._next + self.chunksize]
            if len(items) < self.chunksize:
                self.exhausted = True
            return items
        try:
            items = list(itertools.islice(self._items, self.chunksize))
        except Exception as exc:  # the chunk it cut is dropped, as multiprocessing does
            self.exhausted, self.error = True, exc
            return []
        if len(items) < self.chunksize:
            self.exhausted = True
        return items

    def arrived(self, chunk: int) -> None:
        """A chunk came back: remove its batch's file once the whole batch did."""
        batch = self._batch_of.pop(chunk, None)
        if batch is None:
            return
        pending = self._pending[batch]
        pending.discard(chunk)
        if not pending:
            del self._pending[batch]
            self.store.remove_batch(self.call, batch)

