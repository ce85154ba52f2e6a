"""Who owns a temporary directory, and whether that owner is gone.

A run that is killed (SIGKILL, a node that reboots) cannot remove its temporary
directories; the next run on the same host removes them, but only when their owner is
gone. The owner is written in the directory's name, so that a directory never exists
without it: ``<prefix><host>.<pid>.<start>-<random>``, where ``<host>`` is a short hash of
the host name, ``<pid>`` the owner's process id and ``<start>`` its start time (in clock
ticks since boot, from ``/proc``; ``0`` where it cannot be read). A process id that was
reused by a later process is told apart by its start time.

A directory of another host, or whose name holds no owner (made by an older version),
is never removed: its owner cannot be known from here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
from typing import Optional


def host_hash(host: Optional[str] = None) -> str:
    """A short, file-name safe hash of the host name."""
    name = host if host is not None else socket.gethostname()
    return hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=5).hexdigest()


def process_start(pid: int) -> int:
    """The start time of process ``pid`` in clock ticks since boot (0 when unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return 0
    # Field 22; the command name (field 2) is in parentheses and may hold anything.
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


def owner_tag(pid: Optional[int] = None) -> str:
    """``<host>.<pid>.<start>`` of this process (or of ``pid``, on this host)."""
    pid = os.getpid() if pid is None else pid
    return f"{host_hash()}.{pid}.{process_start(pid)}"


_TAG = re.compile(r"([0-9a-f]{10})\.(\d+)\.(\d+)-")


def is_gone(tag: str) -> bool:
    """Whether the owner ``tag`` names (see :func:`owner_tag`) is a process of this host
    that ended. False when it cannot be known (another host, an unreadable tag)."""
    found = _TAG.match(tag + "-")  # a bare tag, or a name's rest: "<tag>-<random>"
    if found is None or found.group(1) != host_hash():
        return False
    return process_gone(int(found.group(2)), int(found.group(3)))


def process_gone(pid: int, start: int = 0) -> bool:
    """Whether process ``pid`` of this host, started at ``start`` (clock ticks since
    boot, 0 when unknown), has ended: no such process, a zombie, or a later process that
    was given the same pid. False for a pid that is not a process id."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    if _zombie(pid):
        return True
    # Alive: the same process unless its start time says it is a later one.
    now = process_start(pid)
    return start != 0 and now != 0 and now != start


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def make_owned_dir(prefix: str, parent: Optional[str] = None) -> str:
    """A new private directory (as :func:`tempfile.mkdtemp`) named
    ``<prefix><owner tag>-<random>`` in ``parent`` (the temporary directory by default)."""
    return tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=parent)


def remove_stale(prefix: str, parent: Optional[str] = None) -> list[str]:
    """Remove the directories ``<prefix><tag>-*`` of ``parent`` (the temporary directory
    by default) whose owner is gone; the paths removed. Never raises."""
    parent = parent if parent is not None else tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(prefix) or not is_gone(name[len(prefix):]):
            continue
        path = os.path.join(parent, name)
        try:
            if not os.path.isdir(path) or os.path.islink(path):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append(path)
    return removed
