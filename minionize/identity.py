"""Who a minion is: enough to find it on a cluster (host, pid, scheduler job, pod).

Shared by the minion loop, the reporters, the sweep queue (which names its lease owners
with it) and ``minion-status``: a core type that imports nothing of the package.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

JOB_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "OAR_JOB_ID",
    "OAR_ARRAY_ID",
    "OAR_ARRAY_INDEX",
    "JOB_ID",
    "SGE_TASK_ID",
    "PBS_JOBID",
    "PBS_ARRAY_INDEX",
    "LSB_JOBID",
    "LSB_JOBINDEX",
)
#: The variable each scheduler sets in every job it runs, in the order they are tried when
#: a job has several (a job submitted from inside another may carry the other's).
JOB_MARKERS = (
    ("slurm", "SLURM_JOB_ID"),
    ("oar", "OAR_JOB_ID"),
    ("sge", "SGE_TASK_ID"),
    ("pbs", "PBS_JOBID"),
    ("lsf", "LSB_JOBID"),
)
#: Variables read only in a job of their scheduler, named by its marker: Grid Engine's
#: job id has a name other programs use too (``SGE_TASK_ID`` is ``undefined`` outside an
#: array); an array index means nothing outside its scheduler's job.
READ_IN_JOB_OF = {
    "JOB_ID": "SGE_TASK_ID",
    "SGE_TASK_ID": "SGE_TASK_ID",
    "PBS_ARRAY_INDEX": "PBS_JOBID",
    "LSB_JOBINDEX": "LSB_JOBID",
}
#: A value saying "not an array task": Grid Engine's ``undefined``, LSF's index 0.
NOT_AN_ARRAY_TASK = {"SGE_TASK_ID": "undefined", "LSB_JOBINDEX": "0"}


@dataclass
class MinionInfo:
    """Who this minion is: enough to find it on a cluster."""

    minion_id: str
    host: str
    pid: int
    start: float
    jobs: dict[str, str] = field(default_factory=dict)
    pod: Optional[str] = None
    engine: str = ""
    concurrency: int = 1

    @classmethod
    def current(cls, env: Mapping[str, str] | None = None) -> MinionInfo:
        """This process, with the scheduler's and Kubernetes' variables of ``env``."""
        env = os.environ if env is None else env
        pod = env.get("HOSTNAME") if env.get("KUBERNETES_SERVICE_HOST") else None
        return cls(
            minion_id=uuid.uuid4().hex[:12],
            host=socket.gethostname(),
            pid=os.getpid(),
            start=time.time(),
            jobs=scheduler_jobs(env),
            pod=pod,
        )

    @property
    def job_label(self) -> str:
        """``1234_5`` for an array task, ``1234`` for a job, ``""`` outside a scheduler."""
        return job_label(self.jobs)

    def to_dict(self) -> dict[str, Any]:
        """As written in a report's start record."""
        return asdict(self)


def job_scheduler(env: Mapping[str, str]) -> str:
    """``slurm``, ``oar``, ``sge``, ``pbs`` or ``lsf``: the scheduler whose job this
    process runs in, the first of :data:`JOB_MARKERS` set in ``env``; ``""`` outside."""
    return next((name for name, marker in JOB_MARKERS if env.get(marker)), "")


def scheduler_jobs(env: Mapping[str, str]) -> dict[str, str]:
    """The scheduler's variables (:data:`JOB_VARIABLES`) set in ``env``."""
    return {
        name: env[name]
        for name in JOB_VARIABLES
        if env.get(name)
        and env[name] != "undefined"
        and env[name] != NOT_AN_ARRAY_TASK.get(name)
        and env.get(READ_IN_JOB_OF.get(name, name))
    }


def job_label(jobs: Mapping[str, str]) -> str:
    """``1234_5`` for an array task (``1234.5`` on Grid Engine, as qstat and qdel name
    it; ``1234[5]`` on PBS and LSF, as qstat, qdel, bjobs and bkill do), ``1234`` for a
    job, ``""`` outside a scheduler, from the scheduler's variables
    (:data:`JOB_VARIABLES`) a minion found."""
    if "SLURM_ARRAY_JOB_ID" in jobs and "SLURM_ARRAY_TASK_ID" in jobs:
        return f"{jobs['SLURM_ARRAY_JOB_ID']}_{jobs['SLURM_ARRAY_TASK_ID']}"
    if "SLURM_JOB_ID" in jobs:
        return jobs["SLURM_JOB_ID"]
    if "OAR_JOB_ID" in jobs:
        return jobs["OAR_JOB_ID"]
    if "JOB_ID" in jobs and "SGE_TASK_ID" in jobs:
        return f"{jobs['JOB_ID']}.{jobs['SGE_TASK_ID']}"
    if "JOB_ID" in jobs:
        return jobs["JOB_ID"]
    if "PBS_JOBID" in jobs:
        # PBS Pro and OpenPBS name an array task 1234[5].server: the server is dropped.
        job = jobs["PBS_JOBID"].split(".", 1)[0]
        index = jobs.get("PBS_ARRAY_INDEX")
        return f"{job}[{index}]" if index and "[" not in job else job
    if "LSB_JOBID" in jobs and "LSB_JOBINDEX" in jobs:
        return f"{jobs['LSB_JOBID']}[{jobs['LSB_JOBINDEX']}]"
    return jobs.get("LSB_JOBID", "")
