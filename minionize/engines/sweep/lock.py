"""The sweep queue's lock: ``flock`` between live processes, a lease against stopped ones.

Live processes exclude each other with an exclusive ``flock`` on a lock file (cheap,
coherent across NFS clients through the NFS lock manager). A process that is stopped
(SIGSTOP, ``scontrol suspend``, gang scheduling) or whose node hangs keeps its ``flock``
forever, so the lock also has a lease: each holder writes a record into the lock file
when it takes the lock (who, and a session counter). A waiter that sees neither that
record nor the lock file change for ``lease`` seconds *of its own clock* breaks the lock:
it creates the lock file of the next *epoch* (``queue.lock.<e+1>``) with ``O_EXCL``,
which exactly one waiter can do, and every process moves to that file.

Breaking is only half of it: the stopped holder may resume in the middle of a write.
The process that first holds the new epoch *fences* the queue (see
:meth:`.session.LockSession._complete_break`): it replaces the journal and ``params.jsonl`` by
copies (rename), so that descriptors opened by the old holder point at files nobody
reads any more, and appends a ``break`` record carrying the new epoch. A process reads
that record the next time it syncs and knows its epoch is over. The argument, NFS
included, is in ``docs/sweep-queue.md``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Optional

from ...errors import EngineError

log = logging.getLogger("minionize.sweep")

LOCK_NAME = "queue.lock"
#: The holder record is written at offset 0, padded to this size, so that a shorter
#: record never leaves the end of a longer one behind.
RECORD_BYTES = 400
#: A waiter says who holds the lock after this many seconds.
WARN_AFTER = 5.0
#: Default lease of the lock itself (MINION_SWEEP_LOCK_LEASE): longer than any session
#: (they last microseconds to a fraction of a second) and than the attribute cache of
#: an NFS client (acregmax, 60 s by default).
DEFAULT_LEASE = 90.0
MIN_LEASE = 1.0
#: How often a waiter looks at the lock file (a fresh open: close-to-open on NFS).
LOOK_EVERY = 0.1
#: A session that lasted longer than this re-checks its fence before letting go
#: (a lock is broken only after at least MIN_LEASE seconds without change).
LONG_SESSION = MIN_LEASE / 2


class LockLost(EngineError):
    """This process's lock was broken while it was stopped: what it wrote in that
    session may not be in the queue."""


def lock_name(epoch: int) -> str:
    """The lock file of ``epoch``: ``queue.lock``, then ``queue.lock.1``, ..."""
    return LOCK_NAME if epoch == 0 else f"{LOCK_NAME}.{epoch}"


def epoch_of(name: str) -> Optional[int]:
    if name == LOCK_NAME:
        return 0
    prefix = LOCK_NAME + "."
    if name.startswith(prefix) and name[len(prefix):].isdigit():
        return int(name[len(prefix):])
    return None


def describe_record(data: bytes) -> str:
    """``minion m on host (pid 12, job 34)`` from a holder record, or ``unknown``."""
    try:
        doc = json.loads(data.rstrip(b" \x00\n") or b"{}")
    except ValueError:
        return "an unknown holder (its record is unreadable)"
    if not isinstance(doc, dict) or "pid" not in doc:
        return "an unknown holder (not a minion: a script holding a file lock?)"
    job = f", job {doc['job']}" if doc.get("job") else ""
    return f"minion {doc.get('minion', '?')} on {doc.get('host', '?')} (pid {doc['pid']}{job})"


class _Wait:
    """What one waiter saw of the lock file, by its own monotonic clock."""

    def __init__(self) -> None:
        self.start = self.since = time.monotonic()
        self.seen: Any = None
        self.next_look = 0.0
        self.pause = 0.0001
        self.warned = False


class QueueLock:
    """One process's lock on one queue directory (see :func:`queue_lock`).

    Linux's NFS client turns ``flock`` into a POSIX lock held by the *process*, which
    closing any descriptor of the file releases; so there is one QueueLock per
    directory per process, with a thread lock in front, and its descriptor stays open.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.lease = DEFAULT_LEASE
        self.identity: dict[str, Any] = {}
        self._record_head = self._record_tail = b""
        self._threads = threading.Lock()
        #: The epoch this process locks; None until the first acquisition lists them.
        self.epoch: Optional[int] = None
        self._fd: Optional[int] = None
        self._fd_epoch = -1
        self._sessions = 0
        #: When the current session began (monotonic): a stopped holder finds it old.
        self.acquired_at = 0.0

    def set_identity(self, identity: dict[str, Any]) -> None:
        """Who this process is, as written into the lock file at every acquisition
        (with a session counter: a waiter sees the lock change hands)."""
        self.identity = identity
        head = json.dumps(identity)[:-1].encode() + b', "session": "'
        self._record_head = head
        self._record_tail = b'"}'.ljust(max(2, RECORD_BYTES - len(head) - 12))

    def path(self, epoch: int) -> str:
        return os.path.join(self.directory, lock_name(epoch))

    def latest_epoch(self) -> int:
        found = [epoch_of(name) for name in os.listdir(self.directory)]
        return max((e for e in found if e is not None), default=0)

    # -- acquiring -------------------------------------------------------------------
    def acquire(self) -> None:
        self._threads.acquire()
        try:
            self._acquire_file()
        except BaseException:
            self._threads.release()
            raise

    def _acquire_file(self) -> None:
        import fcntl

        if self.epoch is None:
            self.epoch = self.latest_epoch()
        wait: Optional[_Wait] = None
        while True:
            if self._fd is None or self._fd_epoch != self.epoch:
                self._close_fd()
                self._fd = os.open(self.path(self.epoch), os.O_RDWR | os.O_CREAT, 0o666)
                self._fd_epoch = self.epoch
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                wait = wait or _Wait()
                self._wait(wait)
                continue
            if os.fstat(self._fd).st_nlink == 0:
                # Removed (by hand, or an old epoch cleaned up): follow the others.
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                self._close_fd()
                self.epoch = self.latest_epoch()
                continue
            self._sessions += 1
            os.pwrite(self._fd, self._record_head + b"%012d" % self._sessions + self._record_tail, 0)
            self.acquired_at = time.monotonic()
            return

    def _wait(self, wait: _Wait) -> None:
        """One step of waiting for a held lock: look at it now and then, say who holds
        it after WARN_AFTER seconds, break it after ``lease`` seconds without change."""
        now = time.monotonic()
        if now >= wait.next_look:
            wait.next_look = now + LOOK_EVERY
            assert self.epoch is not None
            latest = self.latest_epoch()
            if latest > self.epoch:  # broken by someone else: follow
                self.epoch = latest
                wait.seen, wait.since = None, now
                return
            seen = self._look()
            if seen is None or (self._fd is not None and seen[0] != os.fstat(self._fd).st_ino):
                self._close_fd()  # the lock file was replaced or removed: reopen
            if seen != wait.seen:
                wait.seen, wait.since = seen, now
            elif now - wait.since >= self.lease:
                self._break(seen[3] if seen else b"", now - wait.since)
                wait.seen, wait.since = None, now
                return
            if not wait.warned and now - wait.start >= WARN_AFTER and seen is not None:
                wait.warned = True
                log.warning(
                    "%s: waiting %.0f s for the queue lock, held by %s, unchanged for "
                    "%.0f s; it is broken after %.0f s unchanged (MINION_SWEEP_LOCK_LEASE)",
                    self.directory, now - wait.start, describe_record(seen[3]),
                    now - wait.since, self.lease,
                )
        time.sleep(wait.pause)
        wait.pause = min(wait.pause * 2, 0.005)

    def _look(self) -> Optional[tuple[int, int, int, bytes]]:
        """(inode, size, mtime_ns, holder record) of the current lock file, opened
        afresh so that an NFS client revalidates it."""
        assert self.epoch is not None
        try:
            fd = os.open(self.path(self.epoch), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            info = os.fstat(fd)
            return info.st_ino, info.st_size, info.st_mtime_ns, os.pread(fd, RECORD_BYTES, 0)
        finally:
            os.close(fd)

    def _break(self, record: bytes, stalled: float) -> None:
        assert self.epoch is not None
        new = self.epoch + 1
        try:
            fd = os.open(self.path(new), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            self.epoch = new  # another waiter broke it first
            return
        os.close(fd)
        log.warning(
            "%s: breaking the queue lock held by %s: unchanged for %.0f s (stopped, "
            "suspended or on a hung node?); what it writes from now on is ignored",
            self.directory, describe_record(record), stalled,
        )
        self.epoch = new

    def follow(self, epoch: int) -> None:
        """Let go of a stale epoch's lock and take the lock of ``epoch`` (held: the
        thread lock stays held throughout)."""
        self._unlock_file()
        self.epoch = epoch
        self._acquire_file()

    def remove_old_epochs(self, epoch: int) -> None:
        """Remove lock files older than ``epoch - 1`` (held at ``epoch``). A process still
        at an old epoch is fenced by the queue's records, not by these files."""
        for name in os.listdir(self.directory):
            old = epoch_of(name)
            if old is not None and old < epoch - 1:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass

    def broken_since_acquired(self) -> bool:
        """Whether a later epoch exists (checked by a session that lasted long)."""
        assert self.epoch is not None
        return os.path.exists(self.path(self.epoch + 1))

    # -- releasing -------------------------------------------------------------------
    def release(self) -> None:
        try:
            self._unlock_file()
        finally:
            self._threads.release()

    def _unlock_file(self) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


_QUEUE_LOCKS: dict[tuple[int, int], QueueLock] = {}
_QUEUE_LOCKS_GUARD = threading.Lock()


def queue_lock(directory: str) -> QueueLock:
    """This process's lock of the queue in ``directory`` (created if missing)."""
    os.makedirs(directory, exist_ok=True)
    info = os.stat(directory)
    key = (info.st_dev, info.st_ino)
    with _QUEUE_LOCKS_GUARD:
        lock = _QUEUE_LOCKS.get(key)
        if lock is None:
            lock = _QUEUE_LOCKS[key] = QueueLock(directory)
        return lock


def _forget_inherited_locks() -> None:
    """In a forked child: drop the queue locks inherited from the parent.

    A lock is an ``flock`` on an open file description; a forked child shares it with its
    parent, so both would "hold" the queue at once. The child closes its copies (closing
    does not unlock what the parent holds: the description stays open there) and opens
    its own lock when it needs one.
    """
    global _QUEUE_LOCKS_GUARD
    for lock in _QUEUE_LOCKS.values():
        try:
            lock._close_fd()
        except OSError:
            pass
    _QUEUE_LOCKS.clear()
    _QUEUE_LOCKS_GUARD = threading.Lock()  # it may have been held by another thread


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_locks)
