"""The allocator's decisions against a fixed array, on a simulated scheduler.

    python bench/bench_alloc.py [--params 10000] [--max-minions 200] [--seeds 5]

A simulated cluster (simulated time, so 10,000 params take seconds): a job waits in the
queue (exponential, mean --queue-wait), its minion starts (--startup seconds), takes a
param after another (tasks of 4-6 s) until nothing is todo, then exits; a running job is
preempted (its task's param comes back at once: the minion's graceful stop) or killed
(the param comes back when its lease expires, --lease) at random. The allocator is
:func:`minionize.alloc.decide` looked at every --interval seconds, one scheduler query
each (the queue's counters and the minions' throughput as its reports give them); the
fixed array submits --max-minions jobs at the start and never replaces one.

Printed for each, over --seeds runs: how many drained the queue (a fixed array whose
minions were all preempted or killed never does), the mean time to drain (of those that
did; ``vs fixed``: the allocator's time over the fixed array's, for the seeds both
drained), idle minion-seconds (a job's time not running a task: start-up, the waiting
minion, the end of the queue), that idle time as a share of busy time, the most
scheduler queries in a minute (squeue; submissions apart), jobs submitted. Targets: at
most 2 queries a minute, idle time at most 5 % of busy time, time to drain within 10 %
of the fixed array.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from minionize.alloc.decide import Bounds, Observation, decide

TASK_SECONDS = (4.0, 6.0)
#: The window of the throughput the allocator sees (as minion-status's recent rate).
RATE_WINDOW = 60.0


@dataclass
class Cluster:
    """The simulated cluster: the queue, the jobs, the events, and what is measured."""

    params: int
    queue_wait: float
    startup: float
    lease: float
    preempt_per_hour: float
    kill_per_hour: float
    rng: random.Random
    seed: int = 0
    now: float = 0.0
    todo: int = 0
    in_flight: int = 0
    expired: int = 0
    done: int = 0
    events: list[tuple[float, int, str, int]] = field(default_factory=list)
    jobs: dict[int, str] = field(default_factory=dict)  # id -> pending, running, ended
    submitted_at: dict[int, float] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)
    finishes: deque[float] = field(default_factory=deque)
    busy: float = 0.0
    alive: float = 0.0
    started_at: dict[int, float] = field(default_factory=dict)
    task_of: dict[int, tuple[float, float]] = field(default_factory=dict)
    next_id: int = 0
    sequence: int = 0
    #: The jobs whose minion waits for the params in flight (MINION_WAIT=1, as the first
    #: task of an array of examples/slurm/minions.sbatch does): that of an array
    #: submitted when no other job runs or waits; the others do not wait.
    waiters: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.todo = self.params

    def at(self, when: float, kind: str, job: int) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (when, self.sequence, kind, job))

    def job_rng(self, job: int) -> random.Random:
        """The job's own chances (its queue wait, then its preemption and kill), the same
        for the job of that number whoever submits it: the runs compared are paired."""
        return random.Random(self.seed * 1_000_003 + job)

    def submit(self, count: int) -> None:
        if not self.pending and not self.running:  # the allocator's rule (see Plan)
            self.waiters.add(self.next_id)
        for _ in range(count):
            job = self.next_id
            self.next_id += 1
            self.jobs[job] = "pending"
            self.submitted_at[job] = self.now
            self.at(self.now + self.job_rng(job).expovariate(1 / self.queue_wait), "start", job)

    def cancel_pending(self) -> None:
        for job, state in self.jobs.items():
            if state == "pending":
                self.jobs[job] = "ended"

    @property
    def pending(self) -> int:
        return sum(1 for state in self.jobs.values() if state == "pending")

    @property
    def running(self) -> int:
        return sum(1 for state in self.jobs.values() if state == "running")

    def throughput(self) -> Optional[float]:
        while self.finishes and self.finishes[0] < self.now - RATE_WINDOW:
            self.finishes.popleft()
        return len(self.finishes) / RATE_WINDOW if self.finishes else None

    def step(self, until: float) -> None:
        """Play the events up to ``until``."""
        while self.events and self.events[0][0] <= until:
            self.now, _, kind, job = heapq.heappop(self.events)
            getattr(self, f"_{kind}")(job)
        self.now = until

    # -- what happens to a job ------------------------------------------------------
    def _start(self, job: int) -> None:
        if self.jobs[job] != "pending":
            return
        self.jobs[job] = "running"
        self.started_at[job] = self.now
        self.waits.append(self.now - self.submitted_at[job])
        hours, chance = 3600.0, self.job_rng(job)
        chance.random()  # the draw of its queue wait
        for kind, rate in (("preempt", self.preempt_per_hour), ("kill", self.kill_per_hour)):
            if rate:
                self.at(self.now + chance.expovariate(rate / hours), kind, job)
        self.at(self.now + self.startup, "take", job)

    def _take(self, job: int) -> None:
        if self.jobs[job] != "running":
            return
        if self.todo == 0 and self.expired:
            self.todo, self.expired = self.expired, 0
        if self.todo == 0 and job in self.waiters and self.in_flight:
            self.at(self.now + 1.0, "take", job)
            return
        if self.todo == 0:
            self._end(job)
            return
        self.todo -= 1
        self.in_flight += 1
        seconds = self.rng.uniform(*TASK_SECONDS)
        self.task_of[job] = (self.now, seconds)
        self.at(self.now + seconds, "finish", job)

    def _finish(self, job: int) -> None:
        if self.jobs[job] != "running" or job not in self.task_of:
            return
        began, seconds = self.task_of.pop(job)
        if abs(self.now - began - seconds) > 1e-9:
            return  # a finish scheduled for a task that was stopped
        self.busy += seconds
        self.in_flight -= 1
        self.done += 1
        self.finishes.append(self.now)
        self._take(job)

    def _preempt(self, job: int) -> None:
        if self.jobs[job] == "running" and job in self.task_of:
            self.task_of.pop(job)
            self.in_flight -= 1
            self.todo += 1
        self._end(job)

    def _kill(self, job: int) -> None:
        if self.jobs[job] == "running" and job in self.task_of:
            self.task_of.pop(job)
            self.at(self.now + self.lease, "expire", job)
        self._end(job)

    def _expire(self, job: int) -> None:
        self.in_flight -= 1
        self.expired += 1

    def _end(self, job: int) -> None:
        if self.jobs[job] == "running":
            self.alive += self.now - self.started_at[job]
            if job in self.task_of:  # ended mid-task: its time is thrown away
                self.task_of.pop(job)
        self.jobs[job] = "ended"

    @property
    def drained(self) -> bool:
        return self.done == self.params


@dataclass
class Result:
    drain: float
    idle: float
    busy: float
    #: The most scheduler queries in a minute.
    queries: int
    jobs: int
    drained: bool

    @property
    def idle_share(self) -> float:
        return self.idle / self.busy if self.busy else 0.0



def simulate(args: argparse.Namespace, seed: int, allocator: bool) -> Result:
    cluster = Cluster(args.params, args.queue_wait, args.startup, args.lease,
                      args.preempt_per_hour, args.kill_per_hour, random.Random(seed), seed)
    bounds = Bounds(max_minions=args.max_minions, tasks_per_minion=args.tasks_per_minion)
    queries: list[float] = []
    if not allocator:
        cluster.submit(args.max_minions)
    horizon = 48 * 3600.0
    while not cluster.drained and cluster.now < horizon:
        if allocator:
            queries.append(cluster.now)
            seen = Observation(
                backlog=cluster.todo + cluster.expired, in_flight=cluster.in_flight,
                live=cluster.running, pending=cluster.pending,
                throughput=cluster.throughput(), start_wait=(
                    statistics.median(cluster.waits[-50:]) if cluster.waits else None))
            decision = decide(seen, bounds)
            if decision.cancel_pending:
                cluster.cancel_pending()
            if decision.submit:
                cluster.submit(decision.submit)
        elif not cluster.events:
            break  # every fixed minion has gone: the rest is never done
        cluster.step(cluster.now + args.interval)
    drain = max(cluster.finishes) if cluster.finishes else cluster.now
    while cluster.events:  # the minions still running end with the queue
        cluster.step(cluster.events[0][0])
    for job, state in cluster.jobs.items():
        if state == "running":
            cluster.alive += cluster.now - cluster.started_at[job]
    most = max((sum(1 for q in queries if t <= q < t + 60) for t in queries), default=0)
    return Result(drain, cluster.alive - cluster.busy, cluster.busy, most, cluster.next_id,
                  cluster.drained)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=int, default=10_000)
    parser.add_argument("--max-minions", type=int, default=200)
    parser.add_argument("--tasks-per-minion", type=int, default=1)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--queue-wait", type=float, default=60.0, help="mean seconds in the queue")
    parser.add_argument("--startup", type=float, default=3.0)
    parser.add_argument("--lease", type=float, default=300.0)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.params} params of 4-6 s, up to {args.max_minions} minions, queue wait mean "
          f"{args.queue_wait:g} s, start-up {args.startup:g} s, poll {args.interval:g} s, "
          f"{args.seeds} seeds")
    print(f"{'scenario':<30} {'who':<10} {'drained':<7} {'drain s':>8} {'idle s':>8} "
          f"{'idle/busy':>9} {'most q/min':>11} {'jobs':>5} {'vs fixed':>9}")
    for label, preempt, kill in (("quiet cluster", 0.0, 0.0),
                                 ("preemptions 6/h", 6.0, 0.0),
                                 ("preemptions 1/h, kills 0.2/h", 1.0, 0.2),
                                 ("preemptions 6/h, kills 1/h", 6.0, 1.0)):
        args.preempt_per_hour, args.kill_per_hour = preempt, kill
        runs = {who: [simulate(args, seed, who == "allocator") for seed in range(args.seeds)]
                for who in ("allocator", "fixed")}
        both = [(a.drain, f.drain) for a, f in zip(runs["allocator"], runs["fixed"])
                if a.drained and f.drained]
        for who, results in runs.items():
            drained = [r for r in results if r.drained]
            drain = statistics.mean(r.drain for r in drained) if drained else math.inf
            idle = statistics.mean(r.idle for r in results)
            share = statistics.mean(r.idle_share for r in results)
            most = max(r.queries for r in results)
            jobs = statistics.mean(r.jobs for r in results)
            ratio = ""
            if who == "allocator" and both:
                ratio = f"{statistics.mean(a / f for a, f in both):.2f}"
            print(f"{label:<30} {who:<10} {len(drained)}/{len(results):<5} {drain:>8.0f} "
                  f"{idle:>8.0f} {share:>9.1%} {most:>11} {jobs:>5.0f} {ratio:>9}")


if __name__ == "__main__":
    main()
