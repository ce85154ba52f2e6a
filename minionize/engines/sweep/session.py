"""A lock session on a sweep queue: take the lock, catch up, fence, compact, let go.

:class:`LockSession` holds this process's :class:`~.replica.Replica` and the lock of
:mod:`.lock`: every session takes the lock, has the replica catch up, follows or
completes a lock break (the fence), lets the caller append its records, has the replica
compact the journal when it has grown, and lets go. Why each step is safe on a network
filesystem is in the docstring of :mod:`minionize.engines.sweep.engine`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

from .lock import LONG_SESSION, LockLost, QueueLock, describe_record, queue_lock
from .replica import Replica

log = logging.getLogger("minionize.sweep")


class LockSession:
    """One process's lock sessions on the queue of ``replica``. Thread-safe: sessions
    serialise on an internal lock, then on the directory's file lock. ``hold_lock``:
    seconds to hold the lock in every session (tests only: MINION_SWEEP_TEST_HOLD_LOCK)."""

    def __init__(
        self,
        replica: Replica,
        *,
        lock_lease: Optional[float] = None,
        identity: Optional[dict[str, Any]] = None,
        hold_lock: float = 0.0,
    ) -> None:
        self.replica = replica
        self.directory = replica.directory
        self.lock_lease = lock_lease
        self.identity = identity or {"host": socket.gethostname(), "pid": os.getpid()}
        self.hold_lock = hold_lock
        #: Held by every session, and by what reads the files without the file lock.
        self.thread_lock = threading.RLock()
        self._file_lock: Optional[QueueLock] = None
        self._depth = 0

    # -- the session -------------------------------------------------------------------
    def begin(self) -> None:
        """Take the lock and catch up (a nested session only counts)."""
        self.thread_lock.acquire()
        self._depth += 1
        if self._depth > 1:
            return
        replica = self.replica
        try:
            lock = self._acquire()
            try:
                replica.sync()
                if replica.state.lock_epoch != lock.epoch:
                    self._check_epoch()
                replica.check_tail(self.fence_check)
                if self.hold_lock:
                    time.sleep(self.hold_lock)
            except BaseException:
                replica.journal.close()
                lock.release()
                raise
        except BaseException:
            self._depth -= 1
            self.thread_lock.release()
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
        self.replica.journal.wrote = False
        return lock

    def end(self) -> None:
        """Compact if the journal has grown, and let the lock go; LockLost if the lock
        was broken during a long session that wrote."""
        lost = False
        try:
            if self._depth == 1:
                lock = self._file_lock
                assert lock is not None
                replica = self.replica
                journal = replica.journal
                try:
                    if replica.compaction.due():
                        replica.compact(self.fence_check)
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
            self.thread_lock.release()
        if lost:
            self.replica.forget()
            raise LockLost(
                f"{self.directory}: this process was stopped while it held the queue lock, "
                "and the lock was broken meanwhile: its last writes were not recorded"
            )

    # -- a repair's session ------------------------------------------------------------
    @contextmanager
    def held(self) -> Iterator[QueueLock]:
        """The lock, held without catching up (a repair reads the files its own way)."""
        with self.thread_lock:
            lock = self._acquire()
            try:
                yield lock
            finally:
                self.replica.journal.wrote = False
                lock.release()

    def reload(self) -> list[str]:
        """Read the queue again from its files, follow or complete a lock break, and add
        the params an interrupted fill left (lock :meth:`held`); what was added."""
        replica = self.replica
        replica.forget()
        replica.sync()
        self._check_epoch()
        return replica.check_tail(self.fence_check)

    # -- a broken lock -----------------------------------------------------------------
    def _check_epoch(self) -> None:
        """Follow a lock that was broken since this process took it, or complete the
        break this process is the first to hold the new epoch of."""
        lock = self._file_lock
        assert lock is not None and lock.epoch is not None
        replica = self.replica
        while replica.state.lock_epoch != lock.epoch:
            if replica.state.lock_epoch > lock.epoch:
                replica.journal.close()
                lock.follow(replica.state.lock_epoch)
                replica.forget()  # this process's view may hold fenced writes
                replica.sync()
            else:
                self._complete_break(lock.epoch)

    def _complete_break(self, epoch: int) -> None:
        """Fence out the holder whose lock was broken: replace the journal, the params
        and the results by copies (its open descriptors now write to files nobody reads), the
        journal's copy ending with a ``break`` record that raises the epoch."""
        lock = self._file_lock
        assert lock is not None
        replica = self.replica
        try:
            with open(lock.path(replica.state.lock_epoch), "rb") as f:
                was = describe_record(f.read(400))
        except OSError:
            was = "an unknown holder"
        record = {"o": "break", "e": epoch, "was": was}
        replica.journal.append_break(record)
        replica.apply(record)
        replica.params.copy_over(self.directory)
        replica.results_file.copy_over(self.directory)
        lock.remove_old_epochs(epoch)
        log.warning(
            "%s: took over the queue lock from %s (lock epoch %d); its late writes go to "
            "files that are no longer read", self.directory, was, epoch,
        )

    def fence_check(self) -> None:
        """Raise LockLost if this process's lock was broken (before a rename or a write
        through a path, which the breaker's copies cannot fence)."""
        lock = self._file_lock
        if lock is not None and lock.broken_since_acquired():
            raise LockLost(
                f"{self.directory}: this process's queue lock was broken while it was "
                "stopped; its last operation was not recorded"
            )
