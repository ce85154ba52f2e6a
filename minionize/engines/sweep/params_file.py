"""``params.jsonl``: every param ever added, one canonical JSON text per line.

Line k is param k; the file is append-only and never cut. :class:`ParamsFile` knows where
each line starts and, once a fill needs it, which texts it holds; it reads params one at
a time or lazily in runs, appends a fill's params durably, and reads the lines an
interrupted fill left beyond what the journal records. Everything here runs with the
queue lock held, except reading params the journal records (they never change).
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Iterator
from io import FileIO
from itertools import accumulate, islice
from typing import Callable, Optional

from .files import PARAMS_NAME, Damaged, pread_all, replace, write_all


class ParamsFile:
    """``params.jsonl`` (line k is param k): where each line starts, and which texts it
    holds (``dedupe``, built when a fill needs it)."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, PARAMS_NAME)
        self._fd: Optional[int] = None
        self._fd_size = -1
        self.reset()

    def reset(self, keep_dedupe: bool = False) -> None:
        """Forget every param (an empty dedupe is kept if ``keep_dedupe``)."""
        self.size = 0
        self.offsets = array("q", [0])
        self.dedupe: Optional[dict[bytes, int]] = {} if keep_dedupe else None

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    def file_size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def read_lines(self, start: int, end: int, expected: int) -> list[bytes]:
        """The ``expected`` lines in bytes ``start..end``; Damaged if they are not there."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise Damaged(f"{self.path} is missing although the journal records params") from None
        try:
            data = pread_all(fd, end - start, start)
        finally:
            os.close(fd)
        lines = data.split(b"\n")
        tail = lines.pop()
        if len(data) != end - start or tail or len(lines) != expected:
            raise Damaged(
                f"{self.path} holds fewer params than the journal records "
                f"({len(lines)} of {expected} in bytes {start}..{end}): the file was cut"
            )
        return lines

    def load(self, n: int, size: int) -> None:
        """Index the ``n`` params in the first ``size`` bytes (a snapshot's)."""
        lines = self.read_lines(0, size, n)
        self.grow(n, size, lines)

    def grow(self, n: int, size: int, lines: Optional[list[bytes]] = None) -> None:
        """Index params up to ``n`` in ``size`` bytes (an ``add`` record); ``lines``: the
        new lines, if the caller has them already."""
        old = self.count
        if n <= old:
            return
        if lines is None:
            lines = self.read_lines(self.size, size, n - old)
        # C-level loop: offsets of the next lines, each line plus its newline.
        ends = accumulate(map((1).__add__, map(len, lines)), initial=self.size)
        next(ends)
        self.offsets.extend(ends)
        if self.dedupe is not None:
            self.dedupe.update(zip(lines, range(old, n)))
        self.size = size

    def drop_index(self) -> None:
        """Forget which texts the file holds (rebuilt when next needed)."""
        self.dedupe = None

    def index(self) -> dict[bytes, int]:
        """Every param's text and its index (read once, then kept up to date)."""
        if self.dedupe is None:
            lines = self.read_lines(0, self.size, self.count) if self.count else []
            self.dedupe = dict(zip(lines, range(self.count)))
        return self.dedupe

    def text(self, index: int) -> bytes:
        """The canonical JSON text of param ``index``."""
        if self._fd is None or self._fd_size < self.size:
            # Reopen after params were added: close-to-open makes them visible on NFS.
            self.close()
            self._fd = os.open(self.path, os.O_RDONLY)
            self._fd_size = self.size
        start, end = self.offsets[index], self.offsets[index + 1] - 1
        return pread_all(self._fd, end - start, start)

    def texts(self, indices: Iterable[int]) -> Iterator[bytes]:
        """The texts of params ``indices``, read lazily, a run of consecutive params per
        read. The file is opened and the offsets copied now (lock held); the lines are
        read as they are asked for, after the lock is let go if need be: a line the
        journal records never changes (the file is append-only, never cut)."""
        if not self.count:
            return iter(())
        try:
            file = open(self.path, "rb", buffering=0)  # noqa: SIM115 (closed by the reader)
        except FileNotFoundError:
            raise Damaged(f"{self.path} is missing although the journal records params") from None
        return _read_texts(file, self.path, array("q", self.offsets), iter(indices))

    def append(self, lines: list[bytes], fence: Callable[[], None]) -> int:
        """Write ``lines`` after the params indexed, durably; the new size. ``fence``
        raises if this process's lock was broken."""
        data = b"\n".join(lines) + b"\n"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            # Opened, then checked, then written: if the lock is broken after the
            # check, this descriptor's file is replaced by a copy (never cut here).
            fence()
            if os.fstat(fd).st_size != self.size:
                raise Damaged(
                    f"{self.path} holds {os.fstat(fd).st_size} bytes, the journal records "
                    f"{self.size}"
                )
            try:
                write_all(fd, data, self.size)
                os.fsync(fd)  # params must be durable before the journal points at them
            except OSError:
                # A full disk: no record points at these lines, so they are no params
                # yet; take them back rather than leave them for a later session to
                # adopt. Only what this call wrote is cut, through the fenced descriptor.
                self._cut(fd)
                raise
        finally:
            os.close(fd)
        return self.size + len(data)

    def _cut(self, fd: int) -> None:
        try:
            os.ftruncate(fd, self.size)
        except OSError:
            pass  # left for the next session to recover as an interrupted fill

    def read_tail(self, fence: Optional[Callable[[], None]]) -> Optional[tuple[list[bytes], int]]:
        """The lines beyond the params indexed, and the file's size; a torn last line is
        ended (never cut). None if there is none. ``fence`` is called before writing."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            if size <= self.size:
                return None
            if fence is not None:
                fence()
            tail = pread_all(fd, size - self.size, self.size)
            if not tail.endswith(b"\n"):
                write_all(fd, b"\n", size)  # end the torn line: it becomes a dead letter
                tail += b"\n"
                size += 1
            os.fsync(fd)
        finally:
            os.close(fd)
        return tail.split(b"\n")[:-1], size

    def copy_over(self, directory: str) -> None:
        """Replace the file by a copy of itself (fencing out descriptors open on it)."""
        try:
            with open(self.path, "rb") as f:
                replace(directory, self.path, f.read())
        except FileNotFoundError:
            pass
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


#: Params asked for at once by :meth:`ParamsFile.texts`, and the most bytes one read
#: takes (a longer param is read alone).
READ_CHUNK = 1024
READ_BYTES = 1 << 20


def _read_texts(file: FileIO, path: str, offsets: array[int], indices: Iterator[int]
                ) -> Iterator[bytes]:
    fd = file.fileno()
    try:
        while True:
            chunk = list(islice(indices, READ_CHUNK))
            if not chunk:
                return
            first = 0
            while first < len(chunk):
                # A run: consecutive params, at most READ_BYTES (one param at least).
                last = first + 1
                start = offsets[chunk[first]]
                while (last < len(chunk) and chunk[last] == chunk[last - 1] + 1
                       and offsets[chunk[last] + 1] - start <= READ_BYTES):
                    last += 1
                end = offsets[chunk[last - 1] + 1]
                data = pread_all(fd, end - start, start)
                lines = data.split(b"\n")
                tail = lines.pop()
                if len(data) != end - start or tail or len(lines) != last - first:
                    raise Damaged(
                        f"{path} does not hold params {chunk[first]}..{chunk[last - 1]} "
                        f"where the journal records them (bytes {start}..{end})"
                    )
                yield from lines
                first = last
    finally:
        file.close()
