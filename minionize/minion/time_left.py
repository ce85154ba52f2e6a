"""Take no param the walltime cannot finish: :func:`may_take` decides, :class:`TimeLeft`
holds what it needs and is asked by the slots before each take.

A task is expected to take ``MINION_EXPECTED_DURATION`` (``--expected-duration``) when
the user gives it, else the :data:`PERCENTILE` th percentile of the run times of the
last :data:`RECENT` tasks, times :data:`SAFETY`: those this minion ran, after those the
queue's other minions reported (the queue's record, read once at start when the minion
writes JSON reports: :mod:`minionize.reporters.run_times`). A param is taken while
the time left is at least that plus the grace period (what stopping and giving back
needs). Before any task of the queue has finished there is no estimate: the minion
takes, as long as more than the grace period is left (a first task tells how long tasks
take; refusing would leave a minion that never learns). Once the minion refuses, it takes no more: its
slots end as their tasks finish, the params it held unstarted go back untouched (no
attempt counted), and it exits 0 with nothing in flight.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Optional

from .walltime import allocation_end

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("minionize.minion")

#: Run times the estimate is made of (the most recent), and its percentile.
RECENT = 50
PERCENTILE = 90
#: The learned estimate is this much longer than the percentile (tasks vary).
SAFETY = 1.25


def may_take(left: float, expected: Optional[float], reserve: float) -> bool:
    """Whether a task expected to take ``expected`` seconds (None: no estimate yet) can
    start with ``left`` seconds left, keeping ``reserve`` seconds for the stop."""
    if expected is None:
        return left > reserve
    return left >= expected + reserve


class RunTimes:
    """The run times of the recent tasks, and their high percentile (thread-safe)."""

    def __init__(self, recent: int = RECENT, percentile: float = PERCENTILE) -> None:
        self.percentile = percentile
        self._times: collections.deque[float] = collections.deque(maxlen=recent)
        self._lock = threading.Lock()
        self._estimate: Optional[float] = None

    def record(self, seconds: float) -> None:
        with self._lock:
            self._times.append(seconds)
            ordered = sorted(self._times)
            rank = max(1, math.ceil(len(ordered) * self.percentile / 100))
            self._estimate = ordered[rank - 1]

    def estimate(self) -> Optional[float]:
        """The percentile of the recent run times; None before any task finished."""
        return self._estimate


class TimeLeft:
    """The walltime of one minion: the monotonic time it ends, how long a task takes
    (``expected``, else learned from :meth:`ran`), and the ``reserve`` kept for the
    stop (the grace period). :meth:`admits` answers a slot about to take; once it said
    no, it always says no."""

    def __init__(self, ends: float, reserve: float, expected: Optional[float] = None) -> None:
        self.ends = ends
        self.reserve = reserve
        self.expected = expected
        self.run_times = RunTimes()
        self._refused = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Optional[TimeLeft]:
        """The walltime the settings and the scheduler give; None when none is known."""
        started = time.time()
        end = allocation_end(settings.env.values, settings.walltime, started)
        if end is None:
            return None
        left = end.at - time.time() - settings.walltime_lead
        lead = f", to be done {settings.walltime_lead:g} s before its end" \
            if settings.walltime_lead else ""
        log.warning("walltime: %.0f s left, from %s%s", left, end.source, lead)
        limit = cls(time.monotonic() + left, settings.grace_period, settings.expected_duration)
        if settings.expected_duration is None:
            limit.learn_from_queue(settings)
        return limit

    def learn_from_queue(self, settings: Settings) -> None:
        """Start from the run times the queue's other minions reported (the reports of
        the same queue in ``REPORTER_JSON_DIRECTORY``, when this minion writes there)."""
        if settings.reporter != "json":
            return
        from ..reporters.json import report_directory
        from ..reporters.queue_ref import queue_ref
        from ..reporters.run_times import recent_run_times

        times = recent_run_times(report_directory(settings),
                                 queue_ref(settings.engine, settings.env.values), RECENT)
        for seconds in times:
            self.run_times.record(seconds)
        learned = self.task_time()
        if learned is not None:
            log.info("walltime: tasks of this queue take about %.1f s (%d th percentile of "
                     "the %d recent run times its minions reported, times %g)",
                     learned, PERCENTILE, len(times), SAFETY)

    def task_time(self) -> Optional[float]:
        """How long a task is expected to take (None: no estimate yet)."""
        if self.expected is not None:
            return self.expected
        learned = self.run_times.estimate()
        return None if learned is None else learned * SAFETY

    def admits(self) -> bool:
        """Whether a param may be taken now; logs once why not."""
        if self._refused:
            return False
        left = self.ends - time.monotonic()
        expected = self.task_time()
        if may_take(left, expected, self.reserve):
            return True
        self._refused = True
        takes = "no task finished yet" if expected is None else f"tasks take about {expected:.0f} s"
        log.warning("walltime: %.0f s left, %s, grace period %g s: taking no more",
                    max(left, 0.0), takes, self.reserve)
        return False

    def ran(self, seconds: float) -> None:
        """A task ran ``seconds`` (to its own end, or to its timeout)."""
        self.run_times.record(seconds)
