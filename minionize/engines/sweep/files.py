"""The sweep queue's files: params, journal and snapshot, and the checks that they agree.

Files (a fixed handful, whatever the number of params)::

    queue.lock[.<e>]    the lock of epoch <e> (see :mod:`._sweep_lock`): who took it last
    params.jsonl        every param ever added, one canonical JSON text per line;
                        line k is param k. Append-only, never cut.
    journal.<g>.jsonl   a ``head`` record (generation, params, params size, lock epoch),
                        then one JSON record per event since snapshot <g> (add, claim,
                        ack, retry, release, dead, extend, start, expire, requeue,
                        adopt, break, void, next)
    snapshot.json       the state after journal <g-1>: one status byte per param,
                        leases, attempts, dead-letter reasons, which params have a
                        result. Replaced by rename.
    results.jsonl       what tasks returned, one line per result (see
                        :mod:`._sweep_results`). Append-only.

Files that disagree raise :class:`Damaged` (never an empty queue); only a torn last
journal record and params beyond the last ``add`` record (an interrupted fill) are
normal, and repaired on the fly. Everything here runs with the queue lock held; what the
records mean is :mod:`._sweep_state`'s business.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from array import array
from collections.abc import Iterable, Iterator
from io import FileIO
from itertools import accumulate, islice
from json.encoder import encode_basestring
from typing import Any, Callable, Optional

from ...errors import EngineError
from ...params import canonical_json

FORMAT = "minionize-sweep"
VERSION = 1

PARAMS_NAME = "params.jsonl"
SNAPSHOT_NAME = "snapshot.json"
SNAPSHOT_TMP_PREFIX = "snapshot.tmp."
#: Copies made when a lock is broken, before their rename.
TMP_PREFIX = "tmp."
#: The keys every snapshot has, and their types.
SNAPSHOT_KEYS: dict[str, type] = {
    "generation": int, "params": int, "params_size": int, "state": str,
    "attempts": list, "dead": list, "leases": list,
}
REPAIR_HINT = "`minion-queue repair` rebuilds the queue from what is left"

_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Damaged(EngineError):
    """The queue's files disagree: never read as an empty queue."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}: the sweep queue is damaged; {REPAIR_HINT}")


def record_line(record: dict[str, Any]) -> bytes:
    """One journal line: compact JSON and its newline."""
    return _ENCODE(record).encode("utf-8") + b"\n"


def canonical(param: Any) -> bytes:
    """The canonical JSON text of ``param`` (sorted keys, no spaces), as stored."""
    kind = type(param)
    try:
        if kind is int:
            return str(param).encode()
        if kind is str:
            text: str = encode_basestring(param)
            return text.encode("utf-8")
        return canonical_json(param).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise EngineError(
            f"param {param!r} cannot be stored as JSON ({exc}): use numbers, strings, "
            "lists and mappings with string keys"
        ) from None


def param_id(text: bytes) -> str:
    """A short stable id of a param: a hash of its canonical JSON (12 hex digits)."""
    return hashlib.blake2b(text, digest_size=6).hexdigest()


def pread_all(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 30), offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def write_new(path: str, data: bytes, exclusive: bool = False) -> None:
    """Write ``path`` whole (created, or truncated; ``exclusive``: FileExistsError if it
    exists) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC), 0o666)
    try:
        write_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


def temporary_path(directory: str) -> str:
    """Where this process writes a copy before its rename (removed if left behind)."""
    return os.path.join(directory, f"{TMP_PREFIX}{socket.gethostname()}.{os.getpid()}")


def replace(directory: str, path: str, data: bytes) -> None:
    """Replace ``path`` by ``data`` at once: a temporary file, fsync, rename."""
    tmp = temporary_path(directory)
    write_new(tmp, data)
    os.replace(tmp, path)
    fsync_directory(directory)


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


def snapshot_path(directory: str) -> str:
    return os.path.join(directory, SNAPSHOT_NAME)


def read_snapshot(directory: str) -> Optional[dict[str, Any]]:
    """The snapshot's document (checked: format, version, keys), None if there is none.
    ``size`` is added: the bytes it took."""
    path = snapshot_path(directory)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise Damaged(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise EngineError(f"{path} is not a minionize sweep snapshot")
    if doc.get("version") != VERSION:
        raise EngineError(
            f"{path} has format version {doc.get('version')}; this "
            f"minionize reads version {VERSION}: upgrade minionize"
        )
    for key, kind in SNAPSHOT_KEYS.items():
        if not isinstance(doc.get(key), kind) or isinstance(doc.get(key), bool):
            raise Damaged(f"{path}: key {key!r} is missing or not a {kind.__name__}")
    doc["size"] = len(data)
    return doc


def snapshot_bytes(state: dict[str, Any], generation: int, params_size: int) -> bytes:
    """A snapshot's text: ``state`` (:func:`._sweep_state.to_snapshot`) and where it is."""
    doc = {"format": FORMAT, "version": VERSION, "generation": generation,
           "params_size": params_size, "heads": True, **state}
    return _ENCODE(doc).encode("utf-8")


def snapshot_tmp_path(directory: str) -> str:
    """Where this process writes a snapshot before its rename."""
    return os.path.join(directory, f"{SNAPSHOT_TMP_PREFIX}{socket.gethostname()}.{os.getpid()}")


def check_committed(journal_path: str, directory: str, generation: int) -> None:
    """Snapshot ``generation`` counts only if the journal before it (``journal_path``,
    kept until the next compaction) ends with the ``next`` record that committed it: a
    snapshot renamed by a process whose lock was broken meanwhile does not."""
    try:
        fd = os.open(journal_path, os.O_RDONLY)
    except FileNotFoundError:
        return  # removed by a later compaction or a repair
    try:
        size = os.fstat(fd).st_size
        tail = pread_all(fd, min(size, 4096), size - min(size, 4096))
    finally:
        os.close(fd)
    try:
        last = json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    except ValueError:
        last = None
    if not (isinstance(last, dict) and last.get("o") == "next" and last.get("g") == generation):
        raise Damaged(
            f"{snapshot_path(directory)} (generation {generation}) was never committed: "
            f"{journal_path} does not end with the record that moves to it"
        )
