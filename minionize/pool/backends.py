"""Where the pool's worker minions run: local processes, or the tasks of a SLURM array.

A backend starts workers, says how each one is doing (``alive``, ``lost``,
``finished``, the words of ``minion-status``), starts replacements, and stops them all.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .errors import PoolError

#: How long workers get to stop gracefully (they give their chunk back) before SIGKILL.
STOP_SECONDS = 5.0
#: When a worker that did not stop yet gets a second SIGTERM.
AGAIN_SECONDS = 0.5


@dataclass
class PoolWorker:
    """One worker minion of a pool."""

    name: str
    pid: Optional[int] = None
    host: Optional[str] = None
    #: ``"starting"`` (SLURM: not running yet), ``"alive"``, ``"lost"`` or ``"finished"``.
    state: str = "starting"


def read_state(rundir: str, name: str) -> dict[str, object]:
    """What a worker wrote about itself (pid, host, state), or {}."""
    try:
        with open(os.path.join(rundir, "workers", f"{name}.json")) as handle:
            info: dict[str, object] = json.load(handle)
            return info
    except (OSError, ValueError):
        return {}


def worker_command(rundir: str, name: str, parent: Optional[int] = None) -> list[str]:
    argv = [sys.executable, "-m", "minionize.pool.worker", rundir, "--name", name]
    return argv + (["--parent", str(parent)] if parent is not None else [])


def wait_until(done: Callable[[], bool], timeout: float, interval: float) -> bool:
    """Call ``done`` every ``interval`` seconds until it is true (True) or ``timeout``
    seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


class Backend:
    """Starts, watches and stops the worker minions of one run directory."""

    #: Seconds between two looks at the workers while waiting for them.
    poll_seconds = 0.05

    def __init__(self, rundir: str) -> None:
        self.rundir = rundir
        self.workers: list[PoolWorker] = []

    def start(self, count: int) -> None:
        raise NotImplementedError

    def poll(self) -> list[PoolWorker]:
        """Update and return the workers' states."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every worker now (they give their chunks back), and wait for them."""
        raise NotImplementedError

    def reason(self, worker: PoolWorker) -> str:
        """Why a lost worker was lost, in words."""
        return "lost"

    def wait(self, timeout: float) -> bool:
        """Wait for every worker to finish by itself (after ``closed``); True if they did."""
        return wait_until(
            lambda: not any(w.state in ("alive", "starting") for w in self.poll()),
            timeout, self.poll_seconds,
        )


class _Child:
    """A worker process of ours (forked or spawned), reaped without blocking."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0
                return 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


class LocalBackend(Backend):
    """Worker minions as child processes of the caller, each in its own session (so a
    Ctrl-C reaches the caller alone, which then stops them all).

    ``start="fork"`` (the default, like multiprocessing on Linux) forks the caller: a
    worker is ready in milliseconds. ``start="exec"`` runs ``python -m
    minionize.pool.worker`` instead: a fresh interpreter (a few hundred ms), which
    shares nothing with the caller.

    A worker writes to its log (``workers/<name>.log``); with ``stdout``, what it prints
    goes to the caller's standard output instead (its standard error stays in the log).
    """

    def __init__(self, rundir: str, start: str = "fork", stdout: bool = False) -> None:
        super().__init__(rundir)
        if start not in ("fork", "exec"):
            raise ValueError(f"start must be 'fork' or 'exec', not {start!r}")
        self.start_method = start
        #: The workers' standard output is the caller's.
        self.stdout = stdout
        self._procs: dict[str, _Child] = {}
        self._count = 0

    def start(self, count: int) -> None:
        for _ in range(count):
            name = f"w{self._count}"
            self._count += 1
            log = os.path.join(self.rundir, "workers", f"{name}.log")
            try:
                if self.start_method == "fork":
                    pid = self._fork(name, log)
                else:
                    pid = os.posix_spawn(
                        sys.executable, worker_command(self.rundir, name, os.getpid()), os.environ,
                        file_actions=[
                            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                            (os.POSIX_SPAWN_OPEN, 2, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                            *([] if self.stdout else [(os.POSIX_SPAWN_DUP2, 2, 1)]),
                        ],
                        setsid=True,
                    )
            except OSError as exc:
                raise PoolError(f"cannot start a worker: {exc}") from None
            self._procs[name] = _Child(pid)
            self.workers.append(PoolWorker(name, pid, socket.gethostname(), "alive"))

    def _fork(self, name: str, log: str) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        code = 70
        try:  # the worker: never returns
            os.setsid()
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if not self.stdout:
                os.dup2(fd, 1)
            os.dup2(fd, 2)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            from .worker import main

            code = main([self.rundir, "--name", name, "--parent", str(parent)])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def poll(self) -> list[PoolWorker]:
        for worker in self.workers:
            if worker.state != "alive":
                continue
            code = self._procs[worker.name].poll()
            if code is None:
                continue
            finished = read_state(self.rundir, worker.name).get("state") == "finished"
            worker.state = "finished" if finished and code == 0 else "lost"
        return self.workers

    def reason(self, worker: PoolWorker) -> str:
        code = self._procs[worker.name].returncode
        if code is not None and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def stop(self) -> None:
        live = [p for p in self._procs.values() if p.poll() is None]
        for proc in live:
            _signal_group(proc.pid, signal.SIGTERM)
        # A worker that got it while it started may not have seen it: a second one (which
        # hurries a minion) after a moment.
        deadline = time.monotonic() + AGAIN_SECONDS
        for proc in live:
            if not proc.wait(max(0.0, deadline - time.monotonic())):
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in live:
            if not proc.wait(max(0.0, deadline - time.monotonic())):
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(STOP_SECONDS)
        self.poll()


def _signal_group(pid: int, signum: int) -> None:
    """Signal the worker's process group (the worker itself, when it has not made its
    session yet: just forked)."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
