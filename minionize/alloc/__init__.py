"""The allocator: just enough minion jobs for a queue, on SLURM, OAR or Grid Engine.

It keeps nothing of its own: the queue's counters say the backlog, the minions' reports
who is alive and how fast they go, the scheduler's list (found by job name) who waits.
:mod:`.decide` (pure) turns one look into a decision, :mod:`.loop` looks, decides and
acts each poll, :mod:`.slurm`, :mod:`.oar` and :mod:`.sge` are the schedulers behind
:class:`~.scheduler.Scheduler`, :mod:`.lock` keeps to one allocator per queue.
``minion-alloc`` (:mod:`minionize.cli.alloc`) is its command line.
"""

from __future__ import annotations

from .decide import Bounds, Decision, Observation, decide
from .lock import LockHeld, hold_lock
from .loop import Allocator, Pacer, Plan
from .oar import Oar
from .scheduler import Job, Scheduler, SchedulerError, Submission
from .sge import GridEngine
from .slurm import Slurm

__all__ = [
    "Allocator", "Bounds", "Decision", "GridEngine", "Job", "LockHeld", "Oar", "Observation", "Pacer",
    "Plan", "Scheduler", "SchedulerError", "Slurm", "Submission", "decide", "hold_lock",
]
