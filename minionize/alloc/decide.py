"""What the allocator does after one look at the queue, the reports and the scheduler.

:func:`decide` is pure: an :class:`Observation` (what was seen) and the user's
:class:`Bounds` in, a :class:`Decision` out (how many minions to submit, whether to
cancel the pending jobs, stop or exit, and why), so that every rule is tested alone and
``--dry-run`` shows the very decision a real run would make.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Bounds:
    """The user's bounds: at most ``max_minions`` alive or pending, at least
    ``min_minions`` while there is work (or always, with ``forever``); a minion is worth
    a job when it gets ``tasks_per_minion`` params of the backlog, or, once the minions'
    throughput is known, ``time_per_minion`` seconds of work."""

    max_minions: int
    min_minions: int = 0
    tasks_per_minion: int = 1
    time_per_minion: Optional[float] = None
    forever: bool = False
    #: Jobs that end without starting a task, in a row, that stop the allocator.
    max_broken: int = 3


@dataclass(frozen=True)
class Observation:
    """One look: the queue's backlog (todo + expired leases) and params in flight, the
    minions alive (a report heartbeat, or a running job whose minion has not said it
    finished), the jobs pending, the live minions' throughput (tasks a second, None: unknown),
    the seconds a job waits before it starts (None: unknown), and the jobs in a row that
    ended without starting a task, with what the scheduler said of the last one."""

    backlog: int
    in_flight: int
    live: int
    pending: int
    throughput: Optional[float] = None
    start_wait: Optional[float] = None
    broken: int = 0
    broken_why: str = ""


@dataclass(frozen=True)
class Decision:
    """What to do: ``submit`` minions (one array), ``cancel_pending`` jobs, ``stop``
    (a broken job: ``why`` says it), ``finished`` (the queue drained and its minions
    ended); ``target`` is the number of minions the queue needs, ``why`` one clause."""

    target: int
    submit: int = 0
    cancel_pending: bool = False
    stop: bool = False
    finished: bool = False
    why: str = ""


def wanted(seen: Observation, bounds: Bounds) -> tuple[int, str]:
    """The minions the backlog alone asks for, within the bounds, and why."""
    if seen.backlog <= 0:
        floor = bounds.min_minions if bounds.forever else 0
        return floor, "queue drained" if not floor else f"no backlog, --min-minions {floor}"
    rate = seen.throughput / seen.live if seen.throughput and seen.live else None
    if bounds.time_per_minion and rate:
        work = seen.backlog / rate
        need = math.ceil(work / bounds.time_per_minion)
        why = f"{work:.0f} s of work at {rate:.2f} tasks/s a minion, {bounds.time_per_minion:g} s each"
    else:
        need = math.ceil(seen.backlog / max(1, bounds.tasks_per_minion))
        why = f"backlog {seen.backlog} / {bounds.tasks_per_minion} per minion"
    if need > bounds.max_minions:
        return bounds.max_minions, f"{why}, capped by --max-minions {bounds.max_minions}"
    if need < bounds.min_minions:
        return bounds.min_minions, f"{why}, raised to --min-minions {bounds.min_minions}"
    return need, why


def decide(seen: Observation, bounds: Bounds) -> Decision:
    """The decision for ``seen`` under ``bounds`` (see the module docstring)."""
    if seen.broken >= bounds.max_broken:
        return Decision(0, stop=True, why=(
            f"{seen.broken} jobs in a row ended without starting a task: {seen.broken_why}"))
    target, why = wanted(seen, bounds)
    supply = seen.live + seen.pending
    if seen.backlog <= 0 and not bounds.forever:
        # Nothing to take: a pending job would start for nothing (unless a lease
        # expires, and then the backlog asks for a new one).
        if seen.pending:
            return Decision(0, cancel_pending=True, why="nothing todo: pending jobs cancelled")
        if seen.in_flight > 0:
            return Decision(0, why="nothing todo: waiting for the params in flight")
        if supply == 0:
            return Decision(0, finished=True, why="queue drained and its minions finished")
        return Decision(0, why="queue drained: waiting for the minions to finish")
    missing = target - supply
    if missing <= 0:
        return Decision(target, why=f"{why}: enough minions")
    if seen.live and seen.throughput and seen.backlog > 0:
        drain = seen.backlog / seen.throughput
        wait = seen.start_wait
        if wait is not None and drain < wait and supply >= bounds.min_minions:
            return Decision(target, why=(
                f"{why}: the live minions drain it in {drain:.0f} s, a new job starts in "
                f"{wait:.0f} s"))
    return Decision(target, submit=missing, why=why)
