"""The sweep queue's files: their names and formats, safe writes, the snapshot, and the
checks that they agree (``params.jsonl`` itself is :mod:`.params_file`'s).

Files (a fixed handful, whatever the number of params)::

    queue.lock[.<e>]    the lock of epoch <e> (see :mod:`.lock`): who took it last
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
                        :mod:`.results`). Append-only.

Files that disagree raise :class:`Damaged` (never an empty queue); only a torn last
journal record and params beyond the last ``add`` record (an interrupted fill) are
normal, and repaired on the fly. Everything here runs with the queue lock held; what the
records mean is :mod:`.state`'s business.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from json.encoder import encode_basestring
from typing import Any, Optional

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
    """A snapshot's text: ``state`` (:func:`.state.to_snapshot`) and where it is."""
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
