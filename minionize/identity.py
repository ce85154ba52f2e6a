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
)
#: Grid Engine's job id has a name other programs use too: read only in a Grid Engine job
#: (which always sets ``SGE_TASK_ID``, to ``undefined`` outside an array).
SGE_ONLY = ("JOB_ID", "SGE_TASK_ID")


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


def scheduler_jobs(env: Mapping[str, str]) -> dict[str, str]:
    """The scheduler's variables (:data:`JOB_VARIABLES`) set in ``env``."""
    sge = "SGE_TASK_ID" in env
    return {
        name: env[name]
        for name in JOB_VARIABLES
        if env.get(name) and env[name] != "undefined" and (sge or name not in SGE_ONLY)
    }


def job_label(jobs: Mapping[str, str]) -> str:
    """``1234_5`` for an array task (``1234.5`` on Grid Engine, as qstat and qdel name
    it), ``1234`` for a job, ``""`` outside a scheduler, from the scheduler's variables
    (:data:`JOB_VARIABLES`) a minion found."""
    if "SLURM_ARRAY_JOB_ID" in jobs and "SLURM_ARRAY_TASK_ID" in jobs:
        return f"{jobs['SLURM_ARRAY_JOB_ID']}_{jobs['SLURM_ARRAY_TASK_ID']}"
    if "SLURM_JOB_ID" in jobs:
        return jobs["SLURM_JOB_ID"]
    if "OAR_JOB_ID" in jobs:
        return jobs["OAR_JOB_ID"]
    if "JOB_ID" in jobs and "SGE_TASK_ID" in jobs:
        return f"{jobs['JOB_ID']}.{jobs['SGE_TASK_ID']}"
    return jobs.get("JOB_ID", "")
