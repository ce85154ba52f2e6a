"""What ``minion-status`` and ``mtop`` show: the minions and the run, as numbers.

Words: an *attempt* is one run of a param; *done* counts attempts that succeeded,
*failed* attempts that failed (requeued or dead-lettered), *dead* params dead-lettered.
A minion is *alive* while it shows signs of life (heartbeats, task lines), *finished*
once it wrote its stop line, and *lost* when it stopped beating without a stop line
(SIGKILL, a node lost, a job killed by the scheduler).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from ..reporters.format import sane_number
from .allocator import AllocDecision

#: Seconds added to three heartbeat periods before a silent minion counts as lost.
LOST_MARGIN = 5.0
#: The minion loop calls the reporter's heartbeat every 2 s: a shorter MINION_HEARTBEAT
#: cannot make a minion beat faster than that.
LOOP_HEARTBEAT = 2.0
#: The window of the recent rate, in seconds.
RECENT_WINDOW = 60.0
#: Width of one throughput bar, in seconds, and how many bars (5 minutes).
THROUGHPUT_BUCKET = 10
THROUGHPUT_BUCKETS = 30
KEEP = 10


@dataclass
class MinionStatus:
    """One minion, as its report tells."""

    name: str
    host: str
    pid: Optional[int]
    job: str
    pod: Optional[str]
    #: ``alive``, ``finished`` or ``lost``.
    state: str
    start: Optional[float]
    last_seen: float
    heartbeat: float
    exit_code: Optional[int]
    done: int
    failed: int
    dead: int
    released: int
    #: The attempts known to run (listed by the last heartbeat, not finished since):
    #: ``id``, ``param``, ``attempt``, ``start``.
    running: list[dict[str, Any]]
    #: How many attempts ran at the minion's latest line (short tasks included).
    in_progress: int
    busy: float
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def current(self) -> Optional[dict[str, Any]]:
        """The attempt that has been running longest, if any."""
        if not self.running:
            return None
        return min(self.running, key=lambda r: number(r.get("start"), math.inf))

    def to_json(self) -> dict[str, Any]:
        """As ``minion-status --json`` prints it."""
        data = {name: getattr(self, name) for name in _MINION_JSON}
        data["jobs"] = self.identity.get("jobs", {})
        return data


@dataclass
class Status:
    """Everything ``minion-status`` prints."""

    directory: str
    exists: bool
    now: float
    minions: list[MinionStatus] = field(default_factory=list)
    done: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    #: Attempts running now on alive minions; ``stranded``: held by lost minions (their
    #: params come back to the queue when their leases expire).
    running: int = 0
    stranded: int = 0
    first_start: Optional[float] = None
    last_end: Optional[float] = None
    #: Params finished (done or dead-lettered) per second: over the last minute (None
    #: when no minion is alive) and over the whole run (None before anything finished).
    rate_recent: Optional[float] = None
    rate_overall: Optional[float] = None
    #: The queue's own counters (``todo``, ``in_flight``, ``done``, ``dead``, ``total``)
    #: when the configured engine can tell, and why not otherwise.
    queue: Optional[dict[str, Any]] = None
    queue_note: str = ""
    remaining: Optional[int] = None
    #: The remaining params at the rate observed (set by the reader); :attr:`eta` is
    #: this, but never less than what the running attempts still need.
    rate_eta: Optional[float] = None
    slowest: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: Params finished per THROUGHPUT_BUCKET seconds, oldest first, ending now.
    throughput: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The last decision of the allocator of these minions (None: no allocator).
    allocator: Optional[AllocDecision] = None

    @property
    def eta(self) -> Optional[float]:
        """Seconds until the queue is drained (None: unknown): the remaining params at
        the rate observed, and never less than the longest :meth:`running_need`, so a
        burst of short params does not promise the end of a long one still running.
        Unknown when every param left is running and one has already run longer than
        the mean attempt (:attr:`overdue`): nothing observed says when it ends."""
        if self.rate_eta is None or not self.remaining:
            return self.rate_eta
        if self.overdue is not None:
            return None
        return max(self.rate_eta, self.running_need())

    @eta.setter
    def eta(self, value: Optional[float]) -> None:
        self.rate_eta = value

    @property
    def mean_attempt(self) -> Optional[float]:
        """The mean time of the attempts finished (None before any)."""
        attempts = sum(m.done + m.failed + m.released for m in self.minions)
        if not attempts:
            return None
        return sum(m.busy for m in self.minions) / attempts

    def running_need(self) -> float:
        """What the attempts running on alive minions still need at the mean attempt
        time: the most of ``mean - elapsed`` among them (0 when none is below the mean)."""
        mean = self.mean_attempt
        if mean is None:
            return 0.0
        need = 0.0
        for m in self.minions:
            if m.state != "alive":
                continue
            for attempt in m.running:
                elapsed = self.now - number(attempt.get("start"), self.now)
                need = max(need, mean - elapsed)
        return need

    @property
    def overdue(self) -> Optional[float]:
        """When nothing is left to do but params running (the queue says none is todo)
        and one of them has run longer than the mean attempt: the longest run so far."""
        queue = self.queue or {}
        mean = self.mean_attempt
        if queue.get("todo") != 0 or queue.get("expired") or mean is None:
            return None
        longest = max((self.now - number(attempt.get("start"), self.now)
                       for m in self.minions if m.state == "alive" for attempt in m.running),
                      default=0.0)
        return longest if longest > mean else None

    @property
    def done_params(self) -> int:
        """Params done: the queue's count when it tells (a report directory may hold
        earlier runs, or attempts of a param run twice), else the reports' done attempts."""
        return self._queue_count("done", self.done)

    @property
    def dead_params(self) -> int:
        """Params dead-lettered: the queue's count when it tells, else the reports'."""
        return self._queue_count("dead", self.dead)

    def _queue_count(self, key: str, reported: int) -> int:
        value = self.queue.get(key) if self.queue else None
        return value if isinstance(value, int) and not isinstance(value, bool) else reported

    @property
    def empty(self) -> bool:
        return not self.minions

    def count(self, state: str) -> int:
        return sum(1 for m in self.minions if m.state == state)

    @property
    def progress(self) -> Optional[tuple[int, int]]:
        """(finished, total) params when the queue's size is known."""
        if not self.queue:
            return None
        total = self.queue.get("total")
        done = int(self.queue.get("done") or 0) + int(self.queue.get("dead") or 0)
        if not isinstance(total, int):
            if self.remaining is None:
                return None
            total = done + self.remaining
        return done, total

    @property
    def end(self) -> float:
        """Where the run's clock stops: now while a minion is alive, else the last task."""
        if self.count("alive") or self.last_end is None:
            return self.now
        return self.last_end

    @property
    def elapsed(self) -> Optional[float]:
        """Seconds from the first task's start to :attr:`end` (None before any task)."""
        return None if self.first_start is None else self.end - self.first_start

    def to_json(self) -> dict[str, Any]:
        """As ``minion-status --json`` prints it."""
        data: dict[str, Any] = {
            "directory": self.directory,
            "exists": self.exists,
            "empty": self.empty,
            "time": self.now,
        }
        data.update((name, getattr(self, name)) for name in _TOTALS_JSON)
        data["minions"] = [m.to_json() for m in self.minions]
        data.update((state, self.count(state)) for state in ("alive", "finished", "lost"))
        data["rate"] = {"recent": self.rate_recent, "overall": self.rate_overall}
        data["elapsed"] = self.elapsed
        data.update((name, getattr(self, name)) for name in _QUEUE_JSON)
        data["throughput"] = {"bucket": THROUGHPUT_BUCKET, "counts": self.throughput}
        data["warnings"] = self.warnings
        data["allocator"] = self.allocator.to_json() if self.allocator else None
        return data


#: The fields of the JSON output that are attributes as they are, in its order.
_MINION_JSON = ("name", "host", "pid", "job", "pod", "state", "start", "last_seen",
                "exit_code", "done", "failed", "dead", "released", "running", "in_progress")
_TOTALS_JSON = ("done", "failed", "dead", "released", "running", "stranded")
_QUEUE_JSON = ("queue", "queue_note", "remaining", "eta", "slowest", "errors")
#: Lost minions first (they need a look), then alive, then finished.
_STATE_ORDER = {"lost": 0, "alive": 1, "finished": 2}


def minion_order(minion: MinionStatus) -> tuple[int, str]:
    """Sort key of the minions' tables: by state (lost first), then name."""
    return (_STATE_ORDER.get(minion.state, 3), minion.name)


def number(value: Any, default: float = 0.0) -> float:
    """``value`` as a float if it is a number (not a bool) in a report, finite and not
    huge (:func:`~minionize.reporters.format.sane_number`), else ``default``."""
    sane = sane_number(value)
    return default if sane is None else sane
