"""The Grid Engine backend: the pool's workers are the tasks of one ``qsub -t`` job.

One array task is one worker minion (never one job per item), named
``g<JOB_ID>_<SGE_TASK_ID>``. The job script holds the Python to run and the run
directory, nothing else: the job gets the caller's environment from ``qsub -V``, so no
variable is written to a file. ``qstat -xml -g d`` (one query at most every
:data:`~.cluster.QUERY_SECONDS`, read as :mod:`minionize.alloc.sge` does) lists the
tasks that wait or run; a task it lists no more, or that Grid Engine cannot start
(``Eqw``), without its worker saying it finished, is lost and replaced, with its
``qacct`` record when the accounting file has it. A task just submitted that qstat
does not show yet stays pending for :data:`~minionize.alloc.sge.IN_TRANSIT` seconds.
Stopping the pool is one ``qdel`` of its jobs.
"""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from typing import Optional

from ..alloc.scheduler import user
from ..alloc.sge import IN_TRANSIT, GridEngine
from .backends import PoolWorker, read_state
from .cluster import ENDED, PENDING, ClusterBackend, Listing
from .errors import PoolError

SCRIPT = """\
#!/bin/sh
# One worker minion of a minionize pool per array task. No environment is written here:
# the job has the submitting one (qsub -V).
exec {python} -m minionize.pool.worker {rundir} --name "g${{JOB_ID}}_${{SGE_TASK_ID}}"
"""
NAME = "minionize-pool"


def parse_qstat(out: str, jobs: list[str]) -> Optional[Listing]:
    """``qstat -xml -g d`` as ``{worker name: (condition, state)}``, the tasks of
    ``jobs`` only (None: not XML); a task that cannot start (``Eqw``) has ended."""
    try:
        root = ElementTree.fromstring(out)
    except ElementTree.ParseError:
        return None
    parser = GridEngine("")
    listed: Listing = {}
    for entry in root.iter("job_list"):
        if (entry.findtext("JB_job_number") or "") not in jobs:
            continue
        job = parser.parse(entry, NAME)
        listed["g" + job.label.replace(".", "_")] = (ENDED if job.failed else job.condition, job.said)
    return listed


def parse_qacct(out: str) -> dict[str, str]:
    """``qacct -j JOB``'s records as ``{worker name: its end in words}``."""
    final = {}
    for block in re.split(r"(?m)^=+\s*$", out):
        fields = dict(line.split(None, 1) for line in block.splitlines() if len(line.split(None, 1)) == 2)
        number, task = fields.get("jobnumber", "").strip(), fields.get("taskid", "").strip()
        if not number:
            continue
        words = f"exit status {fields.get('exit_status', '?').strip()}"
        failed = fields.get("failed", "0").strip()
        if failed != "0":
            words += f", failed {failed}"
        final[f"g{number}_{task if task.isdigit() else 1}"] = words
    return final


class SgeBackend(ClusterBackend):
    """Workers as the tasks of Grid Engine array jobs (one job per :meth:`start`)."""

    backend = "sge"
    submit_name = "qsub"
    cancel_name = "qdel"
    script_text = SCRIPT
    #: qmaster writes the accounting file every flush_time (15 s by default): a task
    #: just deleted is often not in it yet.
    unknown = "qstat lists it no more; qacct has no record of it (yet)"

    def __init__(self, rundir: str, submit_args: Sequence[str] = ()) -> None:
        super().__init__(rundir, submit_args)
        self.submitted_at: dict[str, float] = {}
        self.seen: set[str] = set()

    def submit_command(self, count: int) -> list[str]:
        output = os.path.join(self.directory, "$JOB_ID.$TASK_ID.out")
        # -cwd: the tasks start in the caller's directory, as sbatch's and oarsub's do, so
        # that the caller's own modules there import (functions travel by reference).
        return ["qsub", "-terse", "-V", "-cwd", "-S", "/bin/sh", "-t", f"1-{count}", "-N", NAME,
                "-j", "y", "-o", output, *self.submit_args, self.script]

    def submitted(self, out: str, count: int) -> tuple[str, list[str]]:
        job = out.strip().split(".")[0]
        if not job.isdigit():
            raise PoolError(f"qsub printed no job id: {out.strip()[:500]}")
        self.submitted_at[job] = time.monotonic()
        return job, [f"g{job}_{i}" for i in range(1, count + 1)]

    def describe(self, name: str) -> str:
        return f"array task {name[1:].replace('_', '.')}"

    def listing(self) -> Optional[Listing]:
        done = self.run(["qstat", "-xml", "-g", "d", "-u", user()])
        if done.returncode != 0:
            return None
        listed = parse_qstat(done.stdout, self.jobs)
        if listed is None:
            return None
        self.seen.update(listed)
        now = time.monotonic()
        for name, job in self.job_of.items():
            # qstat may show a task a moment after qsub returned, or after it was dispatched.
            if (name not in listed and name not in self.seen and not self.stopping
                    and not read_state(self.rundir, name)
                    and now - self.submitted_at.get(job, 0.0) < IN_TRANSIT):
                listed[name] = (PENDING, "submitted")
        return listed

    def final(self, workers: list[PoolWorker]) -> dict[str, str]:
        """What ``qacct`` says of the tasks' jobs ({} for a job it has no record of)."""
        final: dict[str, str] = {}
        for job in sorted({self.job_of.get(w.name, "") for w in workers} - {""}):
            try:
                done = self.run(["qacct", "-j", job])
            except PoolError:
                return final
            if done.returncode == 0:
                final.update(parse_qacct(done.stdout))
        return final

    def cancel_command(self, jobs: list[str]) -> list[str]:
        return ["qdel", *jobs]
