"""The model behind ``minion-status`` and ``mtop``: a report directory, read and summed.

Each minion's ``<name>.summary.json`` is read, then only the lines its ``<name>.jsonl``
gained since that summary was written (see :mod:`minionize.report_format`), so reading
is fast whatever the length of the run. Torn last lines, corrupt lines and unreadable
summaries are skipped with a warning, never fatal. A ``.jsonl`` that is not a report
(it does not begin with a minion's start record: notes, an empty file) is skipped, and
said once on the ``minionize.status`` log (standard error), not counted as a lost minion.

Words: an *attempt* is one run of a param; *done* counts attempts that succeeded,
*failed* attempts that failed (requeued or dead-lettered), *dead* params dead-lettered.
A minion is *alive* while it shows signs of life (heartbeats, task lines), *finished*
once it wrote its stop line, and *lost* when it stopped beating without a stop line
(SIGKILL, a node lost, a job killed by the scheduler).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .identity import job_label
from .report_format import (
    EVENTS_SUFFIX,
    SUMMARY_SUFFIX,
    MinionState,
    is_report,
    read_events,
    report_files,
)

log = logging.getLogger("minionize.status")

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
        return min(self.running, key=lambda r: _float(r.get("start"), math.inf))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "job": self.job,
            "pod": self.pod,
            "state": self.state,
            "start": self.start,
            "last_seen": self.last_seen,
            "exit_code": self.exit_code,
            "done": self.done,
            "failed": self.failed,
            "dead": self.dead,
            "released": self.released,
            "running": self.running,
            "in_progress": self.in_progress,
            "jobs": self.identity.get("jobs", {}),
        }


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
    eta: Optional[float] = None
    slowest: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: Params finished per THROUGHPUT_BUCKET seconds, oldest first, ending now.
    throughput: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "exists": self.exists,
            "empty": self.empty,
            "time": self.now,
            "done": self.done,
            "failed": self.failed,
            "dead": self.dead,
            "released": self.released,
            "running": self.running,
            "stranded": self.stranded,
            "minions": [m.to_json() for m in self.minions],
            "alive": self.count("alive"),
            "finished": self.count("finished"),
            "lost": self.count("lost"),
            "rate": {"recent": self.rate_recent, "overall": self.rate_overall},
            "elapsed": (None if self.first_start is None else _end(self) - self.first_start),
            "queue": self.queue,
            "queue_note": self.queue_note,
            "remaining": self.remaining,
            "eta": self.eta,
            "slowest": self.slowest,
            "errors": self.errors,
            "throughput": {"bucket": THROUGHPUT_BUCKET, "counts": self.throughput},
            "warnings": self.warnings,
        }


def _float(value: Any, default: float = 0.0) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return default


def _end(status: Status) -> float:
    """Where the run's clock stops: now while a minion is alive, else the last task."""
    if status.count("alive") or status.last_end is None:
        return status.now
    return status.last_end


#: Files already said to be no report, so that ``--watch`` says it once.
_NOT_REPORTS: set[str] = set()


def _not_a_report(path: Path) -> None:
    if str(path) not in _NOT_REPORTS:
        _NOT_REPORTS.add(str(path))
        log.warning("%s is not a minion report (it does not begin with a start record): "
                    "skipped", path)


def load_minion(directory: Path, name: str) -> tuple[Optional[MinionState], list[str]]:
    """A minion's state: its summary plus the report lines written after it; None for a
    ``.jsonl`` that is not a report (said once on the log, ``minionize.status``)."""
    warnings: list[str] = []
    state: Optional[MinionState] = None
    offset = 0
    summary_path = directory / (name + SUMMARY_SUFFIX)
    try:
        summary = json.loads(summary_path.read_bytes())
        state = MinionState.from_summary(summary)
        offset = int(summary["offset"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        warnings.append(f"{summary_path.name} unreadable ({error}): replayed the report")
        state = None
    events_path = directory / (name + EVENTS_SUFFIX)
    try:
        with open(events_path, "rb") as events_file:
            size = os.fstat(events_file.fileno()).st_size
            if state is not None and not 0 <= offset <= size:
                warnings.append(f"{summary_path.name} does not match {events_path.name}: replayed")
                state, offset = None, 0
            events_file.seek(offset)
            data = events_file.read()
    except FileNotFoundError:
        if state is None:
            return None, warnings
        data = b""
    except OSError as error:
        warnings.append(f"{events_path.name} unreadable: {error}")
        data = b""
    if state is None:
        if not is_report(data):
            _not_a_report(events_path)
            return None, warnings
        state = MinionState()
    events, bad = read_events(data)
    for event in events:
        state.apply(event)
    if bad:
        warnings.append(f"{events_path.name}: skipped {bad} unreadable line(s)")
    return state, warnings


def _job_label(identity: dict[str, Any]) -> str:
    jobs = identity.get("jobs")
    if not isinstance(jobs, dict):
        return ""
    return job_label({str(k): str(v) for k, v in jobs.items()})


def minion_status(
    name: str, state: MinionState, now: float, lost_after: Optional[float]
) -> MinionStatus:
    identity = state.minion
    threshold = lost_after
    if threshold is None:
        threshold = 3 * max(state.heartbeat_period, LOOP_HEARTBEAT) + LOST_MARGIN
    if state.stopped is not None:
        condition = "finished"
    elif now - state.last_seen > threshold:
        condition = "lost"
    else:
        condition = "alive"
    exit_code = state.stopped.get("exit_code") if state.stopped else None
    pid = identity.get("pid")
    start = identity.get("start")
    return MinionStatus(
        name=name,
        host=str(identity.get("host") or name),
        pid=pid if isinstance(pid, int) else None,
        job=_job_label(identity),
        pod=identity.get("pod") if isinstance(identity.get("pod"), str) else None,
        state=condition,
        start=float(start) if isinstance(start, (int, float)) else None,
        last_seen=state.last_seen,
        heartbeat=state.heartbeat_period,
        exit_code=exit_code if isinstance(exit_code, int) else None,
        done=state.counts["done"],
        failed=state.counts["retry"] + state.counts["dead"],
        dead=state.counts["dead"],
        released=state.counts["released"],
        running=sorted(state.running.values(), key=lambda r: _float(r.get("start"))),
        in_progress=0 if state.stopped is not None else state.in_progress,
        busy=sum(state.busy.values()),
        identity=identity,
    )


def read_status(
    directory: str | os.PathLike[str],
    now: Optional[float] = None,
    lost_after: Optional[float] = None,
    queue: Optional[dict[str, Any]] = None,
    queue_note: str = "",
) -> Status:
    """Read every report in ``directory`` into one :class:`Status`.

    ``queue``: the engine's counters, if known (see :func:`query_queue`), for the ETA.
    ``lost_after``: seconds of silence after which a minion is lost (default: three of
    its heartbeat periods plus :data:`LOST_MARGIN`).
    """
    path = Path(directory)
    now = time.time() if now is None else now
    status = Status(directory=str(directory), exists=path.is_dir(), now=now)
    status.queue, status.queue_note = queue, queue_note
    per_second: dict[int, int] = {}
    slowest: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for name in report_files(path):
        state, warnings = load_minion(path, name)
        status.warnings.extend(warnings)
        if state is None:
            continue
        minion = minion_status(name, state, now, lost_after)
        status.minions.append(minion)
        status.done += minion.done
        status.failed += minion.failed
        status.dead += minion.dead
        status.released += minion.released
        if minion.state == "alive":
            status.running += minion.in_progress
        elif minion.state == "lost":
            status.stranded += minion.in_progress
        if state.first_start is not None and (
            status.first_start is None or state.first_start < status.first_start
        ):
            status.first_start = state.first_start
        if state.last_end is not None and (
            status.last_end is None or state.last_end > status.last_end
        ):
            status.last_end = state.last_end
        for second, count in state.recent.items():
            per_second[second] = per_second.get(second, 0) + count
        slowest.extend(dict(record, minion=name) for record in state.slowest)
        errors.extend(dict(record, minion=name) for record in state.errors)
    status.slowest = sorted(slowest, key=lambda r: -_float(r.get("duration")))[:KEEP]
    # The newest failure of each param: its attempt number tells how many came before.
    seen: set[Any] = set()
    for record in sorted(errors, key=lambda r: -_float(r.get("t"))):
        key = record.get("id", id(record))
        if key not in seen and len(status.errors) < KEEP:
            seen.add(key)
            status.errors.append(record)
    _rates(status, per_second)
    _eta(status)
    return status


def _rates(status: Status, per_second: dict[int, int]) -> None:
    finished = status.done + status.dead
    if status.first_start is not None and finished:
        span = _end(status) - status.first_start
        if span > 0:
            status.rate_overall = finished / span
    now = status.now
    if status.count("alive") and status.first_start is not None:
        # Whole seconds: the window starts at a bucket boundary, or at the first task.
        window_start = max(float(math.floor(now - RECENT_WINDOW)), status.first_start)
        first_bucket = math.floor(window_start)
        recent = sum(n for s, n in per_second.items() if s >= first_bucket)
        span = now - window_start
        if span > 0:
            status.rate_recent = recent / span
    last_bucket = math.floor(now) // THROUGHPUT_BUCKET
    bars = [0] * THROUGHPUT_BUCKETS
    for second, count in per_second.items():
        index = THROUGHPUT_BUCKETS - 1 - (last_bucket - second // THROUGHPUT_BUCKET)
        if 0 <= index < THROUGHPUT_BUCKETS:
            bars[index] += count
    status.throughput = bars


def _eta(status: Status) -> None:
    queue = status.queue
    if not queue:
        return
    parts = [queue.get(key) for key in ("todo", "in_flight", "expired")]
    known = [int(p) for p in parts if isinstance(p, int) and not isinstance(p, bool)]
    if not known:
        return
    status.remaining = sum(known)
    if status.remaining == 0:
        status.eta = 0.0
        return
    rate = status.rate_recent or status.rate_overall
    if status.count("alive") and rate:
        status.eta = status.remaining / rate


def query_queue(timeout: float = 3.0) -> tuple[Optional[dict[str, Any]], str]:
    """The configured engine's counters (``MINION_ENGINE`` ...), or None and why not.

    Runs in a thread so that an unreachable queue service cannot hang the status.
    The engine is not opened: ``status()`` is an administration call.
    """
    answer: dict[str, Any] = {}

    def ask() -> None:
        try:
            from .config import Settings
            from .engines import load_engine

            settings = Settings.from_env()
            if settings.engine.strip().lower() in ("sweep", "execo"):
                # Asking must not create an empty queue in the working directory.
                where = settings.env.str("EXECO_PERSISTENCE_DIR", "sweeps") or "sweeps"
                if not os.path.isdir(where):
                    answer["note"] = f"queue size unknown: no sweep queue in {where}"
                    return
            engine = load_engine(settings)
            counters = engine.status()
            answer["queue"] = dict(counters)
            answer["note"] = engine.describe()
        except Exception as error:  # the queue is optional here: say why, go on
            answer["note"] = f"queue size unknown: {error}"

    thread = threading.Thread(target=ask, name="minion-status-queue", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return None, f"queue size unknown: the queue did not answer within {timeout:g} s"
    return answer.get("queue"), str(answer.get("note", ""))
