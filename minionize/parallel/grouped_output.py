"""``--tag`` and ``--keep-order``: a task's output, printed whole when its param is final.

As GNU parallel does by default (``--group``), a task writes its stdout and stderr to
files, and the minion prints them when the attempt is final, so that the lines of two
tasks never mix: ``done`` or ``dead`` (a failed attempt that is retried prints nothing,
as GNU parallel prints only the last attempt of ``--retries``). ``--tag`` puts the param
and a tab before each line, on stdout and stderr, as GNU parallel does. ``--keep-order``
prints the params in the order this minion took them (the input's order with the file
engine, see :mod:`minionize.parallel.take_order`): it orders one minion's output, not the output
of several minions. At a graceful stop, what is held is printed in order.

The files are those of ``--results``, or ``--log-dir`` when given (kept), else private
temporary files (removed once printed), in a directory ``minionize-output-<owner>-*`` of
``$TMPDIR`` removed at the end of the run (a graceful stop too). A run that was killed
cannot remove it: the next run on the host that needs one removes those whose owner is
gone (see :mod:`minionize.owners`).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import threading
from typing import BinaryIO, Optional

from .. import owners as _owner
from ..callbacks.command.builder import param_text
from ..callbacks.task_io import log_paths
from ..engines.base import Delivery
from ..minion.hooks import Hook
from ..reporters.base import TaskReport
from .take_order import TakeOrder

FINAL = ("done", "dead")
#: The temporary directories' names: this, the owner (see :mod:`minionize.owners`), ``-*``.
TEMP_PREFIX = "minionize-output-"


class GroupedOutput(Hook):
    """Prints each final attempt's output whole, tagged and ordered if asked."""

    name = "grouped-output"

    def __init__(self, *, tag: bool = False, order: Optional[TakeOrder] = None,
                 stdout: Optional[BinaryIO] = None, stderr: Optional[BinaryIO] = None) -> None:
        self.tag = tag
        self.order = order
        self.stdout = stdout if stdout is not None else sys.stdout.buffer
        self.stderr = stderr if stderr is not None else sys.stderr.buffer
        self._lock = threading.Lock()
        self._held: dict[int, tuple[bytes, bytes]] = {}
        self._next = 1
        self._temp: Optional[str] = None

    # -- where the task writes -------------------------------------------------------
    def paths(self, delivery: Delivery, out: Optional[str], err: Optional[str]) -> tuple[str, str]:
        """The files of this attempt: the ones chosen already (--results, --log-dir), else
        private temporary ones."""
        if out is not None and err is not None:
            return out, err
        with self._lock:
            if self._temp is None:
                _owner.remove_stale(TEMP_PREFIX)  # what killed runs left
                self._temp = _owner.make_owned_dir(TEMP_PREFIX)
        return log_paths(self._temp, str(delivery.id), delivery.attempt)

    # -- printing --------------------------------------------------------------------
    def task_settled(self, report: TaskReport) -> None:
        out, err = report.stdout_path, report.stderr_path
        chunk: Optional[tuple[bytes, bytes]] = None
        if report.outcome in FINAL:
            tag = tag_of(report.param) if self.tag else None
            chunk = (self._read(out, tag), self._read(err, tag))
        if self._temp is not None:
            for path in (out, err):
                if path is not None and path.startswith(os.path.join(self._temp, "")):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
        if chunk is None:
            return
        number = self.order.number(str(report.param_id)) if self.order is not None else None
        with self._lock:
            if number is None or self.order is None:
                self._print(chunk)
                return
            self.order.forget(str(report.param_id))
            self._held[number] = chunk
            while self._next in self._held:
                self._print(self._held.pop(self._next))
                self._next += 1

    def after_run(self, exit_code: int) -> None:
        with self._lock:
            for number in sorted(self._held):
                self._print(self._held.pop(number))
            if self._temp is not None:
                shutil.rmtree(self._temp, ignore_errors=True)

    @staticmethod
    def _read(path: Optional[str], tag: Optional[bytes]) -> bytes:
        if path is None:
            return b""
        try:  # never through a symbolic link, nor from a FIFO (planted since it was written)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return b""
        with open(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return b""
            data = handle.read()
        return tagged(data, tag) if tag is not None else data

    def _print(self, chunk: tuple[bytes, bytes]) -> None:
        for stream, data in zip((self.stdout, self.stderr), chunk):
            if data:
                stream.write(data)
                stream.flush()


def tagged(data: bytes, tag: bytes) -> bytes:
    """Each line of ``data`` with ``tag`` and a tab before it (a last line without a
    newline gets one, as GNU parallel does)."""
    if not data:
        return data
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(tag + b"\t" + line + b"\n" for line in lines)


def tag_of(param: object) -> bytes:
    """The tag of a param: its text as an argument (tabs and newlines escaped)."""
    text = param_text(param).replace("\t", "\\t").replace("\n", "\\n")
    return text.encode("utf-8", "surrogateescape")
