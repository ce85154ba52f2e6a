"""``--joblog FILE``: one line per attempt in GNU parallel's joblog format.

    Seq  Host  Starttime  JobRuntime  Send  Receive  Exitval  Signal  Command

tab-separated, with a header line, so that GNU parallel's ``--resume``/``--resume-failed``
and the scripts written for its joblogs read it. Differences, because many minions on
many hosts may share one file:

* the file is appended to, never truncated: the header is written once, by whoever
  finds the file empty;
* every attempt that ran is a line (a retried param has one per attempt), written with
  one ``write`` on an ``O_APPEND`` descriptor under a POSIX lock (``lockf``) of the whole
  file: the lock makes appends from several hosts whole lines on NFS too, where
  ``O_APPEND`` alone is not atomic between clients;
* ``Host`` is the host name (GNU parallel writes ``:`` for the local host);
  ``Send``/``Receive`` are 0 (nothing is transferred);
* ``Seq`` is the command's ``{#}``: the line number with the file engine (what GNU
  parallel's ``--resume-failed`` expects on the same input), else a per-minion counter;
* tabs and newlines of a command are written as ``\\t`` and ``\\n``;
* the file is never opened through a symbolic link, and must be a regular file (a
  FIFO is refused at start, not waited on).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
from typing import Callable, Optional

from ..callbacks.command.builder import shell_line
from ..callbacks.task_io import UnsafeFile, open_regular
from ..errors import ConfigError
from ..minion.hooks import Hook
from ..reporters.base import MinionInfo, TaskReport

log = logging.getLogger("minionize")

HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"
#: What gives the ``{#}`` and the argv of the command the calling thread ran last.
CommandOf = Callable[[], "tuple[Optional[str], Optional[list[str]]]"]


def joblog_line(seq: str, host: str, start: float, runtime: float,
                exit_code: Optional[int], command: str) -> str:
    """One line of the joblog. A task killed by signal N has Exitval 0 and Signal N, as
    GNU parallel writes it; an attempt without an exit code (the callback raised) -1."""
    if exit_code is None:
        exitval, signal = -1, 0
    elif exit_code < 0:
        exitval, signal = 0, -exit_code
    else:
        exitval, signal = exit_code, 0
    command = command.replace("\t", "\\t").replace("\n", "\\n")
    return f"{seq}\t{host}\t{start:.3f}\t{runtime:10.3f}\t0\t0\t{exitval}\t{signal}\t{command}\n"


class Joblog(Hook):
    """Appends a line per attempt that ran (see the module)."""

    name = "joblog"

    def __init__(self, path: str, *, host: Optional[str] = None,
                 command_of: Optional[CommandOf] = None) -> None:
        self.path = path
        self.host = host or socket.gethostname()
        self.command_of = command_of
        self._fd: Optional[int] = None
        self._lock = threading.Lock()  # POSIX locks do not exclude this process's threads
        self._header_seen = False
        self._started = threading.local()

    def before_run(self, minion: MinionInfo) -> None:
        self.start_log()

    def start_log(self) -> None:
        """Open the file for appending (ConfigError when it cannot be, or when it is a
        symbolic link or not a regular file: a FIFO is refused, never waited on)."""
        try:
            self._fd = open_regular(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        except UnsafeFile as exc:
            raise ConfigError(f"MINION_JOBLOG={self.path!r}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"MINION_JOBLOG={self.path!r} cannot be opened: {exc.strerror}") from None

    def task_starting(self, task: object) -> None:
        # Called in the slot thread that runs the task, as task_settled is: an attempt
        # settled without running (a param that could not be decoded) is not a job.
        self._started.flag = True

    def task_settled(self, report: TaskReport) -> None:
        if not getattr(self._started, "flag", False):
            return
        self._started.flag = False
        seq, argv = self.command_of() if self.command_of else (None, None)
        self.write(report, seq, argv)

    def write(self, report: TaskReport, seq: Optional[str], argv: Optional[list[str]]) -> None:
        """Append the line of ``report`` (never raises: a joblog must not stop a minion)."""
        if seq is None:
            seq = report.param_id if str(report.param_id).isdecimal() else "0"
        command = shell_line(argv) if argv else ""
        line = joblog_line(seq, self.host, report.start, report.duration, report.exit_code,
                           command)
        fd = self._fd
        if fd is None:
            return
        with self._lock:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                try:
                    if not self._header_seen:
                        self._header_seen = True
                        if os.fstat(fd).st_size == 0:
                            line = HEADER + line
                    os.write(fd, line.encode("utf-8", "surrogateescape"))
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN)
            except OSError as exc:
                log.warning("could not write the joblog %s: %s",
                                                       self.path, exc)

    def after_run(self, exit_code: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
