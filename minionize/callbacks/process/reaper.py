"""The reaper: a tiny process per minion that kills the minion's tasks when it dies.

A task runs in its own process group, so that a timeout or a stop reaches all of its
children. The price: when the minion is killed outright (``kill -KILL``, the OOM killer),
nothing stops its tasks; its leases expire and another minion runs the same params *at
the same time* as the orphans. The reaper closes that hole (on Linux).

How it works. :meth:`Reaper.start` spawns ``python -I -S -c REAPER_CODE TOKEN`` once per
minion, in its own process group (a Ctrl-C or a ``kill`` of the minion's group does not
reach it), ignoring the polite stop signals. ``TOKEN`` is random, and every task gets
``MINIONIZE_REAPER=TOKEN`` in its environment, which its children inherit. The reaper's
standard input is the read end of a pipe whose only writer is the minion (close-on-exec:
no task inherits it). The reaper sleeps in ``read`` until the minion dies, however it
dies: the kernel then closes the pipe, and the reaper finds every process whose
environment holds the token (``/proc/PID/environ``), sends SIGKILL to it (and to its
process group when it leads one), again until none is left, removes the minion's param
files and exits. When the minion ends normally, it closes the pipe the same way, and
whatever task it had to abandon goes with it.

A function's worker process (:mod:`.function`) is a fork of the minion: it closes its
copy of the pipe (:meth:`Reaper.forget_after_fork`, or a worker, or a process it forked,
would keep the reaper asleep), and puts the token in its own ``os.environ``, so that
what the function starts carries it; what the function forks without ``exec`` stays in
the worker's process group, which the worker kills when its minion is gone.

The cost per task is one more environment variable: the reaper never wakes while the
minion lives (writing each task's process group to the reaper instead would wake it
twice per task, a process competing with the tasks for the CPU).

Why not ``prctl(PR_SET_PDEATHSIG)`` in each task? (1) Tasks are started with
``os.posix_spawn`` (vfork + exec, the fast path: see ``bench/bench_process.py``), which
cannot run code in the child; ``subprocess``'s ``preexec_fn`` forces a full fork of the
interpreter and runs Python in the child, several times the cost of a spawn. (2) The
parent-death signal reaches only the process that set it, not its process group: the
task's own children would run on. (3) It fires when the parent *thread* ends, not the
parent process, so tasks would depend on which worker thread spawned them.

What is left: a process that clears its environment (``env -i``) escapes; so does
everything on a system without ``/proc`` (the reaper then only cleans up files), and
everything if the reaper itself is killed with SIGKILL before the minion (as a whole
job's cgroup is: then the scheduler kills the tasks too). A ``setsid`` grandchild, which
escapes ``--timeout`` and the graceful stop, does not escape the reaper as long as it
keeps its environment.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
from typing import Optional

log = logging.getLogger(__name__)

#: The environment variable that marks the processes of a minion's tasks.
TOKEN_VARIABLE = "MINIONIZE_REAPER"

REAPER_CODE = r"""
import os, shutil, signal, sys
for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGPIPE"):
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
mark = b"\0" + os.fsencode(sys.argv[1]) + b"\0"
dirs, pending = set(), b""
while True:
    try:
        data = os.read(0, 65536)
    except InterruptedError:
        continue
    if not data:
        break
    *lines, pending = (pending + data).split(b"\n")
    dirs.update(os.fsdecode(line[1:]) for line in lines if line[:1] == b"d")
me = os.getpid()
for _ in range(20):
    found = 0
    try:
        names = os.listdir("/proc")
    except OSError:
        break
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/" + name + "/environ", "rb") as handle:
                environ = b"\0" + handle.read()
        except OSError:
            continue
        if mark in environ:
            found += 1
            pid = int(name)
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    if not found:
        break
for path in dirs:
    shutil.rmtree(path, ignore_errors=True)
"""


class Reaper:
    """The minion's reaper process (see the module docstring). Thread-safe; every
    method is a no-op when the reaper could not be started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: Optional[int] = None
        self._fd: Optional[int] = None
        self._started = False
        self._warned = False
        #: What every task gets in its environment, for the reaper to find it.
        self.token = f"{os.getpid()}-{secrets.token_hex(8)}"

    def start(self) -> None:
        """Start the reaper once (later calls do nothing)."""
        if self._started:  # the common case, without the lock
            return
        with self._lock:
            if self._started:
                return
            self._started = True
            if not sys.executable:
                log.warning("no Python interpreter to run the reaper: tasks may outlive "
                            "a minion killed with SIGKILL")
                return
            read_end, write_end = os.pipe()
            try:
                self._pid = os.posix_spawn(
                    sys.executable,
                    [sys.executable, "-I", "-S", "-c", REAPER_CODE, f"{TOKEN_VARIABLE}={self.token}"],
                    {"PATH": os.defpath},
                    file_actions=[
                        (os.POSIX_SPAWN_DUP2, read_end, 0),
                        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    ],
                    setpgroup=0,
                )
            except OSError as exc:
                os.close(write_end)
                log.warning("cannot start the reaper (%s): tasks may outlive a minion "
                            "killed with SIGKILL", exc)
                return
            finally:
                os.close(read_end)
            # Never block a worker on a stuck reaper: drop the message instead.
            os.set_blocking(write_end, False)
            self._fd = write_end

    def clean_up(self, path: str) -> None:
        """Remove ``path`` (a directory of param files) if the minion dies."""
        self._send(b"d" + os.fsencode(path) + b"\n")

    def _send(self, message: bytes) -> None:
        with self._lock:  # never write to a descriptor that stop() closed (and reused)
            if self._fd is None:
                return
            try:
                os.write(self._fd, message)  # shorter than PIPE_BUF: one atomic write
            except OSError as exc:  # the reaper is gone, or its pipe is full
                if not self._warned:
                    self._warned = True
                    log.warning("the reaper cannot be told (%s): tasks may outlive a "
                                "minion killed with SIGKILL", exc)

    def forget_after_fork(self) -> None:
        """In a process forked from the minion (a function's worker): close its copy of
        the pipe, so that the reaper wakes when the minion dies, whatever the fork and
        its own forks live on. No lock: another thread may have held it at the fork."""
        fd, self._fd, self._pid = self._fd, None, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def stop(self) -> None:
        """Close the pipe: the reaper kills what is still registered, and exits."""
        with self._lock:
            fd, pid = self._fd, self._pid
            self._fd = self._pid = None
            self._started = False
            if fd is not None:
                os.close(fd)
        if pid is not None:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    @property
    def pid(self) -> Optional[int]:
        """The reaper's process id (None when not running)."""
        return self._pid

