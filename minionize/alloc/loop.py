"""The allocator's loop: look, decide, act, wait; one log line per decision.

Each poll reads the queue's counters and the minions' reports (files: cheap) and asks
the scheduler once for its jobs (:class:`Pacer` spaces those queries and backs off when
the scheduler is slow or fails, saying so). Nothing is kept between runs: the jobs are
found by name, the minions by their reports, so an allocator killed and started again
goes on where the last one was; :func:`hold_lock` keeps a second copy on the same queue
from doubling the jobs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from ..errors import EXIT_HALTED, EXIT_OK, MinionizeError
from ..status.allocator import AllocDecision, write_decision
from ..status.read import read_status
from .decide import Bounds, Decision, Observation, decide
from .observe import BrokenJobs, observe
from .scheduler import Scheduler, SchedulerError, Submission

#: The longest wait between two scheduler queries when backing off.
MOST_WAIT = 600.0
#: A query slower than this (and than half the interval) makes the next one wait longer.
SLOW_QUERY = 5.0


class Pacer:
    """The wait before the next scheduler query: ``interval``, doubled (up to
    :data:`MOST_WAIT`) after each slow or failed query, back to ``interval`` once the
    scheduler answers quickly again; every change is said."""

    def __init__(self, interval: float, say: Callable[[str], None], command: str) -> None:
        self.interval = interval
        self.wait = interval
        self.say = say
        self.command = command
        self.queries = 0

    def answered(self, took: float) -> None:
        self.queries += 1
        if took > max(SLOW_QUERY, self.interval / 2):
            self._back_off(f"{self.command} took {took:.1f} s")
        elif self.wait != self.interval:
            self.wait = self.interval
            self.say(f"{self.command} answers again in {took:.1f} s: next query in "
                     f"{self.interval:g} s")

    def failed(self, error: Exception) -> None:
        self.queries += 1
        self._back_off(f"{self.command} failed ({error})")

    def _back_off(self, what: str) -> None:
        self.wait = min(MOST_WAIT, max(self.wait * 2, self.interval))
        self.say(f"{what}: backing off, next query in {self.wait:g} s")


@dataclass(frozen=True)
class Plan:
    """What the allocator submits (``submission``, whose count each decision sets) and
    where the minions report."""

    submission: Submission
    report_dir: str
    #: The queue, as the minions' reports name it (``sweep queue /abs/sweeps``).
    queue: str = ""


def decision_record(seen: Observation, decision: Decision, plan: Plan,
                    scheduler: str) -> AllocDecision:
    """The decision as ``minion-status`` shows it (target, live, pending, backlog, in
    flight, act, why), made now, for ``plan``'s queue and jobs."""
    if decision.stop:
        act = "stop"
    elif decision.finished:
        act = "exit"
    elif decision.submit:
        act = f"submit {decision.submit}"
    elif decision.cancel_pending:
        act = f"cancel {seen.pending} pending"
    else:
        act = "submit nothing"
    why = decision.why.split(":")[0] if decision.stop else decision.why  # act says the rest
    return AllocDecision(
        t=time.time(), queue=plan.queue, name=plan.submission.name, scheduler=scheduler,
        target=decision.target, live=seen.live, pending=seen.pending, backlog=seen.backlog,
        in_flight=seen.in_flight, act=act, why=why)


@dataclass
class Allocator:
    """Keeps the minions of ``engine``'s queue near what it needs (see :mod:`.decide`):
    a look every ``interval`` seconds (longer while the scheduler is slow), each
    decision and act said through ``say``; ``dry_run``: one look, nothing submitted."""

    scheduler: Scheduler
    engine: Any
    plan: Plan
    bounds: Bounds
    interval: float
    say: Callable[[str], None]
    dry_run: bool = False
    sleep: Callable[[float], None] = time.sleep
    submitted: int = 0
    unrecorded: bool = False
    pacer: Pacer = field(init=False)
    broken: BrokenJobs = field(init=False, default_factory=BrokenJobs)

    def __post_init__(self) -> None:
        self.pacer = Pacer(self.interval, self.say, self.scheduler.query_command)

    def run(self) -> int:
        """Poll until the queue is drained and its minions finished (never, with
        ``forever``) or a broken job stops it; the exit code."""
        while True:
            code = self.poll()
            if code is not None or self.dry_run:
                return EXIT_OK if code is None else code
            self.sleep(self.pacer.wait)

    def poll(self) -> Optional[int]:
        """One look, one decision, one act; an exit code when it is over.

        The queue's counters that decide are read last, after the scheduler and the
        reports: a minion ends when the queue has nothing for it, so one seen finished
        is seen beside the queue that drained (counters read before a slow query, beside
        reports read after it, once asked for jobs to replace minions that had just
        drained the queue). A first read checks that the queue can be read at all, so
        that an unreadable one costs no scheduler query."""
        if self._counters() is None:
            return None  # no scheduler query for a queue that cannot be read
        name = self.plan.submission.name
        started = time.monotonic()
        try:
            jobs = self.scheduler.jobs(name)
        except SchedulerError as error:
            self.pacer.failed(error)
            return None
        self.pacer.answered(time.monotonic() - started)
        status = read_status(self.plan.report_dir)
        counters = self._counters()
        if counters is None:
            return None
        seen = observe(counters, status, jobs, self.broken, self.plan.submission.tag)
        decision = decide(seen, self.bounds)
        record = decision_record(seen, decision, self.plan, self.scheduler.name)
        self.say(record.line())
        if not self.dry_run:
            self._record(record)
        return self.act(decision, seen)

    def _counters(self) -> Optional[Mapping[str, Any]]:
        """The queue's counters; None (said) when it cannot be read."""
        try:
            counters: Mapping[str, Any] = self.engine.status()
        except (MinionizeError, OSError) as error:
            self.say(f"cannot read the queue ({error}): next look in {self.pacer.wait:g} s")
            return None
        return counters

    def _record(self, record: AllocDecision) -> None:
        """Leave the decision beside the reports, for ``minion-status`` (a directory
        that cannot take it is said once)."""
        try:
            os.makedirs(self.plan.report_dir, exist_ok=True)
            write_decision(self.plan.report_dir, record)
        except OSError as error:
            if not self.unrecorded:
                self.say(f"cannot record the decision for minion-status ({error})")
            self.unrecorded = True

    def act(self, decision: Decision, seen: Observation) -> Optional[int]:
        if decision.stop:
            self.say(f"stopped: {decision.why}\nfix the job script or its options, then run "
                     "minion-alloc again (its running jobs are left alone)")
            return EXIT_HALTED
        if decision.finished:
            return EXIT_OK
        if decision.cancel_pending and not self.dry_run:
            self._safely(lambda: self.scheduler.cancel_pending(self.plan.submission.name))
        if decision.submit:
            self.submit(decision.submit, first=not (seen.live or seen.pending))
        return None

    def submit(self, count: int, first: bool = False) -> None:
        """Submit ``count`` minions; an array that is not ``first`` (other minions live
        or wait) has no minion that waits for the params in flight (``MINION_WAIT=0``):
        the allocator replaces what a lost lease gives back."""
        submission = replace(self.plan.submission, count=count)
        if not first:
            submission = replace(submission, env={**(submission.env or {}), "MINION_WAIT": "0"})
        command = " ".join(self.scheduler.submit_command(submission))
        if self.dry_run:
            self.say(f"would run: {command}")
            return
        try:
            job = self.scheduler.submit(submission)
        except SchedulerError as error:
            if error.transient:
                self.pacer.failed(error)
                return
            self.broken.count += 1
            self.broken.why = f"the submission failed: {error}"
            self.say(f"submission refused: {error}")
            return
        self.submitted += count
        self.say(f"submitted {count} minion(s) as job {job}")

    def _safely(self, call: Callable[[], None]) -> None:
        try:
            call()
        except SchedulerError as error:
            self.say(f"cancelling the pending jobs failed ({error})")
