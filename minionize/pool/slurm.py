"""The SLURM backend: the pool's workers are the tasks of one ``sbatch --array`` job.

One array task is one worker minion (never one job per item). The batch script holds
the Python to run and the run directory, nothing else: the job gets the caller's
environment from sbatch itself (``--export=ALL``, its default), so no variable, and no
secret, is ever written to a file. Array tasks that leave the queue without saying they
finished (``squeue``, then ``sacct`` for their final state) are lost: their chunks come
back when their leases expire, and the pool submits replacements, up to a limit. Stopping
the pool is one ``scancel`` for every job it submitted. What the three cluster backends
share: :mod:`.cluster`.
"""

from __future__ import annotations

import os
from typing import Optional

from .backends import PoolWorker
from .cluster import PENDING, QUERY_SECONDS, RUNNING, ClusterBackend, Listing
from .errors import PoolError

#: squeue is asked at most this often (it is a request to the controller).
SQUEUE_SECONDS = QUERY_SECONDS

SCRIPT = """\
#!/bin/sh
# One worker minion of a minionize pool per array task. No environment is written here:
# the job has the submitting one (sbatch --export=ALL, the default).
exec {python} -m minionize.pool.worker {rundir} --name "s${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
"""


class SlurmBackend(ClusterBackend):
    """Workers as the tasks of SLURM array jobs (one job per :meth:`start`)."""

    backend = "slurm"
    submit_name = "sbatch"
    cancel_name = "scancel"
    script_name = "workers.sbatch"
    script_text = SCRIPT
    query_seconds = SQUEUE_SECONDS

    def submit_command(self, count: int) -> list[str]:
        return ["sbatch", "--parsable", f"--array=0-{count - 1}", "--job-name=minionize-pool",
                f"--output={os.path.join(self.directory, '%A_%a.out')}", *self.submit_args,
                self.script]

    def submitted(self, out: str, count: int) -> tuple[str, list[str]]:
        job = out.strip().split(";")[0]
        if not job.isdigit():
            raise PoolError(f"sbatch printed no job id: {out.strip()[:500]}")
        return job, [f"s{job}_{i}" for i in range(count)]

    def describe(self, name: str) -> str:
        return f"array task {name[1:]}"

    def listing(self) -> Optional[Listing]:
        """The pool's array tasks still in the queue (squeue)."""
        done = self.run(["squeue", "--noheader", "--array", f"--jobs={','.join(self.jobs)}",
                         "--format=%i %T"])
        if done.returncode != 0:
            if "Invalid job id" in done.stderr:
                return {}  # every job has left the queue
            return None
        return parse_squeue(done.stdout)

    def final(self, workers: list[PoolWorker]) -> dict[str, str]:
        """Final states of array tasks that left the queue ({} without accounting)."""
        try:
            done = self.run(["sacct", "--noheader", "--parsable2",
                             f"--jobs={','.join(w.name[1:] for w in workers)}",
                             "--format=JobID,State,ExitCode"])
        except PoolError:
            return {}
        return parse_sacct(done.stdout) if done.returncode == 0 else {}

    def cancel_command(self, jobs: list[str]) -> list[str]:
        return ["scancel", *jobs]


def parse_squeue(out: str) -> Listing:
    """``squeue --format='%i %T'`` as ``{worker name: (condition, state)}``."""
    listed: Listing = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            listed[f"s{parts[0]}"] = (RUNNING if parts[1] == "RUNNING" else PENDING, parts[1])
    return listed


def parse_sacct(out: str) -> dict[str, str]:
    """``sacct --parsable2 --format=JobID,State,ExitCode`` by worker name (the job
    steps, ``12_0.batch``, left out)."""
    final = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and "." not in parts[0]:
            final[f"s{parts[0]}"] = f"{parts[1]}, exit code {parts[2]}"
    return final
