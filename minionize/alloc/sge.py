"""Grid Engine for the allocator: ``qsub -t`` to submit, one ``qstat -xml`` a poll to list.

qstat lists only the jobs that wait or run: a job that ended is one that qstat listed
and lists no more (:class:`GridEngine` remembers what it saw, for the life of the
allocator; it ran if qstat saw it run or its output file exists), its end told by its
minion's report (a job that ran and never reported, or
whose minion failed before its first task, counts as broken), its output at the path
the allocator gave it (``-o``). ``Eqw`` (a job Grid Engine could not start) never starts.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from dataclasses import replace
from typing import Optional

from .scheduler import ENDED, PENDING, RUNNING, Job, SchedulerError, Submission, run, user

#: Job states that run (or are about to), and those of a job that will never start.
_RUNNING = ("r", "t", "Rr", "Rt", "s", "S", "T", "dr", "dt")
_ERROR = "E"
#: Seconds an ended job is remembered (as slurmctld's MinJobAge, longer).
FORGET_AFTER = 3600.0


class GridEngine:
    """Grid Engine's commands, run with ``env`` (None: this process's environment);
    ``output_dir``: where the jobs' output goes (``-o``, stdout and stderr joined)."""

    name = "Grid Engine"
    query_command = "qstat"

    def __init__(self, output_dir: str, env: Optional[Mapping[str, str]] = None) -> None:
        self.output_dir = output_dir
        self.env = env
        self.seen: dict[str, Job] = {}

    def output(self, name: str, label: str) -> str:
        return os.path.join(self.output_dir, f"{name}-{label}.out")

    def submit_command(self, submission: Submission) -> list[str]:
        output = os.path.join(submission.output_dir, "$JOB_NAME-$JOB_ID.$TASK_ID.out")
        return ["qsub", "-terse", "-V", "-j", "y", "-t", f"1-{submission.count}",
                "-N", submission.name, "-o", output, *submission.options,
                submission.script, *submission.args]

    def submit(self, submission: Submission) -> str:
        env = {**(self.env or os.environ), **(submission.env or {})}
        number = run(self.submit_command(submission), env).strip().split(".")[0]
        # Known before qstat lists them: a job may start and end between two looks.
        for task in range(1, submission.count + 1):
            label = f"{number}.{task}"
            self.seen[label] = Job(label, PENDING, said="submitted", submitted=time.time(),
                                   output=self.output(submission.name, label),
                                   tag=submission.tag)
        return number

    def jobs(self, name: str) -> list[Job]:
        out = run(["qstat", "-xml", "-g", "d", "-u", user()], self.env)
        try:
            root = ElementTree.fromstring(out)
        except ElementTree.ParseError as error:
            raise SchedulerError(f"qstat: unreadable XML ({error})", transient=True) from None
        listed: dict[str, Job] = {}
        for entry in root.iter("job_list"):
            if entry.findtext("JB_name") != name:
                continue
            job = self.parse(entry, name)
            listed[job.label] = job
        now = time.time()
        for label, job in list(self.seen.items()):
            if job.ended is not None and now - job.ended > FORGET_AFTER:
                del self.seen[label]
                continue
            if label not in listed and job.condition != ENDED:
                if job.said == "submitted" and ran(job) is None and now - (job.submitted or now) < IN_TRANSIT:
                    continue  # not listed yet, not started: qstat shows it a moment later
                self.seen[label] = Job(label, ENDED, said="ended (qstat lists it no more)",
                                       submitted=job.submitted, started=ran(job),
                                       ended=now, output=job.output, tag=job.tag)
        for label, job in listed.items():
            known = self.seen.get(label)
            if known is not None:
                job = replace(job, started=job.started or known.started, tag=known.tag)
            self.seen[label] = job
        return list(self.seen.values())

    def parse(self, entry: ElementTree.Element, name: str) -> Job:
        """One ``job_list`` of qstat's XML (an array task, with ``-g d``) as a Job."""
        number = entry.findtext("JB_job_number") or ""
        task = (entry.findtext("tasks") or "").strip()
        label = f"{number}.{task}" if task else number
        state = entry.findtext("state") or ""
        if _ERROR in state:
            condition, failed = PENDING, True
        elif state in _RUNNING:
            condition, failed = RUNNING, False
        else:
            condition, failed = PENDING, False
        said = f"state {state}" + (f" (qstat -j {number} says why)" if failed else "")
        return Job(label, condition, said=said, failed=failed,
                   submitted=epoch(entry.findtext("JB_submission_time")),
                   started=epoch(entry.findtext("JAT_start_time")),
                   output=self.output(name, label))

    def cancel_pending(self, name: str) -> None:
        waiting = [job.label for job in self.seen.values()
                   if job.condition == PENDING and not job.failed]
        if waiting:
            run(["qdel", *waiting], self.env)


#: Seconds a task just submitted may be missing from qstat (dispatched, not yet shown)
#: without being taken for ended, while it has not started (no output file).
IN_TRANSIT = 30.0


def ran(job: Job) -> Optional[float]:
    """When a job that qstat lists no more started: as qstat said, else when its output
    file was made (a job can start and end between two looks); None: it never ran."""
    if job.started is not None:
        return job.started
    try:
        return os.path.getmtime(job.output) if job.output else None
    except OSError:
        return None


def epoch(text: Optional[str]) -> Optional[float]:
    """qstat's local time (``2026-12-04T03:11:12``, maybe with milliseconds) in epoch
    seconds; None: none."""
    if not text:
        return None
    try:
        return time.mktime(time.strptime(text.split(".")[0], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
