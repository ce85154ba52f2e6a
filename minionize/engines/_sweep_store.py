"""The files of a sweep queue, and the state rebuilt from them.

A :class:`SweepStore` is one process's view of a queue directory. Every public method
takes the directory's lock, reads what other processes appended since its last visit,
does its work, appends its own records, and lets the lock go. The reasons each step is
safe on a network filesystem are in the docstring of :mod:`minionize.engines.sweep`.

Files (a fixed handful, whatever the number of params)::

    queue.lock[.<e>]    the lock of epoch <e> (see :mod:`._sweep_lock`): who took it last
    params.jsonl        every param ever added, one canonical JSON text per line;
                        line k is param k. Append-only, never cut.
    journal.<g>.jsonl   a ``head`` record (generation, params, params size, lock epoch),
                        then one JSON record per event since snapshot <g> (add, claim,
                        ack, retry, release, dead, extend, expire, requeue, adopt,
                        break, void, next)
    snapshot.json       the state after journal <g-1>: one status byte per param,
                        leases, attempts, dead-letter reasons. Replaced by rename.

Files that disagree raise :class:`Damaged` (never an empty queue); only a torn last
journal record and params beyond the last ``add`` record (an interrupted fill) are
normal, and repaired on the fly.

State in memory: ``state`` is a bytearray with one status byte per param (``t`` todo,
``f`` in flight, ``d`` done, ``x`` dead), so the next todo param is found with
``bytearray.find`` from a cursor, and counts are kept as records are applied. Leases,
attempts and reasons live in dicts holding only the params that have one.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import socket
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, islice
from json.encoder import encode_basestring
from typing import Any, Callable, Optional

from ..errors import EngineError
from ._kit import canonical_json
from ._sweep_lock import LONG_SESSION, LockLost, QueueLock, describe_record, queue_lock

log = logging.getLogger("minionize.sweep")

FORMAT = "minionize-sweep"
VERSION = 1

PARAMS_NAME = "params.jsonl"
SNAPSHOT_NAME = "snapshot.json"
SNAPSHOT_TMP_PREFIX = "snapshot.tmp."
#: Copies made when a lock is broken, before their rename.
TMP_PREFIX = "tmp."

TODO = ord("t")
FLIGHT = ord("f")
DONE = ord("d")
DEAD = ord("x")
TODO_BYTE = b"t"

#: Compact when the journal outgrows this, or the last snapshot if that is larger: the
#: replay at open then stays within about twice the cost of reading a snapshot.
COMPACT_MIN_BYTES = 1 << 20
#: Params encoded and deduplicated per lock holding while filling.
FILL_CHUNK = 50_000
#: The keys every snapshot has, and their types.
SNAPSHOT_KEYS: dict[str, type] = {
    "generation": int, "params": int, "params_size": int, "state": str,
    "attempts": list, "dead": list, "leases": list,
}
#: Longest dead-letter reason kept (the rest is in the minion's logs).
MAX_REASON = 2000

_RECORD = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


REPAIR_HINT = "`minion-queue repair` rebuilds the queue from what is left"


class Damaged(EngineError):
    """The queue's files disagree: never read as an empty queue."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}: the sweep queue is damaged; {REPAIR_HINT}")


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


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: written into every claim record."""

    minion: str
    host: str
    pid: int
    job: str = ""


class Lease:
    """A claim on one param, valid until ``expiry`` (wall clock, seconds)."""

    __slots__ = ("minion", "seq", "expiry", "host", "pid", "job", "started")

    def __init__(
        self, minion: str, seq: int, expiry: float, host: str, pid: int, job: str,
        started: bool = True,
    ) -> None:
        self.minion = minion
        self.seq = seq
        self.expiry = expiry
        self.host = host
        self.pid = pid
        self.job = job
        #: False for a param claimed ahead and not handed to a task yet: its expiry
        #: puts it back without counting an attempt (it never ran).
        self.started = started

    def describe(self) -> str:
        job = f", job {self.job}" if self.job else ""
        return f"minion {self.minion} on {self.host} (pid {self.pid}{job})"


@dataclass
class Claimed:
    """A param this process just claimed."""

    index: int
    seq: int
    attempt: int
    text: bytes
    started: bool = True


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 30), offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class SweepStore:
    """One process's view of a sweep queue directory. Thread-safe: methods serialise on
    an internal lock, then on the directory's file lock."""

    def __init__(
        self,
        directory: str,
        *,
        durable_settles: bool = False,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
        lock_lease: Optional[float] = None,
        identity: Optional[dict[str, Any]] = None,
    ) -> None:
        self.directory = directory
        self.durable_settles = durable_settles
        self.lock_lease = lock_lease
        self.identity = identity or {"host": socket.gethostname(), "pid": os.getpid()}
        #: Whether this session wrote anything (a long session re-checks its fence).
        self._wrote = False
        #: Set when a torn record was dropped or the queue was loaded: params.jsonl may
        #: hold params of an interrupted fill beyond what the journal records.
        self._check_tail = False
        #: Seconds to hold the lock in every session (tests only: MINION_SWEEP_TEST_HOLD_LOCK).
        self.hold_lock = 0.0
        self.compact_min_bytes = compact_min_bytes
        self._thread_lock = threading.RLock()
        self._file_lock: Optional[QueueLock] = None
        self._depth = 0
        self._jfd: Optional[int] = None
        self._pfd: Optional[int] = None
        self._pfd_size = -1
        self._loaded = False
        self._seq = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "add": self._apply_add,
            "claim": self._apply_claim,
            "ack": self._apply_ack,
            "retry": self._apply_retry,
            "release": self._apply_release,
            "dead": self._apply_dead,
            "extend": self._apply_extend,
            "start": self._apply_start,
            "expire": self._apply_expire,
            "requeue": self._apply_requeue,
            "adopt": self._apply_adopt,
            "head": self._apply_head,
            "break": self._apply_break,
            "void": self._apply_void,
        }
        self._reset_state(generation=0)

    # -- paths -----------------------------------------------------------------------
    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def journal_path(self, generation: int) -> str:
        return self.path(f"journal.{generation}.jsonl")

    # -- state -----------------------------------------------------------------------
    def _reset_state(self, generation: int) -> None:
        self.generation = generation
        self.offset = 0
        self.n = 0
        self.params_size = 0
        self.offsets = array("q", [0])
        self.state = bytearray()
        self.count = {TODO: 0, FLIGHT: 0, DONE: 0, DEAD: 0}
        self.attempts: dict[int, int] = {}
        self.leases: dict[int, Lease] = {}
        self.heap: list[tuple[float, int, str, int]] = []
        self.reasons: dict[int, str] = {}
        self.cursor = 0
        self.returned: deque[int] = deque()
        self.dedupe: Optional[dict[bytes, int]] = None
        self.compact_at = self.compact_min_bytes
        self.imported_from: Optional[str] = None
        #: The lock epoch the queue is at (``break`` records raise it).
        self.lock_epoch = 0
        #: Whether journals start with a ``head`` record (queues made before they did
        #: not, and are read as they are).
        self.heads = False

    def _move(self, index: int, status: int) -> None:
        count = self.count
        count[self.state[index]] -= 1
        count[status] += 1
        self.state[index] = status

    def _returned(self, index: int) -> None:
        # Todo params at or after the cursor are found by the scan; those before it are
        # remembered here (lazily: an entry may be stale by the time it is popped).
        if index < self.cursor:
            self.returned.append(index)

    def _push_lease(self, index: int, lease: Lease) -> None:
        heapq.heappush(self.heap, (lease.expiry, index, lease.minion, lease.seq))
        if len(self.heap) > 2 * len(self.leases) + 1024:
            # Settled and extended leases leave stale entries: rebuild, amortised O(1).
            self.heap = [(le.expiry, i, le.minion, le.seq) for i, le in self.leases.items()]
            heapq.heapify(self.heap)

    def _take_lease(self, index: int, minion: str, seq: int) -> Optional[Lease]:
        lease = self.leases.get(index)
        if lease is None or lease.minion != minion or lease.seq != seq:
            return None
        del self.leases[index]
        return lease

    # -- applying records (identical in every process: no clock, no settings) ---------
    def _apply(self, record: dict[str, Any]) -> None:
        handler = self._handlers.get(record.get("o", ""))
        if handler is None:
            log.warning("%s: skipping an unknown journal record %.200r", self.directory, record)
            return
        try:
            handler(record)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise Damaged(
                f"{self.journal_path(self.generation)}: a malformed record {record!r:.200} "
                f"({type(exc).__name__}: {exc})"
            ) from None

    def _apply_head(self, record: dict[str, Any]) -> None:
        # Checked where it is read (it must be the first record); here only the epoch.
        self.lock_epoch = max(self.lock_epoch, int(record.get("e", 0)))

    def _apply_break(self, record: dict[str, Any]) -> None:
        self.lock_epoch = max(self.lock_epoch, int(record["e"]))

    def _apply_void(self, record: dict[str, Any]) -> None:
        # Lines of params.jsonl left by an interrupted fill that are not params.
        for index in record["l"]:
            if self.state[index] == TODO:
                self._move(index, DEAD)
                self.reasons[index] = str(record.get("why", "unreadable line in params.jsonl"))

    def _apply_add(self, record: dict[str, Any], lines: Optional[list[bytes]] = None) -> None:
        new_n, new_size = int(record["n"]), int(record["s"])
        if new_n <= self.n:
            return
        if lines is None:
            lines = self._read_param_lines(self.params_size, new_size, new_n - self.n)
        self._extend_offsets(lines)
        if self.dedupe is not None:
            self.dedupe.update(zip(lines, range(self.n, new_n)))
        self.state.extend(TODO_BYTE * (new_n - self.n))
        self.count[TODO] += new_n - self.n
        self.n, self.params_size = new_n, new_size

    def _apply_claim(self, record: dict[str, Any]) -> None:
        minion, expiry = str(record["w"]), float(record["e"])
        host, pid, job = str(record.get("h", "")), int(record.get("p", 0)), str(record.get("j", ""))
        state = self.state
        for entry in record["l"]:
            index, seq = entry[0], entry[1]
            if state[index] != TODO:
                continue
            self._move(index, FLIGHT)
            # [index, seq] is a claim for a task; [index, seq, 0] a claim ahead.
            lease = Lease(minion, seq, expiry, host, pid, job, len(entry) < 3 or bool(entry[2]))
            self.leases[index] = lease
            self._push_lease(index, lease)

    def _apply_ack(self, record: dict[str, Any]) -> None:
        # A success is a success, even from a minion whose lease expired meanwhile.
        index = int(record["i"])
        status = self.state[index]
        if status == DONE:
            return
        if status == FLIGHT:
            del self.leases[index]
        elif status == DEAD:
            self.reasons.pop(index, None)
        self._move(index, DONE)

    def _apply_retry(self, record: dict[str, Any]) -> None:
        index = int(record["i"])
        if self._take_lease(index, str(record["w"]), int(record["q"])) is None:
            return  # the lease expired and was counted already
        self.attempts[index] = self.attempts.get(index, 0) + 1
        self._move(index, TODO)
        self._returned(index)

    def _apply_release(self, record: dict[str, Any]) -> None:
        index = int(record["i"])
        if self._take_lease(index, str(record["w"]), int(record["q"])) is None:
            return
        self._move(index, TODO)
        self._returned(index)

    def _apply_dead(self, record: dict[str, Any]) -> None:
        index = int(record["i"])
        if self._take_lease(index, str(record["w"]), int(record["q"])) is None:
            return
        self.attempts[index] = self.attempts.get(index, 0) + 1
        self._move(index, DEAD)
        self.reasons[index] = str(record.get("why", ""))

    def _apply_extend(self, record: dict[str, Any]) -> None:
        minion, expiry = str(record["w"]), float(record["e"])
        for index, seq in record["l"]:
            lease = self.leases.get(index)
            if lease is not None and lease.minion == minion and lease.seq == seq:
                lease.expiry = expiry
                self._push_lease(index, lease)

    def _apply_start(self, record: dict[str, Any]) -> None:
        minion = str(record["w"])
        for index, seq in record["l"]:
            lease = self.leases.get(index)
            if lease is not None and lease.minion == minion and lease.seq == seq:
                lease.started = True

    def _apply_expire(self, record: dict[str, Any]) -> None:
        for index, minion, seq, dead in record["l"]:
            lease = self._take_lease(index, minion, seq)
            if lease is None:
                continue
            if not lease.started:
                self._move(index, TODO)  # claimed ahead, never run: no attempt
                self._returned(index)
                continue
            attempts = self.attempts.get(index, 0) + 1
            self.attempts[index] = attempts
            if dead:
                self._move(index, DEAD)
                self.reasons[index] = (
                    f"lease expired {attempts} time(s); last held by {lease.describe()}"
                )
            else:
                self._move(index, TODO)
                self._returned(index)

    def _apply_requeue(self, record: dict[str, Any]) -> None:
        for index in self._indices(DEAD):
            self.attempts.pop(index, None)
            self.reasons.pop(index, None)
            self._move(index, TODO)
            self._returned(index)

    def _apply_adopt(self, record: dict[str, Any]) -> None:
        self.imported_from = str(record.get("from", "execo"))
        for index in record.get("done", []):
            status = self.state[index]
            if status == FLIGHT:
                del self.leases[index]
            if status != DONE:
                self._move(index, DONE)

    def _indices(self, status: int) -> list[int]:
        found: list[int] = []
        state, start = self.state, 0
        while True:
            index = state.find(status, start)
            if index < 0:
                return found
            found.append(index)
            start = index + 1

    # -- params file -----------------------------------------------------------------
    def _extend_offsets(self, lines: list[bytes]) -> None:
        # C-level loop: offsets of the next lines, each line plus its newline.
        ends = accumulate(map((1).__add__, map(len, lines)), initial=self.params_size)
        next(ends)
        self.offsets.extend(ends)

    def _read_param_lines(self, start: int, end: int, expected: int) -> list[bytes]:
        try:
            fd = os.open(self.path(PARAMS_NAME), os.O_RDONLY)
        except FileNotFoundError:
            raise Damaged(
                f"{self.path(PARAMS_NAME)} is missing although the journal records params"
            ) from None
        try:
            data = _pread_all(fd, end - start, start)
        finally:
            os.close(fd)
        lines = data.split(b"\n")
        tail = lines.pop()
        if len(data) != end - start or tail or len(lines) != expected:
            raise Damaged(
                f"{self.path(PARAMS_NAME)} holds fewer params than the journal records "
                f"({len(lines)} of {expected} in bytes {start}..{end}): the file was cut"
            )
        return lines

    def param_text(self, index: int) -> bytes:
        """The canonical JSON text of param ``index``."""
        if self._pfd is None or self._pfd_size < self.params_size:
            # Reopen after params were added: close-to-open makes them visible on NFS.
            if self._pfd is not None:
                os.close(self._pfd)
            self._pfd = os.open(self.path(PARAMS_NAME), os.O_RDONLY)
            self._pfd_size = self.params_size
        start, end = self.offsets[index], self.offsets[index + 1] - 1
        return _pread_all(self._pfd, end - start, start)

    def read_param(self, index: int) -> bytes:
        """Param ``index``'s text without the file lock (params never change)."""
        with self._thread_lock:
            return self.param_text(index)

    # -- snapshot --------------------------------------------------------------------
    def _read_snapshot(self) -> Optional[dict[str, Any]]:
        path = self.path(SNAPSHOT_NAME)
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

    def _adopt_snapshot(self, doc: Optional[dict[str, Any]]) -> None:
        try:
            self._adopt_snapshot_doc(doc)
        except (KeyError, TypeError, ValueError, IndexError, UnicodeError) as exc:
            self._loaded = False
            raise Damaged(
                f"{self.path(SNAPSHOT_NAME)}: unreadable contents ({type(exc).__name__}: {exc})"
            ) from None

    def _adopt_snapshot_doc(self, doc: Optional[dict[str, Any]]) -> None:
        dedupe = self.dedupe is not None
        if doc is None:
            self._reset_state(generation=0)
        else:
            self._reset_state(generation=int(doc["generation"]))
            self.state = bytearray(doc["state"], "ascii")
            self.n = len(self.state)
            if self.n != int(doc["params"]):
                raise Damaged(f"{self.path(SNAPSHOT_NAME)} is inconsistent (params, state)")
            lines = self._read_param_lines(0, int(doc["params_size"]), self.n)
            self._extend_offsets(lines)
            self.params_size = int(doc["params_size"])
            if dedupe:
                self.dedupe = dict(zip(lines, range(self.n)))
            del lines
            for status in self.count:
                self.count[status] = self.state.count(status)
            if sum(self.count.values()) != self.n:
                raise Damaged(f"{self.path(SNAPSHOT_NAME)}: 'state' holds unknown statuses")
            self.attempts = {int(i): int(a) for i, a in doc["attempts"]}
            self.reasons = {int(i): str(r) for i, r in doc["dead"]}
            for index, minion, seq, expiry, host, pid, job, *started in doc["leases"]:
                self.leases[index] = Lease(
                    minion, seq, expiry, host, pid, job, bool(started[0]) if started else True
                )
            self.heap = [(le.expiry, i, le.minion, le.seq) for i, le in self.leases.items()]
            heapq.heapify(self.heap)
            self.imported_from = doc.get("imported_from")
            self.compact_at = max(self.compact_min_bytes, int(doc.get("size", 0)))
            self.lock_epoch = int(doc.get("lock_epoch", 0))
            self.heads = bool(doc.get("heads", False))
            self._check_committed(self.generation)
        self._loaded = True
        self._check_tail = True

    def _check_committed(self, generation: int) -> None:
        """Snapshot ``generation`` counts only if the journal before it (kept until the
        next compaction) ends with the ``next`` record that committed it: a snapshot
        renamed by a process whose lock was broken meanwhile does not."""
        path = self.journal_path(generation - 1)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return  # removed by a later compaction or a repair
        try:
            size = os.fstat(fd).st_size
            tail = _pread_all(fd, min(size, 4096), size - min(size, 4096))
        finally:
            os.close(fd)
        try:
            last = json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
        except ValueError:
            last = None
        if not (isinstance(last, dict) and last.get("o") == "next" and last.get("g") == generation):
            raise Damaged(
                f"{self.path(SNAPSHOT_NAME)} (generation {generation}) was never committed: "
                f"{path} does not end with the record that moves to it"
            )

    def _compact(self) -> None:
        """Write the state as snapshot <g+1>, then move every process to journal <g+1>.

        The commit point is the ``next`` record appended to journal <g>: whoever reads
        it knows its state equals snapshot <g+1> and continues in journal <g+1>, whether
        or not the rename below happened before a crash.
        """
        assert self._jfd is not None
        new = self.generation + 1
        data = self._snapshot_bytes(new)
        tmp = self.path(f"{SNAPSHOT_TMP_PREFIX}{socket.gethostname()}.{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                _write_all(fd, data, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._create_journal(new)
            self._fence_check()
            self._append({"o": "next", "g": new}, durable=True)
        except OSError as exc:
            log.warning("%s: could not compact the journal (%s); will retry later", self.directory, exc)
            self.compact_at = self.offset * 2
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        # Committed: from here on every reader follows the ``next`` record.
        os.close(self._jfd)
        self._jfd = None
        self.generation, self.offset, self.heads = new, 0, True
        self.compact_at = max(self.compact_min_bytes, len(data))
        try:
            self._fence_check()
            os.replace(tmp, self.path(SNAPSHOT_NAME))
            self._fsync_directory()
            self._remove_old_files()
        except OSError as exc:
            log.warning("%s: compaction left old files behind (%s)", self.directory, exc)
        self._jfd = os.open(self.journal_path(new), os.O_RDWR)
        self.offset = os.fstat(self._jfd).st_size  # its head record

    def _snapshot_bytes(self, generation: int) -> bytes:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "generation": generation,
            "params": self.n,
            "params_size": self.params_size,
            "imported_from": self.imported_from,
            "lock_epoch": self.lock_epoch,
            "heads": True,
            "state": self.state.decode("ascii"),
            "attempts": sorted(self.attempts.items()),
            "dead": sorted(self.reasons.items()),
            "leases": [
                [i, le.minion, le.seq, le.expiry, le.host, le.pid, le.job, int(le.started)]
                for i, le in self.leases.items()
            ],
        }
        return _RECORD(doc).encode("utf-8")

    def _head(self, generation: int) -> bytes:
        return _RECORD(
            {"o": "head", "g": generation, "n": self.n, "s": self.params_size, "e": self.lock_epoch}
        ).encode("utf-8") + b"\n"

    def _create_journal(self, generation: int) -> None:
        """Create journal ``generation`` holding its head record (the state's counts).
        O_EXCL: a journal is never truncated; one left by a compaction that crashed
        before its commit record (nobody points at it) is replaced."""
        path = self.journal_path(generation)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            os.unlink(path)  # uncommitted: no ``next`` record leads to it
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            _write_all(fd, self._head(generation), 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _fence_check(self) -> None:
        """Raise LockLost if this process's lock was broken (before a rename or a write
        through a path, which the breaker's copies cannot fence)."""
        lock = self._file_lock
        if lock is not None and lock.broken_since_acquired():
            raise LockLost(
                f"{self.directory}: this process's queue lock was broken while it was "
                "stopped; its last operation was not recorded"
            )

    def _remove_old_files(self) -> None:
        # Journals older than the snapshot's predecessor are unreachable; a process that
        # still points at one finds it gone and reloads the snapshot. Temporary snapshots
        # are leftovers of crashed compactions (compaction runs under the lock).
        keep = {self.journal_path(self.generation), self.journal_path(self.generation - 1)}
        for name in os.listdir(self.directory):
            path = self.path(name)
            if name.startswith((SNAPSHOT_TMP_PREFIX, TMP_PREFIX)) or (
                name.startswith("journal.") and name.endswith(".jsonl") and path not in keep
            ):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def _fsync_directory(self) -> None:
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass  # some filesystems refuse fsync on a directory; the rename is still atomic
        finally:
            os.close(fd)

    # -- the journal -----------------------------------------------------------------
    def _open_journal(self) -> int:
        path = self.journal_path(self.generation)
        try:
            return os.open(path, os.O_RDWR)
        except FileNotFoundError:
            pass
        doc = self._read_snapshot()
        if doc is not None and int(doc["generation"]) > self.generation:
            # Compacted twice since this process last looked: start from the snapshot.
            self._adopt_snapshot(doc)
            return self._open_journal()
        if doc is None and self.generation == 0 and self.n == 0 and self._fresh():
            self.heads = True
            self._create_journal(0)
            return os.open(path, os.O_RDWR)
        raise Damaged(self._missing_journal(doc))

    def _fresh(self) -> bool:
        """No queue here yet: no params, no journal, no snapshot."""
        try:
            if os.stat(self.path(PARAMS_NAME)).st_size:
                return False
        except FileNotFoundError:
            pass
        return not self._journal_generations()

    def _journal_generations(self) -> list[int]:
        found = []
        for name in os.listdir(self.directory):
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "journal" and parts[2] == "jsonl" and parts[1].isdigit():
                found.append(int(parts[1]))
        return sorted(found)

    def _missing_journal(self, doc: Optional[dict[str, Any]]) -> str:
        path = self.journal_path(self.generation)
        others = self._journal_generations()
        if doc is None and others:
            return (
                f"{self.path(SNAPSHOT_NAME)} is missing, but {self.journal_path(others[-1])} "
                "exists (a compacted queue starts from its snapshot)"
            )
        try:
            size = os.stat(self.path(PARAMS_NAME)).st_size
        except FileNotFoundError:
            size = 0
        if size:
            return f"{path} is missing, but {self.path(PARAMS_NAME)} holds {size} bytes of params"
        return f"{path} is missing, but {self.path(SNAPSHOT_NAME)} points at it"

    def _check_head(self, record: Optional[dict[str, Any]], fd: int) -> None:
        """The first record of a journal (None: the journal is empty) must be its head,
        agreeing with the state it continues; queues made before heads existed start
        with an ``add`` (generation 0) or anything (a later one)."""
        path = self.journal_path(self.generation)
        if record is not None and record.get("o") == "head":
            got = (record.get("g"), record.get("n"), record.get("s"))
            if got != (self.generation, self.n, self.params_size):
                raise Damaged(
                    f"{path} does not continue {self.path(SNAPSHOT_NAME)}: its head says "
                    f"generation {got[0]}, {got[1]} params in {got[2]} bytes; the snapshot "
                    f"says generation {self.generation}, {self.n} params in {self.params_size} bytes"
                )
            self.heads = True
            return
        if self.heads:
            raise Damaged(f"{path} lost its first record (its head): it was truncated or replaced")
        if self.generation > 0:
            return  # a compacted queue of an older minionize
        if record is None:
            if not self._fresh_params():
                raise Damaged(f"{path} is empty, but {self.path(PARAMS_NAME)} holds params")
            self.heads = True
            line = self._head(0)
            _write_all(fd, line, 0)
            os.fsync(fd)
            return
        if record.get("o") not in ("add", "adopt"):
            raise Damaged(f"{path} lost its first records (it starts with {record.get('o')!r})")

    def _fresh_params(self) -> bool:
        try:
            return os.stat(self.path(PARAMS_NAME)).st_size == 0
        except FileNotFoundError:
            return True

    def _sync(self) -> None:
        """Apply every record appended since this process's last visit (lock held)."""
        if not self._loaded:
            self._adopt_snapshot(self._read_snapshot())
        while True:
            fd = self._open_journal()
            if self.offset and os.fstat(fd).st_size == self.offset:
                self._jfd = fd  # nothing new: the common case
                return
            try:
                moved_to = self._read_journal(fd)
            except BaseException:
                os.close(fd)
                raise
            if moved_to is None:
                self._jfd = fd
                return
            os.close(fd)
            self.generation, self.offset = moved_to, 0

    def _read_journal(self, fd: int) -> Optional[int]:
        """Apply the records of journal ``fd`` from ``self.offset``; the generation a
        ``next`` record moves to, if one is found."""
        size = os.fstat(fd).st_size
        if size < self.offset:
            self._loaded = False
            raise Damaged(
                f"{self.journal_path(self.generation)} shrank from {self.offset} to {size} "
                "bytes while in use"
            )
        if size == self.offset:
            if size == 0:
                self._check_head(None, fd)
                self.offset = os.fstat(fd).st_size
            return None
        data = _pread_all(fd, size - self.offset, self.offset)
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # Only a writer that died mid-record leaves a last line without its newline
            # (we hold the lock, nobody is writing): drop it. Its operation never
            # returned, so nothing acknowledged is lost; a fill's params are recovered.
            log.warning(
                "%s: dropping a truncated journal record (%d bytes) left by a crash",
                self.directory, len(data) - end,
            )
            os.ftruncate(fd, self.offset + end)
            self._check_tail = True
        position = self.offset
        try:
            for line in data[:end].split(b"\n")[:-1]:
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict):
                    raise Damaged(
                        f"{self.journal_path(self.generation)}: an unreadable record at byte "
                        f"{position}: {line!r:.100}"
                    )
                if position == 0:
                    self._check_head(record, fd)
                position += len(line) + 1
                if record.get("o") == "next":
                    return int(record["g"])
                self._apply(record)
        except Damaged:
            self._loaded = False  # what was applied so far is not a state to keep
            raise
        finally:
            self.offset = position
        return None

    def _append(self, record: dict[str, Any], durable: bool = False) -> None:
        assert self._jfd is not None
        line = _RECORD(record).encode("utf-8") + b"\n"
        self._wrote = True
        _write_all(self._jfd, line, self.offset)
        if durable:
            os.fsync(self._jfd)
        self.offset += len(line)

    def _write(self, record: dict[str, Any], durable: bool = False) -> None:
        """Append ``record`` and apply it here, exactly as other processes will."""
        self._append(record, durable)
        self._apply(record)

    # -- the params an interrupted fill left --------------------------------------------
    def _recover_params_tail(self, write: bool = True) -> list[str]:
        """Lines of params.jsonl beyond what the journal records (a fill killed between
        its params and its record, or a journal cut short): valid new params become
        todo, other lines dead letters; params.jsonl is never cut. ``write``: record
        it in the journal (else only in memory, for :meth:`repair`)."""
        self._check_tail = False
        try:
            fd = os.open(self.path(PARAMS_NAME), os.O_RDWR)
        except FileNotFoundError:
            return []
        try:
            size = os.fstat(fd).st_size
            if size <= self.params_size:
                return []
            if write:
                self._fence_check()
            tail = _pread_all(fd, size - self.params_size, self.params_size)
            if not tail.endswith(b"\n"):
                _write_all(fd, b"\n", size)  # end the torn line: it becomes a dead letter
                tail += b"\n"
                size += 1
            os.fsync(fd)
        finally:
            os.close(fd)
        lines = tail.split(b"\n")[:-1]
        dedupe = self._dedupe()
        bad: list[int] = []
        firsts: dict[bytes, int] = {}
        for k, line in enumerate(lines):
            try:
                good = canonical(json.loads(line)) == line
            except (ValueError, EngineError, RecursionError):
                good = False
            if good and line not in dedupe and line not in firsts:
                firsts[line] = self.n + k
            else:
                bad.append(self.n + k)
        # A duplicate line keeps pointing at the first copy of its text.
        kept = {line: dedupe[line] for line in lines if line in dedupe}
        kept.update(firsts)
        first = self.n
        record = {"o": "add", "n": self.n + len(lines), "s": size}
        void = {"o": "void", "l": bad, "why": "not a param: a line of params.jsonl left by an "
                "interrupted fill (unreadable, or a duplicate)"}
        if write:
            self._append(record, durable=True)
        self._apply_add(record, lines)
        dedupe.update(kept)
        if bad:
            (self._write if write else self._apply)(void)
        found = (
            f"params {first} to {self.n - 1}: {len(lines) - len(bad)} todo, {len(bad)} "
            "unreadable or duplicate lines as dead letters"
        )
        if not write:
            return [f"{self.path(PARAMS_NAME)}: read {found}"]
        log.warning(
            "%s held %d params beyond what the journal records (an interrupted fill, or a "
            "journal cut short): added %s", self.path(PARAMS_NAME), len(lines), found,
        )
        return [f"{self.path(PARAMS_NAME)}: added {found} (beyond what the journal recorded)"]

    def _dedupe(self) -> dict[bytes, int]:
        if self.dedupe is None:
            lines = self._read_param_lines(0, self.params_size, self.n) if self.n else []
            self.dedupe = dict(zip(lines, range(self.n)))
        return self.dedupe

    # -- locking ---------------------------------------------------------------------
    def _lock(self) -> None:
        self._thread_lock.acquire()
        self._depth += 1
        if self._depth > 1:
            return
        try:
            lock = self._acquire()
            try:
                self._sync()
                if self.lock_epoch != lock.epoch:
                    self._check_epoch()
                if self._check_tail:
                    self._recover_params_tail()
                if self.hold_lock:
                    time.sleep(self.hold_lock)
            except BaseException:
                self._close_journal()
                lock.release()
                raise
        except BaseException:
            self._depth -= 1
            self._thread_lock.release()
            raise

    def _acquire(self) -> QueueLock:
        if self._file_lock is None:
            self._file_lock = queue_lock(self.directory)
        lock = self._file_lock
        if self.lock_lease is not None:
            lock.lease = self.lock_lease
        if lock.identity is not self.identity:
            lock.set_identity(self.identity)
        lock.acquire()
        self._wrote = False
        return lock

    def _check_epoch(self) -> None:
        """Follow a lock that was broken since this process took it, or complete the
        break this process is the first to hold the new epoch of."""
        lock = self._file_lock
        assert lock is not None and lock.epoch is not None
        while self.lock_epoch != lock.epoch:
            if self.lock_epoch > lock.epoch:
                self._close_journal()
                lock.follow(self.lock_epoch)
                self._loaded = False  # this process's view may hold fenced writes
                self._sync()
            else:
                self._complete_break(lock.epoch)

    def _complete_break(self, epoch: int) -> None:
        """Fence out the holder whose lock was broken: replace the journal and the
        params by copies (its open descriptors now write to files nobody reads), the
        journal's copy ending with a ``break`` record that raises the epoch."""
        assert self._jfd is not None and self._file_lock is not None
        lock = self._file_lock
        try:
            with open(lock.path(self.lock_epoch), "rb") as f:
                was = describe_record(f.read(400))
        except OSError:
            was = "an unknown holder"
        record = {"o": "break", "e": epoch, "was": was}
        journal = self.journal_path(self.generation)
        data = _pread_all(self._jfd, self.offset, 0) + _RECORD(record).encode("utf-8") + b"\n"
        self._replace(journal, data)
        self._close_journal()
        self._jfd = os.open(journal, os.O_RDWR)
        self.offset = len(data)
        self._apply(record)
        params = self.path(PARAMS_NAME)
        try:
            with open(params, "rb") as f:
                self._replace(params, f.read())
        except FileNotFoundError:
            pass
        if self._pfd is not None:
            os.close(self._pfd)
            self._pfd = None
        lock.remove_old_epochs(epoch)
        log.warning(
            "%s: took over the queue lock from %s (lock epoch %d); its late writes go to "
            "files that are no longer read", self.directory, was, epoch,
        )

    def _replace(self, path: str, data: bytes) -> None:
        tmp = self.path(f"{TMP_PREFIX}{socket.gethostname()}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _write_all(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._fsync_directory()

    def _unlock(self) -> None:
        lost = False
        try:
            if self._depth == 1:
                lock = self._file_lock
                assert lock is not None
                try:
                    if self._jfd is not None and self.offset > self.compact_at:
                        self._compact()
                finally:
                    # close() flushes our appends to the server before others may read.
                    self._close_journal()
                    # A session that lasted long may have been stopped, and its lock
                    # broken meanwhile: then its writes went to fenced files.
                    if self._wrote and time.monotonic() - lock.acquired_at > LONG_SESSION:
                        lost = lock.broken_since_acquired()
                    self._wrote = False
                    lock.release()
        finally:
            self._depth -= 1
            self._thread_lock.release()
        if lost:
            self._loaded = False
            raise LockLost(
                f"{self.directory}: this process was stopped while it held the queue lock, "
                "and the lock was broken meanwhile: its last writes were not recorded"
            )

    def _close_journal(self) -> None:
        if self._jfd is not None:
            fd, self._jfd = self._jfd, None
            os.close(fd)

    def locked(self) -> _Locked:
        """``with store.locked():`` holds the lock with an up-to-date state."""
        return _Locked(self)

    # -- operations ------------------------------------------------------------------
    def open(self) -> None:
        with self.locked():
            pass

    def close(self) -> None:
        with self._thread_lock:
            if self._pfd is not None:
                os.close(self._pfd)
                self._pfd = None


    def next_seq(self, count: int) -> int:
        first = self._seq
        self._seq += count
        return first

    def pick(self, max_count: int) -> list[int]:
        """Todo params to claim next (lock held); moves the cursor past them."""
        picks: list[int] = []
        state = self.state
        while len(picks) < max_count:
            index = state.find(TODO, self.cursor)
            if index < 0:
                self.cursor = self.n
                break
            picks.append(index)
            self.cursor = index + 1
        while len(picks) < max_count and self.returned:
            index = self.returned.popleft()
            if state[index] == TODO and index not in picks:
                picks.append(index)
        return picks

    def peek(self, limit: int) -> list[int]:
        """Todo params that would be claimed next, without claiming them (lock held)."""
        picks: list[int] = []
        start = self.cursor
        while len(picks) < limit:
            index = self.state.find(TODO, start)
            if index < 0:
                break
            picks.append(index)
            start = index + 1
        seen = set(picks)
        for index in self.returned:
            if len(picks) >= limit:
                break
            if self.state[index] == TODO and index not in seen:
                seen.add(index)
                picks.append(index)
        return picks

    def claim(self, max_count: int, owner: Owner, expiry: float, ahead: int = 0) -> list[Claimed]:
        """Claim up to ``max_count`` todo params for tasks, and up to ``ahead`` more
        that are not started yet (lock held)."""
        picks = self.pick(max_count + ahead)
        if not picks:
            return []
        first = self.next_seq(len(picks))
        record = {
            "o": "claim",
            "w": owner.minion,
            "h": owner.host,
            "p": owner.pid,
            "j": owner.job,
            "e": expiry,
            "l": [
                [index, first + k] if k < max_count else [index, first + k, 0]
                for k, index in enumerate(picks)
            ],
        }
        try:
            self._write(record)
        except BaseException:
            self.cursor = 0  # rescan: the picks are still todo
            raise
        return [
            Claimed(
                index, first + k, self.attempts.get(index, 0) + 1, self.param_text(index),
                k < max_count,
            )
            for k, index in enumerate(picks)
        ]

    def start(self, items: list[tuple[int, int]], minion: str) -> None:
        """Mark params claimed ahead as handed to tasks (lock held)."""
        mine = [[i, q] for i, q in items if self._holds(i, minion, q)]
        if mine:
            self._write({"o": "start", "w": minion, "l": mine})

    def settle(self, op: str, index: int, minion: str, seq: int, reason: str = "") -> None:
        """Record ``ack``, ``retry``, ``release`` or ``dead`` for one claim (lock held)."""
        record: dict[str, Any] = {"o": op, "i": index, "w": minion, "q": seq}
        if reason:
            record["why"] = reason[:MAX_REASON]
        self._write(record, durable=self.durable_settles and op in ("ack", "dead"))

    def extend(self, items: list[tuple[int, int]], minion: str, expiry: float) -> None:
        mine = [[i, q] for i, q in items if self._holds(i, minion, q)]
        if mine:
            self._write({"o": "extend", "w": minion, "e": expiry, "l": mine})

    def _holds(self, index: int, minion: str, seq: int) -> bool:
        lease = self.leases.get(index)
        return lease is not None and lease.minion == minion and lease.seq == seq

    def holds(self, index: int, minion: str, seq: int) -> bool:
        """Whether this claim still holds its lease (lock held)."""
        return self._holds(index, minion, seq)

    def expire(self, now: float, max_attempts: int) -> int:
        """Put back (or dead-letter) every param whose lease ended before ``now``."""
        entries = []
        heap = self.heap
        while heap and heap[0][0] <= now:
            _, index, minion, seq = heapq.heappop(heap)
            lease = self.leases.get(index)
            if lease is None or lease.minion != minion or lease.seq != seq or lease.expiry > now:
                continue  # settled or extended since
            dead = lease.started and self.attempts.get(index, 0) + 1 >= max_attempts
            entries.append([index, minion, seq, 1 if dead else 0])
        if entries:
            self._write({"o": "expire", "l": entries})
        return len(entries)

    def add(self, texts: Iterable[bytes]) -> tuple[int, int]:
        """Add params given as canonical JSON texts; skip those already present."""
        added = skipped = 0
        iterator = iter(texts)
        while True:
            chunk = list(islice(iterator, FILL_CHUNK))
            if not chunk:
                return added, skipped
            with self.locked():
                fresh = self._add_chunk(chunk)
            added += fresh
            skipped += len(chunk) - fresh

    def _add_chunk(self, chunk: list[bytes]) -> int:
        path = self.path(PARAMS_NAME)
        if os.path.exists(path) and os.stat(path).st_size > self.params_size:
            self._recover_params_tail()
        dedupe = self._dedupe()
        new: list[bytes] = []
        n = self.n
        for text in chunk:
            if text not in dedupe:
                dedupe[text] = n + len(new)
                new.append(text)
        if not new:
            return 0
        try:
            data = b"\n".join(new) + b"\n"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                # Opened, then checked, then written: if the lock is broken after the
                # check, this descriptor's file is replaced by a copy (never cut here).
                self._fence_check()
                if os.fstat(fd).st_size != self.params_size:
                    raise Damaged(
                        f"{path} holds {os.fstat(fd).st_size} bytes, the journal records "
                        f"{self.params_size}"
                    )
                _write_all(fd, data, self.params_size)
                os.fsync(fd)  # params must be durable before the journal points at them
            finally:
                os.close(fd)
            record = {"o": "add", "n": n + len(new), "s": self.params_size + len(data)}
            self._append(record, durable=True)
        except BaseException:
            for text in new:
                del dedupe[text]
            raise
        self._apply_add(record, new)
        return len(new)

    def requeue_dead(self) -> int:
        count = self.count[DEAD]
        if count:
            self._write({"o": "requeue"}, durable=True)
        return count

    def adopt(self, texts: list[bytes], done: list[bytes], source: str) -> None:
        """Import params from another tool's queue (lock held, queue empty)."""
        self._add_chunk(texts + done)
        assert self.dedupe is not None
        indices = sorted({self.dedupe[text] for text in done})
        self._write({"o": "adopt", "from": source, "done": indices}, durable=True)

    # -- repair ----------------------------------------------------------------------
    def repair(self) -> list[str]:
        """Rebuild a consistent queue from what is left; lines saying what was done
        (see :func:`minionize.engines._sweep_repair.repair`)."""
        from ._sweep_repair import repair

        return repair(self)

    def lease_counts(self, now: float) -> tuple[int, int]:
        """(unexpired, expired) leases."""
        expired = sum(1 for lease in self.leases.values() if lease.expiry <= now)
        return len(self.leases) - expired, expired

    def records(self, status: int) -> Iterator[tuple[int, int, str]]:
        """(index, attempts, reason) of every param with ``status`` (lock held)."""
        for index in self._indices(status):
            yield index, self.attempts.get(index, 0), self.reasons.get(index, "")


class _Locked:
    def __init__(self, store: SweepStore) -> None:
        self.store = store

    def __enter__(self) -> SweepStore:
        self.store._lock()
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store._unlock()
