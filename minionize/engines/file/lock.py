"""One minion per file: ``<FILE_PATH>.lock``, held (``flock``) by the minion that reads
the file for the whole run, with that minion written inside (host, pid, start). A second
minion on the file finds it held and stops, naming the holder: two minions on one file
would each run every line (a file has no claims to share).

The kernel drops the lock of a minion that dies, however it dies; the file it leaves is
then taken over by the next minion. The holder removes the file as it ends, while it
still holds the lock; a minion that locked a file removed meanwhile (its holder ended
between the open and the lock) opens the path again, so that two minions never hold
two different files of one path. See :mod:`minionize.engines.file.engine`.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import Optional

from ...errors import ConfigError, EngineError

#: Seconds to wait for a holder that has just locked the file to write its name.
HOLDER_WAIT = 1.0


class ReaderLock:
    """The lock of the file ``path``: :meth:`acquire` or ConfigError naming who holds it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = path + ".lock"
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        while self._fd is None:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise EngineError(
                    f"cannot write the lock beside FILE_PATH={self.path!r}: {exc.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                deadline = time.monotonic() + HOLDER_WAIT
                while holder is None and time.monotonic() < deadline:
                    time.sleep(0.02)  # it has just locked: its name follows at once
                    holder = _read_holder(fd)
                os.close(fd)
                holder = holder or "it is starting"
                raise ConfigError(
                    f"{self.path} is being read by another minion ({holder}): two minions "
                    "on one file would each run every line; let that one finish (-j N runs "
                    "N tasks at once in it), or fill a sweep queue, which minions share "
                    f"(minion-queue fill - < {self.path})"
                ) from None
            if _same_file(fd, self.lock_path):
                self._fd = fd
            else:  # its holder ended and removed it after our open: open it again
                os.close(fd)
        record = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(record) + "\n").encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_path)  # still held: nobody can lock this file meanwhile
        except OSError:
            pass
        os.close(self._fd)  # releases the lock
        self._fd = None


def _same_file(fd: int, path: str) -> bool:
    try:
        named = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _read_holder(fd: int) -> Optional[str]:
    """Who holds the lock, as the lock file says (``pid 12 on host h since 10:02:03``);
    None while the holder has not written its name yet."""
    try:
        record = json.loads(os.pread(fd, 4096, 0))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record["since"])))
        return f"pid {int(record['pid'])} on host {record['host']}, since {since}"
    except (OSError, ValueError, TypeError, KeyError):
        return None  # locked, not yet written
