"""The OAR backend: the pool's workers are the sub-jobs of one ``oarsub --array`` job.

One sub-job is one worker minion (never one job per item), named ``o<OAR_JOB_ID>``.
OAR gives a job **none** of the submitting environment, so the job script sets it: the
caller's environment (but for ``PWD``, ``OLDPWD``, ``SHLVL`` and the ``OAR_*``
variables, which are the job's own) is written, as ``export`` lines, into
``oar/env.sh`` of the private run directory (the directory mode 0700, the file 0600),
which ``oar/workers.oar`` (the script ``oarsub -S`` runs) reads before it starts the
worker. Secrets in the caller's environment (API tokens) are therefore in that file,
readable by this user alone, for the life of the run directory (removed at the end of
the pool, unless kept); the command line OAR shows (``oarstat``) names the script only.

``oarstat -J -f --sql`` lists the pool's sub-jobs, waiting, running and ended (OAR keeps
them in its database), with their state, exit code and events, in one query at most
every :data:`~.cluster.QUERY_SECONDS` (parsed as :mod:`minionize.alloc.oar` does): a
sub-job that ended (``oardel``, the walltime, a node lost) without its worker saying it
finished is lost, and replaced. Stopping the pool is one ``oardel`` of the sub-jobs not
ended yet.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from typing import Optional

from ..alloc.oar import Oar
from .cluster import ClusterBackend, Listing
from .errors import PoolError
from .rundir import write_private

SCRIPT = """\
#!/bin/sh
# One worker minion of a minionize pool per sub-job. OAR gives a job none of the
# submitting environment: it is read from env.sh (mode 0600) beside this script.
. {directory}/env.sh
exec {python} -m minionize.pool.worker {rundir} --name "o${{OAR_JOB_ID}}"
"""
#: Variables of the caller that are not the job's: its shell's, and OAR's own.
_NOT_PASSED = {"PWD", "OLDPWD", "SHLVL", "_"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
#: What reads oarstat's entries (the allocator's: one parser of OAR's words).
PARSER = Oar("")


def env_lines(env: dict[str, str]) -> str:
    """``env`` as ``export`` lines for ``sh`` (names a shell cannot set are left out)."""
    lines = [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items())
             if _NAME.match(key) and key not in _NOT_PASSED and not key.startswith("OAR")]
    return "\n".join(lines) + "\n"


def parse_submit(out: str) -> tuple[str, list[str]]:
    """oarsub's output: the array id and the sub-jobs' ids."""
    jobs = re.findall(r"(?m)^OAR_JOB_ID=(\d+)", out)
    if not jobs:
        raise PoolError(f"oarsub printed no job id: {out.strip()[:500]}")
    array = re.search(r"(?m)^OAR_ARRAY_ID=(\d+)", out)
    return (array.group(1) if array else jobs[0]), jobs


class OarBackend(ClusterBackend):
    """Workers as the sub-jobs of OAR array jobs (one array per :meth:`start`)."""

    backend = "oar"
    submit_name = "oarsub"
    cancel_name = "oardel"
    script_name = "workers.oar"
    script_text = SCRIPT

    def prepare(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        write_private(os.path.join(self.directory, "env.sh"), env_lines(dict(os.environ)).encode())
        super().prepare()

    def submit_env(self) -> Optional[dict[str, str]]:
        # oarsub takes the jobs' directory from PWD, which the caller may not have set.
        return {**os.environ, "PWD": os.getcwd()}

    def submit_command(self, count: int) -> list[str]:
        output = os.path.join(self.directory, "%jobid%")
        return ["oarsub", "--array", str(count), "-n", "minionize-pool", "-O", f"{output}.out",
                "-E", f"{output}.err", *self.submit_args, "-S", self.script]

    def submitted(self, out: str, count: int) -> tuple[str, list[str]]:
        array, jobs = parse_submit(out)
        return array, [f"o{job}" for job in jobs]

    def describe(self, name: str) -> str:
        return f"job {name[1:]} of array {self.job_of.get(name, '?')}"

    def listing(self) -> Optional[Listing]:
        query = f"array_id IN ({', '.join(self.jobs)})"  # ids: digits (parse_submit)
        done = self.run(["oarstat", "-J", "-f", "--sql", query])
        if done.returncode != 0:
            return None
        return self.parse_oarstat(done.stdout)

    def parse_oarstat(self, out: str) -> Optional[Listing]:
        """``oarstat -J -f`` as ``{worker name: (condition, OAR's words)}`` (None: not
        JSON, as when oarstat was cut short)."""
        try:
            entries = json.loads(out) if out.strip() else {}
        except ValueError:
            return None
        if not isinstance(entries, dict):
            return None
        listed: Listing = {}
        for entry in entries.values():
            if isinstance(entry, dict):
                job = PARSER.parse(entry)
                listed[f"o{job.label}"] = (job.condition, job.said)
        return listed

    def cancel_command(self, jobs: list[str]) -> list[str]:
        live = [name[1:] for name, job in self.job_of.items() if job in jobs and name not in self.ended]
        return ["oardel", *live]
