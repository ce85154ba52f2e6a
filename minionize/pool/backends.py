"""Where the pool's worker minions run: local processes, or the tasks of a SLURM array.

A backend starts workers, says how each one is doing (``alive``, ``lost``,
``finished``, the words of ``minion-status``), starts replacements, and stops them all.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

from .errors import PoolError

#: How long workers get to stop gracefully (they give their chunk back) before SIGKILL.
STOP_SECONDS = 5.0


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


class Backend:
    """Starts, watches and stops the worker minions of one run directory."""

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

    def wait(self, timeout: float) -> bool:
        """Wait for every worker to finish by itself (after ``closed``); True if they did."""
        deadline = time.monotonic() + timeout
        while any(w.state in ("alive", "starting") for w in self.poll()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


class LocalBackend(Backend):
    """Worker minions as child processes of the caller, each in its own session (so a
    Ctrl-C reaches the caller alone, which then stops them all)."""

    def __init__(self, rundir: str) -> None:
        super().__init__(rundir)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._count = 0

    def start(self, count: int) -> None:
        for _ in range(count):
            name = f"w{self._count}"
            self._count += 1
            log = os.open(os.path.join(self.rundir, "workers", f"{name}.log"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                proc = subprocess.Popen(
                    worker_command(self.rundir, name, os.getpid()),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                )
            except OSError as exc:
                raise PoolError(f"cannot start a worker: {exc}") from None
            finally:
                os.close(log)
            self._procs[name] = proc
            self.workers.append(PoolWorker(name, proc.pid, socket.gethostname(), "alive"))

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

    def lost_reason(self, worker: PoolWorker) -> str:
        code = self._procs[worker.name].returncode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stop(self) -> None:
        live = [p for p in self._procs.values() if p.poll() is None]
        for proc in live:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in live:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        self.poll()


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
