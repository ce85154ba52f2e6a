"""A call of the pool on disk: its function and items pickled into ``calls/`` of the run
directory, and the queue's params that point at them, one per chunk (JSON: never a
pickle).

The items are read from the call's iterable as its results come back (a few chunks per
worker ahead, as ``imap`` on ``itertools.count()`` needs), a batch of chunks at a time:
``calls/<k>.items.<batch>`` holds one pickle per chunk, side by side, and is removed once
every chunk of it came back.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from typing import Any, Optional

from .pickling import dump
from .rundir import write_private


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

    def __init__(self, rundir: str, call: int, iterable: Iterable[Any], chunksize: int,
                 star: bool, apply: bool = False) -> None:
        self.rundir = rundir
        self.call = call
        self._items = iter(iterable)
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
                blob = dump(items, f"item(s) {start}..{start + len(items) - 1}")
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
            write_private(self._path(batch), b"".join(blobs))
        return params

    def _read(self) -> list[Any]:
        items: list[Any] = []
        try:
            for item in itertools.islice(self._items, self.chunksize):
                items.append(item)
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
            _unlink(self._path(batch))

    def _path(self, batch: int) -> str:
        return os.path.join(self.rundir, "calls", f"{self.call}.items.{batch}")


def write_function(rundir: str, call: int, func_data: bytes) -> None:
    write_private(os.path.join(rundir, "calls", f"{call}.func"), func_data)


def remove_call(rundir: str, call: int) -> None:
    """The call is over: remove its pickles (workers skip its leftover chunks)."""
    calls = os.path.join(rundir, "calls")
    prefix = f"{call}."
    try:
        names = os.listdir(calls)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix):
            _unlink(os.path.join(calls, name))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
