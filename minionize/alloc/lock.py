"""One allocator per queue: a lock file beside the queue (or the reports).

Two copies on one queue would each see the jobs the other has not submitted yet and
double them; the second copy finds the lock held and leaves (a cron line that starts
the allocator every few minutes then does nothing while one runs). The lock is an OS
lock (``filelock``): a killed allocator leaves no lock behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import filelock

LOCK_NAME = ".minion-alloc-{name}.lock"


class LockHeld(RuntimeError):
    """Another allocator holds the lock of this queue."""


def lock_path(directory: str, name: str) -> str:
    return os.path.join(directory, LOCK_NAME.format(name=name))


@contextmanager
def hold_lock(directory: str, name: str) -> Iterator[Optional[str]]:
    """Hold the lock of the jobs ``name`` in ``directory`` (made if missing) while the
    block runs; raises :class:`LockHeld` when another process holds it."""
    os.makedirs(directory, exist_ok=True)
    path = lock_path(directory, name)
    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise LockHeld(f"another minion-alloc allocates for this queue (it holds {path})") from None
    try:
        yield path
    finally:
        lock.release()
