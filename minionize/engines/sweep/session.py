"""A lock session on a sweep queue: take the lock, catch up, fence, compact, let go.

:class:`Replica` is this process's copy of the queue (the state of :mod:`._sweep_state`
and the files of :mod:`._sweep_files` and :mod:`._sweep_journal`), caught up by
applying the records other processes appended since its last visit. :class:`Session`
adds the lock (:mod:`._sweep_lock`) around it: every session takes the lock, catches
up, follows or completes a lock break (the fence), lets the caller append its records,
compacts the journal when it has grown, and lets go. Why each step is safe on a network
filesystem is in the docstring of :mod:`minionize.engines.sweep.engine`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Optional

from .files import (
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
from .journal import Journal, head_line
from .lock import LONG_SESSION, LockLost, QueueLock, describe_record, queue_lock
from .repair import recover_tail
from .results import ResultsFile
from .state import BadRecord, QueueState, from_snapshot, to_snapshot

log = logging.getLogger("minionize.sweep")

#: Compact when the journal outgrows this, or the last snapshot if that is larger: the
#: replay at open then stays within about twice the cost of reading a snapshot.
COMPACT_MIN_BYTES = 1 << 20


class Replica:
    """This process's copy of a queue: the state, and where it is in the files."""

    def __init__(self, directory: str, compact_min_bytes: int = COMPACT_MIN_BYTES) -> None:
        self.directory = directory
        self.state = QueueState()
        self.params = ParamsFile(directory)
        self.journal = Journal(directory)
        self.results_file = ResultsFile(directory)
        self.compact_min_bytes = self.compact_at = compact_min_bytes
        #: Set when a torn record was dropped or the queue was loaded: params.jsonl may
        #: hold params of an interrupted fill beyond what the journal records.
        self._check_tail = False
        self._loaded = False

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



class Session(Replica):
    """One process's lock sessions on a queue directory. Thread-safe: sessions
    serialise on an internal lock, then on the directory's file lock."""

    def __init__(
        self,
        directory: str,
        *,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
        lock_lease: Optional[float] = None,
        identity: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__(directory, compact_min_bytes)
        self.lock_lease = lock_lease
        self.identity = identity or {"host": socket.gethostname(), "pid": os.getpid()}
        #: Seconds to hold the lock in every session (tests only: MINION_SWEEP_TEST_HOLD_LOCK).
        self.hold_lock = 0.0
        self._thread_lock = threading.RLock()
        self._file_lock: Optional[QueueLock] = None
        self._depth = 0

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
        """Fence out the holder whose lock was broken: replace the journal, the params
        and the results by copies (its open descriptors now write to files nobody reads), the
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
        self.results_file.copy_over(self.directory)
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


