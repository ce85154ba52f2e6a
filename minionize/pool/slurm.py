"""The SLURM backend: the pool's workers are the tasks of one ``sbatch --array`` job.

One array task is one worker minion (never one job per item). The batch script holds
the Python to run and the run directory, nothing else: the job gets the caller's
environment from sbatch itself (``--export=ALL``, its default), so no variable, and no
secret, is ever written to a file. Array tasks that leave the queue without saying they
finished (``squeue``, then ``sacct`` for their final state) are lost: their chunks come
back when their leases expire, and the pool submits replacements, up to a limit. Stopping
the pool is one ``scancel`` for every job it submitted.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Optional

from .backends import Backend, PoolWorker, read_state, wait_until
from .errors import PoolError
from .rundir import write_private

#: squeue is asked at most this often (it is a request to the controller).
SQUEUE_SECONDS = 1.0
#: How long terminate waits for the array tasks to leave the queue after scancel.
CANCEL_WAIT_SECONDS = 15.0
COMMAND_TIMEOUT = 30.0

SCRIPT = """\
#!/bin/sh
# One worker minion of a minionize pool per array task. No environment is written here:
# the job has the submitting one (sbatch --export=ALL, the default).
exec {python} -m minionize.pool.worker {rundir} --name "s${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
"""


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise PoolError(f"{argv[0]} not found: the slurm backend needs SLURM's commands on PATH") from None
    except subprocess.TimeoutExpired:
        raise PoolError(f"{argv[0]} did not answer in {COMMAND_TIMEOUT:g}s") from None


class SlurmBackend(Backend):
    """Workers as the tasks of SLURM array jobs (one job per :meth:`start`)."""

    poll_seconds = 0.2

    def __init__(self, rundir: str, sbatch_args: Sequence[str] = ()) -> None:
        super().__init__(rundir)
        self.sbatch_args = list(sbatch_args)
        self.jobs: list[str] = []
        self.reasons: dict[str, str] = {}
        self.directory = os.path.join(rundir, "slurm")
        self.script = os.path.join(self.directory, "workers.sbatch")
        self._polled = 0.0

    def start(self, count: int) -> None:
        if not os.path.exists(self.script):
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            text = SCRIPT.format(python=shlex.quote(sys.executable), rundir=shlex.quote(self.rundir))
            write_private(self.script, text.encode())
            os.chmod(self.script, 0o700)
        argv = ["sbatch", "--parsable", f"--array=0-{count - 1}", "--job-name=minionize-pool",
                f"--output={os.path.join(self.directory, '%A_%a.out')}", *self.sbatch_args, self.script]
        done = _run(argv)
        if done.returncode != 0:
            said = done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}"
            raise PoolError(f"sbatch refused the pool's workers: {said}")
        job = done.stdout.strip().split(";")[0]
        self.jobs.append(job)
        self.workers.extend(PoolWorker(f"s{job}_{i}") for i in range(count))
        self._polled = 0.0

    def poll(self) -> list[PoolWorker]:
        watched = [w for w in self.workers if w.state in ("starting", "alive")]
        if not watched or time.monotonic() - self._polled < SQUEUE_SECONDS:
            return self.workers
        self._polled = time.monotonic()
        queued = self._squeue()
        if queued is None:
            return self.workers  # squeue failed: look again later
        gone: list[PoolWorker] = []
        for worker in watched:
            info = read_state(self.rundir, worker.name)
            if info:
                worker.pid = int(str(info["pid"]))
                worker.host = str(info["host"])
            if info.get("state") == "finished":
                worker.state = "finished"
                continue
            state = queued.get(worker.name[1:])
            if state is None:
                gone.append(worker)
            elif state == "RUNNING" and info:
                worker.state = "alive"
        if gone:
            final = self._sacct([w.name[1:] for w in gone])
            for worker in gone:
                if read_state(self.rundir, worker.name).get("state") == "finished":
                    worker.state = "finished"
                    continue
                worker.state = "lost"
                said = final.get(worker.name[1:], "state unknown: no accounting")
                if read_state(self.rundir, worker.name).get("state") == "stopped":
                    said = f"stopped by a signal: scancel or preemption; {said}"
                self.reasons[worker.name] = f"array task {worker.name[1:]} left the queue ({said})"
        return self.workers

    def reason(self, worker: PoolWorker) -> str:
        return self.reasons.get(worker.name, "lost")

    def _squeue(self) -> Optional[dict[str, str]]:
        """``{"<job>_<task>": state}`` of the pool's array tasks still in the queue."""
        done = _run(["squeue", "--noheader", "--array", f"--jobs={','.join(self.jobs)}",
                     "--format=%i %T"])
        if done.returncode != 0:
            if "Invalid job id" in done.stderr:
                return {}  # every job has left the queue
            return None
        states = {}
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def _sacct(self, tasks: list[str]) -> dict[str, str]:
        """Final states of array tasks that left the queue ({} without accounting)."""
        try:
            done = _run(["sacct", "--noheader", "--parsable2", f"--jobs={','.join(tasks)}",
                         "--format=JobID,State,ExitCode"])
        except PoolError:
            return {}
        if done.returncode != 0:
            return {}
        final = {}
        for line in done.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and "." not in parts[0]:
                final[parts[0]] = f"{parts[1]}, exit code {parts[2]}"
        return final

    def stop(self) -> None:
        """One scancel for every job of the pool; wait for their tasks to leave."""
        if not self.jobs:
            return
        _run(["scancel", *self.jobs])
        wait_until(lambda: self._squeue() == {}, CANCEL_WAIT_SECONDS, self.poll_seconds)
        for worker in self.workers:
            if worker.state in ("starting", "alive"):
                worker.state = "finished" if read_state(self.rundir, worker.name).get(
                    "state") == "finished" else "lost"
