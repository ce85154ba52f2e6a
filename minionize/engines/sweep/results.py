"""A sweep queue's results: which done params have one, and ``results.jsonl`` that holds them.

A Python function's return value travels with its ack, as JSON
(:mod:`minionize.task_result`). Results can be large, and every minion reads the journal
and the snapshot when it opens the queue: so the values go to one append-only file of
their own, one line per result::

    {"i":<the param's index>,"r":<the result's JSON>}

while the ack record only says that its result was stored (``"r": 1``), and the state
keeps which done params have one (:class:`ResultBits`, in the snapshot too). So a lost
or cut results file is an error naming it (:class:`LostResults`), never "no results".

Which line counts: a line is written only by the ack that makes its param done (the
lock holder knows: it has just read the journal), before that ack's record. Once done,
a param gets no more lines; so the last line of an index is its result. A line whose ack
was never recorded (its writer died between the two, or met a full disk) is ignored,
unless the state says that param's result is stored: then a later line of the same
index, written by the ack that counted, follows it.

A damaged line (bytes that are not UTF-8, text that is not JSON, a line not ended by
``}``) is an error naming the file and the line when its result is read
(:class:`DamagedResult`), never a traceback nor a value cut short; ``minion-queue
repair`` drops it and makes its param todo again (:func:`drop_lines`).

The file follows the journal's rules on NFS (see :mod:`minionize.engines.sweep.engine`): opened
after the lock is taken and checked against the fence, written at its end with
``pwrite`` in one write per lock session, closed before the lock is released, fsync-ed
only for durable settles. A torn last line (a writer died mid-write) is cut by the next
writer and skipped by readers. A process whose lock was broken writes to a copy nobody
reads (:meth:`ResultsFile.copy_over`, at the break).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
from array import array
from collections.abc import Iterator
from typing import Any, Callable, Optional

from ...errors import EngineError
from ...task_result import decode_result
from .files import Damaged, fsync_directory, pread_all, temporary_path, write_all

log = logging.getLogger("minionize.sweep")

RESULTS_NAME = "results.jsonl"
#: How each line starts, up to the param's index.
LINE_START = b'{"i":'
#: Between the index and the result.
LINE_MIDDLE = b',"r":'


def result_line(index: int, text: str) -> bytes:
    """The line that stores result ``text`` (JSON) of param ``index``. A newline in JSON
    text can only be whitespace between tokens, and a lone surrogate only a character
    of a string: both are written so that the value read back is the same."""
    data = text.encode("utf-8", "backslashreplace")  # a lone surrogate: its \\u escape
    if b"\n" in data:
        data = data.replace(b"\n", b" ")
    return b"%s%d%s%s}\n" % (LINE_START, index, LINE_MIDDLE, data)


class ResultBits:
    """Which params have a stored result: one bit per param (125 kB for a million)."""

    __slots__ = ("bits",)

    def __init__(self, bits: bytes | bytearray = b"") -> None:
        self.bits = bytearray(bits)

    def add(self, index: int) -> None:
        byte = index >> 3
        if byte >= len(self.bits):
            self.bits.extend(bytes(byte + 1 - len(self.bits)))
        self.bits[byte] |= 1 << (index & 7)

    def discard(self, index: int) -> None:
        byte = index >> 3
        if byte < len(self.bits):
            self.bits[byte] &= ~(1 << (index & 7)) & 0xFF

    def __contains__(self, index: int) -> bool:
        byte = index >> 3
        return byte < len(self.bits) and bool(self.bits[byte] >> (index & 7) & 1)

    def __iter__(self) -> Iterator[int]:
        """The indices, in order."""
        for byte, value in enumerate(self.bits):
            if value:
                base = byte << 3
                yield from (base + bit for bit in range(8) if value >> bit & 1)

    def __len__(self) -> int:
        return bin(int.from_bytes(self.bits, "little")).count("1")

    def copy(self) -> ResultBits:
        return ResultBits(self.bits)

    def to_text(self) -> str:
        """For the snapshot: the bitmap in base64 (a sixth of a byte per param at most)."""
        return base64.b64encode(bytes(self.bits.rstrip(b"\0"))).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> ResultBits:
        """Read :meth:`to_text`; a ValueError if it is not base64."""
        return cls(base64.b64decode(text, validate=True))


class LostResults(Damaged):
    """``results.jsonl`` lacks results that the journal says were stored."""

    def __init__(self, path: str, lost: int, stored: int, missing: bool) -> None:
        what = f"{path} is missing" if missing else (
            f"{path} lacks {lost} of the {stored} results stored (it was cut or replaced)"
        )
        EngineError.__init__(
            self,
            f"{what}: the results of {lost} done params are lost; restore the file from a "
            "backup, or run `minion-queue repair`, which keeps the results that are there "
            "and makes those params todo again (their tasks run again to compute them)",
        )


class DamagedResult(EngineError):
    """A line of ``results.jsonl`` that does not read as the result it stores."""

    def __init__(self, path: str, number: int, index: int, why: str) -> None:
        super().__init__(
            f"{path} line {number} (the result of param {index}) is damaged ({why}): run "
            "`minion-queue repair`, which drops it and makes its param todo again (its "
            "task runs again)"
        )


class ResultsFile:
    """``results.jsonl``: appended under the lock, read through a descriptor opened
    under it (lines never change once complete, so reading can go on after)."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, RESULTS_NAME)

    def append(self, data: bytes, fence: Callable[[], None], durable: bool) -> None:
        """Write ``data`` (whole lines) at the end (lock held), a torn last line cut
        first. ``fence`` raises if this process's lock was broken. On an error (a full
        disk), what this call wrote is cut: no record points at it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            # Opened, then checked, then written: if the lock is broken after the check,
            # this descriptor's file is replaced by a copy.
            fence()
            size = os.fstat(fd).st_size
            end = _end_of_lines(fd, size)
            if end < size:
                log.warning("%s: cutting a torn last line (%d bytes) left by a crash",
                            self.path, size - end)
                os.ftruncate(fd, end)
            try:
                write_all(fd, data, end)
                if durable:
                    os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, end)
                except OSError:
                    pass  # a torn or unrecorded line: skipped by readers, cut by writers
                raise
        finally:
            os.close(fd)

    def open(self) -> Lines:
        """The lines there now (lock held; none if the file is missing)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return Lines(self.path, None, 0)
        return Lines(self.path, fd, os.fstat(fd).st_size)

    def copy_over(self, directory: str) -> None:
        """Replace the file by a copy of itself (fencing out descriptors open on it), in
        pieces: it may be larger than memory."""
        tmp = temporary_path(directory)
        try:
            with open(self.path, "rb") as source, open(tmp, "wb") as copy:
                shutil.copyfileobj(source, copy, 1 << 20)
                copy.flush()
                os.fsync(copy.fileno())
        except FileNotFoundError:
            return  # no results yet (the copy is not made: open(self.path) comes first)
        os.replace(tmp, self.path)
        fsync_directory(directory)


class Lines:
    """The complete lines of ``results.jsonl`` in its first ``size`` bytes, through a
    descriptor opened under the lock (None: the file is missing): where each param's last
    line is, and its text."""

    def __init__(self, path: str, fd: Optional[int], size: int) -> None:
        self.path, self.fd, self.size = path, fd, size
        self.missing = fd is None
        #: After :meth:`index`: the number and the offset of each param's last line.
        self.numbers: array[int] = array("q")
        self.line_starts: array[int] = array("q")

    def index(self, n: int) -> tuple[array[int], array[int]]:
        """(start, length) of the last line of each of ``n`` params (-1: none; length
        -1: a line not ended by ``}``, damaged). A torn last line and lines without an
        index are skipped."""
        starts = array("q", [-1]) * n
        lengths = array("q", [0]) * n
        self.numbers = array("q", [0]) * n
        self.line_starts = array("q", [-1]) * n
        if self.fd is None:
            return starts, lengths
        position = number = 0
        with os.fdopen(os.dup(self.fd), "rb") as f:
            for line in iter(f.readline, b""):
                end = position + len(line)
                number += 1
                if end > self.size or not line.endswith(b"\n"):
                    break  # torn, or written after the lock was let go
                if line.startswith(LINE_START):
                    first = len(LINE_START)
                    middle = line.find(LINE_MIDDLE, first, first + 25)
                    try:
                        index = int(line[first:middle]) if middle > 0 else -1
                    except ValueError:
                        index = -1
                    if 0 <= index < n:
                        starts[index] = position + middle + len(LINE_MIDDLE)
                        lengths[index] = end - 2 - starts[index]  # without "}\n"
                        if not line.endswith(b"}\n") or lengths[index] < 0:
                            lengths[index] = -1
                        self.numbers[index], self.line_starts[index] = number, position
                position = end
        return starts, lengths

    def text(self, start: int, length: int) -> str:
        """A result's JSON text (a UnicodeDecodeError if it is not UTF-8)."""
        assert self.fd is not None
        return pread_all(self.fd, length, start).decode("utf-8")

    def result(self, index: int, start: int, length: int) -> Any:
        """The result of param ``index`` (its last line found by :meth:`index`), or
        :class:`DamagedResult` naming the line."""
        why = "not ended by }"
        if length >= 0:
            try:
                return decode_result(self.text(start, length))
            except UnicodeDecodeError:
                why = "bytes that are not UTF-8"
            except RecursionError:
                why = "nested too deep to read"
            except ValueError as exc:
                why = f"not JSON: {exc}"
        raise DamagedResult(self.path, self.numbers[index], index, why)

    def damaged(self, indices: Iterator[int], starts: array[int],
                lengths: array[int]) -> list[int]:
        """Which of ``indices`` (with a line) have a last line that does not read."""
        out = []
        for index in indices:
            if starts[index] >= 0:
                try:
                    self.result(index, starts[index], lengths[index])
                except DamagedResult:
                    out.append(index)
        return out

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def _end_of_lines(fd: int, size: int) -> int:
    """Where the last complete line of the file ends (its size, unless a line is torn)."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - (1 << 16))
        newline = pread_all(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def lost(bits: ResultBits, status: bytes, done: int, starts: array[int]) -> list[int]:
    """The done params (status ``done``) whose stored result has no line."""
    return [i for i in bits if i < len(status) and status[i] == done and starts[i] < 0]


def drop_lines(path: str, directory: str, offsets: set[int]) -> None:
    """Rewrite ``results.jsonl`` without the lines starting at ``offsets`` (lock held):
    a copy, then a rename (readers keep the file they opened)."""
    tmp = temporary_path(directory)
    with open(path, "rb") as source, open(tmp, "wb") as copy:
        position = 0
        for line in iter(source.readline, b""):
            if position not in offsets:
                copy.write(line)
            position += len(line)
        copy.flush()
        os.fsync(copy.fileno())
    os.replace(tmp, path)
    fsync_directory(directory)
