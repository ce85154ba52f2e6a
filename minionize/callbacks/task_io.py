"""What a task is given and what it leaves, the same for the process and docker callbacks.

A task gets its param as JSON in ``MINION_PARAM`` (:func:`param_json`). Its output goes
to the minion's own stdout and stderr, or, with ``MINION_LOG_DIR``, to the files
``<dir>/<id>.<attempt>.out`` and ``.err`` (:func:`log_paths`, names made safe by
:func:`safe_name`). A failed attempt's :class:`~minionize.callbacks.base.Result` carries
the last lines of its stderr: at most :data:`STDERR_TAIL_LINES` lines of the last
:data:`STDERR_TAIL_BYTES` bytes, whether they were read back from the log file
(:func:`read_tail`) or kept while streaming (:class:`OutputSinks`).

The files a minion writes in a directory others may write too (logs, ``--results``,
``--joblog``) are opened by :func:`open_regular`: never through a symbolic link (neither
the file nor a directory between the one the user named and it), and never when what is
there is not a regular file (a FIFO, a socket, a directory): :class:`UnsafeFile`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import sys
import threading
from collections import deque
from typing import IO, Any, Optional

from ..errors import ConfigError

STDERR_TAIL_LINES = 20
STDERR_TAIL_BYTES = 4096

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
#: One chunk at a time on the minion's own streams, whichever task wrote it.
_OUTPUT_LOCK = threading.Lock()


def param_json(param: Any) -> str:
    """The param as JSON for ``MINION_PARAM`` (its repr, as a JSON string, if JSON cannot
    encode it)."""
    try:
        return json.dumps(param, ensure_ascii=False)
    except (TypeError, ValueError):
        return json.dumps(repr(param))


def describe_exit(code: int) -> str:
    """A task's end in words: ``exit code 3``, or ``killed by SIGKILL`` for a negative
    code (a signal, as ``subprocess`` and ``os.waitstatus_to_exitcode`` give it)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def safe_name(text: str) -> str:
    """A file-name safe form of a delivery id."""
    return _UNSAFE_NAME.sub("_", text)[:120] or "param"


def log_paths(log_dir: str, delivery_id: str, attempt: int) -> tuple[str, str]:
    """Where a task's stdout and stderr are saved: ``<dir>/<id>.<attempt>.out|.err``."""
    base = os.path.join(log_dir, f"{safe_name(delivery_id)}.{attempt}")
    return base + ".out", base + ".err"


class UnsafeFile(OSError):
    """What is at a path a minion writes is a symbolic link, or not a regular file: it is
    not opened (the message names the path and what it is)."""

    def __str__(self) -> str:
        return str(self.strerror)


#: Open flags that never follow a symbolic link at the last component, nor wait on a FIFO.
_SAFE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def open_regular(path: str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC, *,
                 root: Optional[str] = None, make_dirs: bool = False, mode: int = 0o644) -> int:
    """Open ``path`` (for writing by default) without following a symbolic link: not at
    its last component, nor at any directory below ``root`` (a directory that holds it;
    by default, its own directory), which ``make_dirs`` creates when missing. Raises
    :class:`UnsafeFile` when one of them is a symbolic link or the file is not a regular
    file (nothing is written), OSError when it cannot be opened. ``O_TRUNC`` truncates
    only once the file is known to be regular."""
    directory, name = os.path.split(path)
    if root is None or not path.startswith(os.path.join(root, "")):
        root = directory or "."
    parts = os.path.relpath(directory or ".", root).split(os.sep)
    parts = [part for part in parts if part not in ("", ".")]
    if ".." in parts:
        root, parts = directory or ".", []
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        walked = root
        for part in parts:
            walked = os.path.join(walked, part)
            if make_dirs:
                try:
                    os.mkdir(part, 0o755, dir_fd=dir_fd)
                except FileExistsError:
                    pass
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                raise _unsafe(exc, walked, "directory") from None
            os.close(dir_fd)
            dir_fd = next_fd
        try:
            fd = os.open(name, (flags & ~os.O_TRUNC) | _SAFE_FLAGS, mode, dir_fd=dir_fd)
        except OSError as exc:
            raise _unsafe(exc, path, "regular file") from None
    finally:
        os.close(dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(errno.EINVAL, f"{path} is not a regular file: minionize "
                             "writes only regular files (remove it, or choose another path)")
        if flags & os.O_TRUNC and info.st_size:
            os.ftruncate(fd, 0)
        if not flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unsafe(exc: OSError, path: str, kind: str) -> OSError:
    """The error of a refused open: :class:`UnsafeFile` for a symbolic link or a FIFO."""
    if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and os.path.islink(path)):
        return UnsafeFile(exc.errno, f"{path} is a symbolic link: minionize never writes "
                          f"through one (remove it; a {kind} is expected there)")
    if exc.errno in (errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
        return UnsafeFile(exc.errno, f"{path} is not a {kind}: minionize writes only "
                          "regular files (remove it, or choose another path)")
    return exc


def make_log_dir(log_dir: Optional[str]) -> None:
    """Create ``MINION_LOG_DIR`` at setup (nothing without one); ConfigError if it cannot
    be, so that a minion never runs params whose output it would lose."""
    if not log_dir:
        return
    try:
        os.makedirs(log_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"MINION_LOG_DIR={log_dir!r} cannot be created: {exc}") from None


def tail_text(data: bytes, lines: int = STDERR_TAIL_LINES) -> str:
    """The last ``lines`` lines of the last :data:`STDERR_TAIL_BYTES` bytes of ``data``."""
    text = data[-STDERR_TAIL_BYTES:].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def read_tail(path: str, lines: int = STDERR_TAIL_LINES) -> str:
    """:func:`tail_text` of a log file (``""`` if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - STDERR_TAIL_BYTES))
            return tail_text(handle.read(), lines)
    except OSError:
        return ""


class OutputSinks:
    """Where a streamed task's output goes (a container's): the log files when both paths
    are given, else the minion's own stdout and stderr. Keeps the end of stderr for the
    Result (:meth:`tail`)."""

    def __init__(self, out_path: Optional[str], err_path: Optional[str]) -> None:
        self._files: list[IO[bytes]] = []
        self._out: Optional[IO[bytes]] = None
        self._err: Optional[IO[bytes]] = None
        if out_path and err_path:  # never through a planted link (UnsafeFile)
            self._out = open(open_regular(out_path), "wb")  # noqa: SIM115 (closed in __exit__)
            self._files.append(self._out)
            try:
                self._err = open(open_regular(err_path), "wb")  # noqa: SIM115
            except BaseException:
                self._out.close()
                raise
            self._files.append(self._err)
        self._tail: deque[bytes] = deque()
        self._tail_size = 0

    def __enter__(self) -> OutputSinks:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._files:
            handle.close()

    def write(self, out: Optional[bytes], err: Optional[bytes]) -> None:
        """Pass on a chunk of stdout and/or stderr."""
        if out:
            self._emit(self._out, sys.stdout, out)
        if err:
            self._emit(self._err, sys.stderr, err)
            self._tail.append(err)
            self._tail_size += len(err)
            # Keep whole chunks, as few as cover the last STDERR_TAIL_BYTES bytes.
            while self._tail_size - len(self._tail[0]) >= STDERR_TAIL_BYTES:
                self._tail_size -= len(self._tail.popleft())

    @staticmethod
    def _emit(handle: Optional[IO[bytes]], stream: Any, data: bytes) -> None:
        if handle is not None:
            handle.write(data)
            return
        with _OUTPUT_LOCK:
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                buffer.write(data)
            else:
                stream.write(data.decode("utf-8", "replace"))
            stream.flush()

    def tail(self) -> str:
        """The last lines of the stderr written so far (see :func:`tail_text`)."""
        return tail_text(b"".join(self._tail))
