"""A task timeout of ``X%`` (``--timeout 200%``, :class:`MedianTimeout`): a task running
longer than X % of the median run time of the tasks this minion has done so far is
stopped, as any task past its timeout (the attempt fails). Until
:data:`TASKS_FOR_A_MEDIAN` tasks are done there is no median, and no timeout applies.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional

from ..callbacks.base import StopReason
from ..config import read_task_timeout

if TYPE_CHECKING:
    from ..callbacks.base import Task
    from ..config import Settings

#: Tasks done before a median run time gives a timeout (GNU parallel waits for 3 too).
TASKS_FOR_A_MEDIAN = 3


class MedianTimeout:
    """The timeout of ``percent`` % of the median run time of the tasks done so far.

    :meth:`record` each done task's run time; :meth:`apply` gives the running tasks
    their deadline (``started`` + the limit), once there is a median. Thread-safe; the
    median is kept with two heaps (O(log n) a task, whatever the number of tasks)."""

    def __init__(self, percent: float, needed: int = TASKS_FOR_A_MEDIAN) -> None:
        self.percent = percent
        self.needed = needed
        self._lock = threading.Lock()
        self._low: list[float] = []  # the smaller half, negated (a max-heap)
        self._high: list[float] = []  # the larger half
        self._count = 0

    def record(self, seconds: float) -> None:
        """A task was done in ``seconds``."""
        with self._lock:
            self._count += 1
            if self._low and seconds > -self._low[0]:
                heapq.heappush(self._high, seconds)
            else:
                heapq.heappush(self._low, -seconds)
            if len(self._low) > len(self._high) + 1:
                heapq.heappush(self._high, -heapq.heappop(self._low))
            elif len(self._high) > len(self._low):
                heapq.heappush(self._low, -heapq.heappop(self._high))

    def median(self) -> Optional[float]:
        """The median run time of the tasks done; None before :attr:`needed` are."""
        with self._lock:
            if self._count < max(1, self.needed):
                return None
            if len(self._low) > len(self._high):
                return -self._low[0]
            return (-self._low[0] + self._high[0]) / 2

    def limit(self) -> Optional[float]:
        """The longest a task may run now, in seconds (None: no limit yet)."""
        median = self.median()
        return None if median is None else median * self.percent / 100

    def apply(self, tasks: Iterable[Task]) -> None:
        """Give each of ``tasks`` its deadline under the current limit."""
        limit = self.limit()
        if limit is None:
            return
        for task in tasks:
            task.deadline = task.started + limit

    @classmethod
    def from_settings(cls, settings: Settings) -> Optional[MedianTimeout]:
        """The timeout of ``MINION_TASK_TIMEOUT=X%``; None for none or a duration."""
        percent = read_task_timeout(settings.env)[1]
        if percent is None or settings.task_timeout is not None:
            return None
        return cls(percent)

    def settled(self, task: Task, done: bool, reason: str) -> str:
        """A task was settled: record its run time when it is ``done``; the ``reason`` of
        one stopped by its timeout names the rule."""
        if done:
            self.record(task.running_for())
        elif task.stop_reason is StopReason.TIMEOUT:
            reason = f"{reason} ({self.describe()})"
        return reason

    def describe(self) -> str:
        """What the limit is, for the reason of a timed-out attempt."""
        median = self.median()
        shown = "none yet" if median is None else f"{median:.3g}s"
        return f"{self.percent:g}% of the median run time {shown}"
