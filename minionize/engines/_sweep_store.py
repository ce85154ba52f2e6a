"""A sweep queue as one process sees it: lock sessions over the files and the state.

A :class:`SweepStore` is one process's view of a queue directory. Every public method
takes the directory's lock, reads what other processes appended since its last visit,
does its work, appends its own records, and lets the lock go. The reasons each step is
safe on a network filesystem are in the docstring of :mod:`minionize.engines.sweep`.
The parts, each in its module:

* :mod:`._sweep_lock`: the lock (``flock`` between live processes, a lease against
  stopped ones);
* :mod:`._sweep_state`: the state machine (what each record does; no file, no clock);
* :mod:`._sweep_files` and :mod:`._sweep_journal`: ``params.jsonl``, the snapshot and
  the journal, and the checks that they agree (:class:`~._sweep_files.Damaged`);
* :mod:`._sweep_repair`: ``minion-queue repair``, and the params an interrupted fill
  left behind;
* here: the session (lock, catch up, fence, compact, let go) and the operations, each
  written as a journal record and applied exactly as other processes will apply it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Optional

from ._sweep_files import (
    Damaged,
    ParamsFile,
    check_committed,
    fsync_directory,
    read_snapshot,
    snapshot_bytes,
    snapshot_path,
    snapshot_tmp_path,
    write_new,
)
from ._sweep_journal import Journal, head_line
from ._sweep_lock import LONG_SESSION, LockLost, QueueLock, describe_record, queue_lock
from ._sweep_repair import recover_tail, repair
from ._sweep_state import (
    DEAD,
    BadRecord,
    Owner,
    QueueState,
    claim_record,
    expire_record,
    from_snapshot,
    to_snapshot,
)

#: Compact when the journal outgrows this, or the last snapshot if that is larger: the
#: replay at open then stays within about twice the cost of reading a snapshot.
COMPACT_MIN_BYTES = 1 << 20
#: Params encoded and deduplicated per lock holding while filling.
FILL_CHUNK = 50_000
#: Longest dead-letter reason kept (the rest is in the minion's logs).
MAX_REASON = 2000

log = logging.getLogger("minionize.sweep")


@dataclass
class Claimed:
    """A param this process just claimed."""

    index: int
    seq: int
    attempt: int
    text: bytes
    started: bool = True


class Session:
    """One process's lock sessions on a queue directory: take the lock, catch up with
    the records others appended, let the caller work, compact, let go. Thread-safe:
    sessions serialise on an internal lock, then on the directory's file lock."""

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
        self.state = QueueState()
        self.params = ParamsFile(directory)
        self.journal = Journal(directory)
        self.compact_min_bytes = self.compact_at = compact_min_bytes
        #: Set when a torn record was dropped or the queue was loaded: params.jsonl may
        #: hold params of an interrupted fill beyond what the journal records.
        self._check_tail = False
        #: Seconds to hold the lock in every session (tests only: MINION_SWEEP_TEST_HOLD_LOCK).
        self.hold_lock = 0.0
        self._thread_lock = threading.RLock()
        self._file_lock: Optional[QueueLock] = None
        self._depth = 0
        self._loaded = False
        #: The next sequence number of this process's claims.
        self._seq = 0

    # -- catching up -------------------------------------------------------------------
    def _load(self, doc: Optional[dict[str, Any]]) -> None:
        """Start from snapshot ``doc`` (None: from an empty queue)."""
        self._loaded = False
        keep_dedupe = self.params.dedupe is not None
        self.compact_at = self.compact_min_bytes
        if doc is None:
            self.state = QueueState()
            self.params.reset()
            self.journal.at(0, heads=False)
        else:
            try:
                self.state = from_snapshot(doc)
            except BadRecord as exc:
                raise Damaged(f"{snapshot_path(self.directory)}: {exc}") from None
            self.params.reset(keep_dedupe)
            self.params.load(self.state.n, int(doc["params_size"]))
            generation = int(doc["generation"])
            self.journal.at(generation, heads=bool(doc.get("heads", False)))
            self.compact_at = max(self.compact_min_bytes, int(doc.get("size", 0)))
            check_committed(self.journal.path(generation - 1), self.directory, generation)
        self._loaded = True
        self._check_tail = True

    def _sync(self) -> None:
        """Apply every record appended since this process's last visit (lock held)."""
        if not self._loaded:
            self._load(read_snapshot(self.directory))
        journal = self.journal
        while True:
            fd = self._open_journal()
            if journal.offset and os.fstat(fd).st_size == journal.offset:
                journal.fd = fd  # nothing new: the common case
                return
            try:
                moved_to = self._read_journal(fd)
            except BaseException:
                os.close(fd)
                raise
            if moved_to is None:
                journal.fd = fd
                return
            os.close(fd)
            journal.generation, journal.offset = moved_to, 0

    def _open_journal(self) -> int:
        journal = self.journal
        fd = journal.open()
        if fd is not None:
            return fd
        doc = read_snapshot(self.directory)
        if doc is not None and int(doc["generation"]) > journal.generation:
            # Compacted twice since this process last looked: start from the snapshot.
            self._load(doc)
            return self._open_journal()
        fresh = not self.params.file_size() and not journal.generations()
        if doc is None and journal.generation == 0 and self.state.n == 0 and fresh:
            journal.heads = True
            journal.create(0, self._head(0))
            return os.open(journal.path(), os.O_RDWR)
        raise journal.missing(doc, self.params)

    def _read_journal(self, fd: int) -> Optional[int]:
        """Apply the records of journal ``fd`` from where this process stopped; the
        generation a ``next`` record moves to, if one is found."""
        journal, state = self.journal, self.state
        try:
            records = journal.records(fd)
            if records is None:
                if journal.offset == 0:  # an empty journal
                    journal.check_head(None, fd, state.n, self.params, state.lock_epoch)
                    journal.offset = os.fstat(fd).st_size
                return None
            for position, record in records:
                if position == 0:
                    journal.check_head(record, fd, state.n, self.params, state.lock_epoch)
                if record.get("o") == "next":
                    return int(record["g"])
                self._apply(record)
            return None
        except Damaged:
            self._loaded = False  # what was applied so far is not a state to keep
            raise
        finally:
            if journal.dropped_torn:
                journal.dropped_torn = False
                self._check_tail = True

    def _apply(self, record: dict[str, Any], lines: Optional[list[bytes]] = None) -> None:
        """Apply ``record`` (``lines``: an ``add`` record's params, if known)."""
        try:
            if record.get("o") == "add":
                self.params.grow(int(record["n"]), int(record["s"]), lines)
            known = self.state.apply(record)
        except (KeyError, TypeError, ValueError) as exc:
            why = exc if isinstance(exc, BadRecord) else (
                f"a malformed record {record!r:.200} ({type(exc).__name__}: {exc})"
            )
            raise Damaged(f"{self.journal.path()}: {why}") from None
        if not known:
            log.warning("%s: skipping an unknown journal record %.200r", self.directory, record)

    def _write(self, record: dict[str, Any], durable: bool = False) -> None:
        """Append ``record`` and apply it here, exactly as other processes will."""
        self.journal.append(record, durable)
        self._apply(record)

    def _head(self, generation: int) -> bytes:
        return head_line(generation, self.state.n, self.params.size, self.state.lock_epoch)

    # -- the session -------------------------------------------------------------------
    def _lock(self) -> None:
        self._thread_lock.acquire()
        self._depth += 1
        if self._depth > 1:
            return
        try:
            lock = self._acquire()
            try:
                self._sync()
                if self.state.lock_epoch != lock.epoch:
                    self._check_epoch()
                if self._check_tail:
                    recover_tail(self)
                if self.hold_lock:
                    time.sleep(self.hold_lock)
            except BaseException:
                self.journal.close()
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
        self.journal.wrote = False
        return lock

    def _unlock(self) -> None:
        lost = False
        try:
            if self._depth == 1:
                lock = self._file_lock
                assert lock is not None
                journal = self.journal
                try:
                    if journal.fd is not None and journal.offset > self.compact_at:
                        self.compact()
                finally:
                    # close() flushes our appends to the server before others may read.
                    journal.close()
                    # A session that lasted long may have been stopped, and its lock
                    # broken meanwhile: then its writes went to fenced files.
                    if journal.wrote and time.monotonic() - lock.acquired_at > LONG_SESSION:
                        lost = lock.broken_since_acquired()
                    journal.wrote = False
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

    # -- a broken lock -----------------------------------------------------------------
    def _check_epoch(self) -> None:
        """Follow a lock that was broken since this process took it, or complete the
        break this process is the first to hold the new epoch of."""
        lock = self._file_lock
        assert lock is not None and lock.epoch is not None
        while self.state.lock_epoch != lock.epoch:
            if self.state.lock_epoch > lock.epoch:
                self.journal.close()
                lock.follow(self.state.lock_epoch)
                self._loaded = False  # this process's view may hold fenced writes
                self._sync()
            else:
                self._complete_break(lock.epoch)

    def _complete_break(self, epoch: int) -> None:
        """Fence out the holder whose lock was broken: replace the journal and the
        params by copies (its open descriptors now write to files nobody reads), the
        journal's copy ending with a ``break`` record that raises the epoch."""
        lock = self._file_lock
        assert lock is not None
        try:
            with open(lock.path(self.state.lock_epoch), "rb") as f:
                was = describe_record(f.read(400))
        except OSError:
            was = "an unknown holder"
        record = {"o": "break", "e": epoch, "was": was}
        self.journal.append_break(record)
        self._apply(record)
        self.params.copy_over(self.directory)
        lock.remove_old_epochs(epoch)
        log.warning(
            "%s: took over the queue lock from %s (lock epoch %d); its late writes go to "
            "files that are no longer read", self.directory, was, epoch,
        )

    def _fence_check(self) -> None:
        """Raise LockLost if this process's lock was broken (before a rename or a write
        through a path, which the breaker's copies cannot fence)."""
        lock = self._file_lock
        if lock is not None and lock.broken_since_acquired():
            raise LockLost(
                f"{self.directory}: this process's queue lock was broken while it was "
                "stopped; its last operation was not recorded"
            )

    # -- compaction --------------------------------------------------------------------
    def compact(self) -> None:
        """Write the state as snapshot <g+1>, then move every process to journal <g+1>.

        The commit point is the ``next`` record appended to journal <g>: whoever reads
        it knows its state equals snapshot <g+1> and continues in journal <g+1>, whether
        or not the rename below happened before a crash.
        """
        journal = self.journal
        assert journal.fd is not None
        new = journal.generation + 1
        data = snapshot_bytes(to_snapshot(self.state), new, self.params.size)
        tmp = snapshot_tmp_path(self.directory)
        try:
            write_new(tmp, data)
            journal.create(new, self._head(new))
            self._fence_check()
            journal.append({"o": "next", "g": new}, durable=True)
        except OSError as exc:
            log.warning("%s: could not compact the journal (%s); will retry later", self.directory, exc)
            self.compact_at = journal.offset * 2
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        # Committed: from here on every reader follows the ``next`` record.
        journal.close()
        journal.at(new, heads=True)
        self.compact_at = max(self.compact_min_bytes, len(data))
        try:
            self._fence_check()
            os.replace(tmp, snapshot_path(self.directory))
            fsync_directory(self.directory)
            journal.remove_old()
        except OSError as exc:
            log.warning("%s: compaction left old files behind (%s)", self.directory, exc)
        journal.fd = os.open(journal.path(), os.O_RDWR)
        journal.offset = os.fstat(journal.fd).st_size  # its head record


class SweepStore(Session):
    """One process's view of a sweep queue directory: its operations, each a journal
    record written under the lock (methods marked "lock held" run inside
    :meth:`locked`; the others take it)."""

    def locked(self) -> _Locked:
        """``with store.locked():`` holds the lock with an up-to-date state."""
        return _Locked(self)

    def open(self) -> None:
        with self.locked():
            pass

    def close(self) -> None:
        with self._thread_lock:
            self.params.close()

    def param_text(self, index: int) -> bytes:
        """The canonical JSON text of param ``index`` (lock held)."""
        return self.params.text(index)

    def read_param(self, index: int) -> bytes:
        """Param ``index``'s text without the file lock (params never change)."""
        with self._thread_lock:
            return self.params.text(index)

    # -- claims and settles (lock held) --------------------------------------------------
    def claim(self, max_count: int, owner: Owner, expiry: float, ahead: int = 0) -> list[Claimed]:
        """Claim up to ``max_count`` todo params for tasks, and up to ``ahead`` more
        that are not started yet."""
        state = self.state
        picks = state.pick(max_count + ahead)
        if not picks:
            return []
        first = self._seq
        self._seq += len(picks)
        try:
            self._write(claim_record(picks, max_count, owner, expiry, first))
        except BaseException:
            state.cursor = 0  # rescan: the picks are still todo
            raise
        return [
            Claimed(index, first + k, state.attempts.get(index, 0) + 1, self.params.text(index),
                    k < max_count)
            for k, index in enumerate(picks)
        ]

    def start(self, items: list[tuple[int, int]], minion: str) -> None:
        """Mark params claimed ahead as handed to tasks."""
        mine = [[i, q] for i, q in items if self.state.leases.holds(i, minion, q)]
        if mine:
            self._write({"o": "start", "w": minion, "l": mine})

    def settle(self, op: str, index: int, minion: str, seq: int, reason: str = "") -> None:
        """Record ``ack``, ``retry``, ``release`` or ``dead`` for one claim."""
        record: dict[str, Any] = {"o": op, "i": index, "w": minion, "q": seq}
        if reason:
            record["why"] = reason[:MAX_REASON]
        self._write(record, durable=self.durable_settles and op in ("ack", "dead"))

    def extend(self, items: list[tuple[int, int]], minion: str, expiry: float) -> None:
        """Extend the leases still held by these claims until ``expiry``."""
        mine = [[i, q] for i, q in items if self.state.leases.holds(i, minion, q)]
        if mine:
            self._write({"o": "extend", "w": minion, "e": expiry, "l": mine})

    def expire(self, now: float, max_attempts: int) -> int:
        """Put back (or dead-letter) every param whose lease ended before ``now``."""
        record = expire_record(self.state, now, max_attempts)
        if record is None:
            return 0
        self._write(record)
        return len(record["l"])

    def records(self, status: int) -> Iterator[tuple[int, int, str]]:
        """(index, attempts, reason) of every param with ``status``."""
        state = self.state
        for index in state.indices(status):
            yield index, state.attempts.get(index, 0), state.reasons.get(index, "")

    # -- filling and administration ----------------------------------------------------
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
        params = self.params
        if params.file_size() > params.size:
            recover_tail(self)
        dedupe = params.index()
        new: list[bytes] = []
        n = self.state.n
        for text in chunk:
            if text not in dedupe:
                dedupe[text] = n + len(new)
                new.append(text)
        if not new:
            return 0
        try:
            size = params.append(new, self._fence_check)
            record = {"o": "add", "n": n + len(new), "s": size}
            self.journal.append(record, durable=True)
        except BaseException:
            for text in new:
                del dedupe[text]
            raise
        self._apply(record, new)
        return len(new)

    def requeue_dead(self) -> int:
        count = self.state.count[DEAD]
        if count:
            self._write({"o": "requeue"}, durable=True)
        return count

    def adopt(self, texts: list[bytes], done: list[bytes], source: str) -> None:
        """Import params from another tool's queue (lock held, queue empty)."""
        self._add_chunk(texts + done)
        dedupe = self.params.index()
        indices = sorted({dedupe[text] for text in done})
        self._write({"o": "adopt", "from": source, "done": indices}, durable=True)

    def repair(self) -> list[str]:
        """Rebuild a consistent queue from what is left; lines saying what was done
        (see :func:`minionize.engines._sweep_repair.repair`)."""
        return repair(self)


class _Locked:
    def __init__(self, store: SweepStore) -> None:
        self.store = store

    def __enter__(self) -> SweepStore:
        self.store._lock()
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store._unlock()
