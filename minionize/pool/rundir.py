"""The pool's run directory: its layout, the privacy check, and the record files.

A run directory holds a bounded number of files whatever the number of items::

    owner.json           host, pid and start time of the pool's caller (a new pool
                         removes a run directory whose owner is gone)
    config.json          the workers' settings (JSON)
    queue/               the sweep queue of chunks (JSON params: never a pickle)
    calls/<k>.func       the function of call k (cloudpickle), removed after the call
    calls/<k>.items.<b>  its items, a batch of chunks at a time (one pickle per chunk),
                         removed once the batch came back
    results/<worker>     each worker's results, appended (length-prefixed pickles)
    workers/<worker>.json  each worker's pid, host and state
    report/              the workers' JSON reports (``minion-status RUNDIR/report``)
    bell                 touched when a call is filled (idle workers look at once)
    closed               the pool is closed: workers exit once the queue is drained

Pickles run code when they are read, so they are read only from a run directory that
this user owns and nobody else can write (:func:`check_private`), checked every time.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import tempfile
import threading
from typing import Any, Optional

from .cleanup import OWNER, owner_record
from .errors import PoolError

HEADER = struct.Struct(">Q")


def make_rundir(workdir: Optional[str], config: dict[str, Any]) -> str:
    """A new run directory in ``workdir`` (default: the temporary directory), with its
    subdirectories and ``config.json``; returns its path."""
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
    # mkdtemp: a fresh name (two pools in the same second never collide), mode 0700.
    rundir = tempfile.mkdtemp(prefix="minionize-pool-", dir=workdir)
    # Who owns it, first: a new pool removes a run directory whose owner is gone.
    write_private(os.path.join(rundir, OWNER), json.dumps(owner_record()).encode())
    for sub in ("calls", "results", "workers", "report"):
        os.mkdir(os.path.join(rundir, sub), 0o700)
    write_private(os.path.join(rundir, "config.json"), json.dumps(config).encode())
    return rundir


def check_private(path: str) -> None:
    """Refuse a directory or file that is not owned by this user, or that others can
    write (or a symbolic link): what it holds could run someone else's code."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise PoolError(f"cannot read {path}: {exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise PoolError(f"refusing to read pickles through a symbolic link: {path}")
    if info.st_uid != os.getuid():
        raise PoolError(f"refusing to read pickles from {path}: it belongs to uid {info.st_uid}, "
                        f"not to this user ({os.getuid()})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PoolError(f"refusing to read pickles from {path}: others can write it "
                        f"(mode {stat.filemode(info.st_mode)})")


def read_private(rundir: str, relative: str, offset: int = 0, size: Optional[int] = None) -> bytes:
    """Bytes of a pickle file of the run directory, after checking the directory, the
    file's own directory and the file."""
    path = os.path.join(rundir, relative)
    check_private(rundir)
    check_private(os.path.dirname(path))
    check_private(path)
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read() if size is None else handle.read(size)


def write_private(path: str, data: bytes) -> None:
    """Write a whole file readable by this user alone (atomically, by rename)."""
    # Per process and thread: two calls from two threads ring the bell at once.
    tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def append_record(path: str, data: bytes) -> None:
    """Append one length-prefixed record (a single writer per file: its worker). The
    file is closed after each record, so that a reader on another NFS client sees it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        view = memoryview(HEADER.pack(len(data)) + data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class RecordReader:
    """Reads the whole records appended to one file since the last call (a record cut
    short by a worker that died while writing stays unread)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[bytes]:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return []
        if size <= self.offset:
            return []
        check_private(self.path)
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(size - self.offset)
        records = []
        at = 0
        while at + HEADER.size <= len(data):
            (length,) = HEADER.unpack_from(data, at)
            end = at + HEADER.size + length
            if end > len(data):
                break
            records.append(data[at + HEADER.size:end])
            at = end
        self.offset += at
        return records
