"""One look at what the allocator decides from: the queue's counters, the minions'
reports and the scheduler's list of jobs, made into an :class:`~.decide.Observation`.

Live minions are those whose report heartbeats (``minion-status``'s *alive*), plus the
running jobs whose minion has not said it finished (not reported yet, or a heartbeat
late); pending jobs are the scheduler's.
:class:`BrokenJobs` follows the jobs that ended: one that ran without starting a task and
failed (or never reported) counts, one that started a task clears the count, one the
cluster ended (cancelled, preempted, timed out, a node lost) changes nothing: it is
replaced.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from ..status.model import MinionStatus, Status
from .decide import Observation
from .scheduler import ENDED, PENDING, RUNNING, Job, tail


def started_a_task(minion: Optional[MinionStatus]) -> bool:
    """Whether the minion of this report started at least one task."""
    if minion is None:
        return False
    return bool(minion.done + minion.failed + minion.released + minion.in_progress
                or minion.running)


@dataclass
class BrokenJobs:
    """The jobs in a row that ended without starting a task (each ended job counted once,
    in the order they ended) and what was said of the last one."""

    count: int = 0
    why: str = ""
    counted: set[str] = field(default_factory=set)

    def follow(self, jobs: Iterable[Job], minions: Mapping[str, MinionStatus],
               tag: Optional[str] = None) -> None:
        """Count the jobs ended since the last call; a pending job that can never start
        counts at once. ``tag``: only the jobs submitted with it count (those of another
        script or other options say nothing of this one's)."""
        jobs = [job for job in jobs if tag is None or job.tag in (None, tag)]
        ended = [job for job in jobs if job.condition == ENDED and job.label not in self.counted]
        for job in sorted(ended, key=lambda j: j.ended or 0.0):
            self.counted.add(job.label)
            self.judge(job, minions.get(job.label))
        for job in jobs:
            if job.condition == PENDING and job.failed and job.label not in self.counted:
                self.counted.add(job.label)
                self.count += 1
                self.why = f"job {job.label} can never start: {job.said}"

    def judge(self, job: Job, minion: Optional[MinionStatus]) -> None:
        if started_a_task(minion):
            self.count, self.why = 0, ""
        elif job.interrupted or (job.started is None and minion is None):
            return  # the cluster's doing, or it never ran: replaced, not a failure
        elif job.failed or minion is None or minion.exit_code not in (0, None):
            self.count += 1
            exit_note = f", its minion exited {minion.exit_code}" if minion else \
                ", no minion report"
            self.why = (f"job {job.label}: {job.said}{exit_note}; the end of "
                        f"{job.output or 'its output'}:\n{tail(job.output)}")


def _minions_by_job(status: Status) -> dict[str, MinionStatus]:
    found: dict[str, MinionStatus] = {}
    for minion in status.minions:
        if minion.job:
            known = found.get(minion.job)
            if known is None or (minion.start or 0) >= (known.start or 0):
                found[minion.job] = minion
    return found


def start_wait(jobs: Iterable[Job]) -> Optional[float]:
    """The median seconds the jobs waited between submission and start (None: none
    started yet)."""
    waits = [job.started - job.submitted for job in jobs
             if job.started is not None and job.submitted is not None]
    return max(0.0, statistics.median(waits)) if waits else None


def _count(counters: Mapping[str, Any], key: str) -> int:
    value = counters.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def observe(counters: Mapping[str, Any], status: Status, jobs: list[Job],
            broken: BrokenJobs, tag: Optional[str] = None) -> Observation:
    """The observation of one poll (``broken`` follows the ended jobs of ``tag``)."""
    minions = _minions_by_job(status)
    broken.follow(jobs, minions, tag)
    alive = {minion.job or minion.name for minion in status.minions if minion.state == "alive"}
    # A running job is live until its minion says it finished: one whose heartbeat is
    # late (a loaded node) still holds its slot, and replacing it would be one too many.
    running = {job.label for job in jobs if job.condition == RUNNING and not (
        job.label in minions and minions[job.label].state == "finished")}
    pending = sum(1 for job in jobs if job.condition == PENDING and not job.failed)
    return Observation(
        backlog=_count(counters, "todo") + _count(counters, "expired"),
        in_flight=_count(counters, "in_flight"),
        live=len(alive | running),
        pending=pending,
        throughput=status.rate_recent or None,
        start_wait=start_wait(jobs),
        broken=broken.count,
        broken_why=broken.why,
    )
