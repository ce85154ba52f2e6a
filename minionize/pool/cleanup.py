"""Run directories never left behind: removed on SIGTERM, and found and removed once
their owner is gone.

* Each run directory names its owner in ``owner.json``: host, pid and the process's
  start time (so that a pid used again is not taken for the owner). A new pool removes
  the run directories in the same parent directory whose owner, on this host, is gone
  (a caller killed by SIGKILL, a lost node's). A directory kept on purpose
  (``keep_workdir``, or after an error that ended the pool) has no owner any more, and
  stays.
* While a pool is open, SIGTERM ends the caller as it would have (killed by SIGTERM)
  after its pools stopped their workers and removed their run directories. The handler
  is installed only when the caller has none (the default), from the main thread, and
  the default is put back once the last pool ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import threading
from typing import Any, Callable, Optional

from ..owners import process_gone, process_start

OWNER = "owner.json"
PREFIX = "minionize-pool-"
#: An owner file larger than this is not ours.
MAX_OWNER_BYTES = 4096


def owner_record() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid)}


def owner_gone(owner: dict[str, Any]) -> bool:
    """True if ``owner`` was a process of this host that has ended (False when it lives,
    or when it cannot be known: another host)."""
    if owner.get("host") != socket.gethostname():
        return False
    pid, start = owner.get("pid"), owner.get("start")
    if not isinstance(pid, int):
        return False
    try:
        start_ticks = int(start) if start is not None else 0
    except (TypeError, ValueError):
        return False
    return process_gone(pid, start_ticks)


def read_owner(rundir: str) -> Optional[dict[str, Any]]:
    """The owner of a run directory of this user's, or None (no owner, not ours)."""
    path = os.path.join(rundir, OWNER)
    try:
        info = os.lstat(rundir)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = os.read(fd, MAX_OWNER_BYTES + 1)
        finally:
            os.close(fd)
        owner = json.loads(data) if len(data) <= MAX_OWNER_BYTES else None
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def remove_stale(parent: str) -> list[str]:
    """Remove the run directories in ``parent`` whose owner on this host is gone; return
    their paths."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        owner = read_owner(entry.path)
        if owner is not None and owner_gone(owner):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def disown(rundir: str) -> None:
    """The run directory is kept on purpose: never removed as a leftover."""
    try:
        os.unlink(os.path.join(rundir, OWNER))
    except OSError:
        pass


# -- SIGTERM --------------------------------------------------------------------------
_lock = threading.RLock()
#: What ends each open pool (its ``weakref.finalize``), while the handler is ours.
_pools: set[Callable[[], Any]] = set()
#: The process that installed the handler (a forked worker inherits it: not for it).
_installer: list[int] = []


def _on_sigterm(signum: int, frame: Any) -> None:
    if _installer and _installer[0] == os.getpid():
        with _lock:
            pending = list(_pools)
            _pools.clear()
        for finish in pending:
            try:
                finish()
            except Exception:
                pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def guard(finish: Callable[[], Any]) -> None:
    """Run ``finish`` on SIGTERM, if the handler is ours (see the module's text)."""
    if threading.current_thread() is not threading.main_thread():
        return _add_if_ours(finish)
    with _lock:
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
            _installer[:] = [os.getpid()]
            current = _on_sigterm
        if current is _on_sigterm:
            _pools.add(finish)


def _add_if_ours(finish: Callable[[], Any]) -> None:
    with _lock:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm and _installer == [os.getpid()]:
            _pools.add(finish)


def release(finish: Callable[[], Any]) -> None:
    """``finish`` ran: forget it, and put the default handler back after the last pool
    (from the main thread; from another, the handler stays and only does the default)."""
    with _lock:
        _pools.discard(finish)
        if _pools or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
