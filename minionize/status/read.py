"""A report directory, read and summed into a :class:`~.model.Status`.

Each minion's ``<name>.summary.json`` is read, then only the lines its ``<name>.jsonl``
gained since that summary was written (see :mod:`minionize.reporters.format`), so reading
is fast whatever the length of the run. Torn last lines, corrupt lines and unreadable
summaries are skipped with a warning, never fatal; so is damage (a number no float can
hold, nesting too deep): a record's values are shown only when they can be
(:func:`clean_record`), and a report that cannot be read at all is skipped with one
warning naming it. A ``.jsonl`` that is not a report
(it does not begin with a minion's start record: notes, an empty file) is skipped, and
said once on the ``minionize.status`` log (standard error), not counted as a lost minion.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..engines.base import Settle
from ..identity import job_label
from ..reporters.format import (
    EVENTS_SUFFIX,
    SUMMARY_SUFFIX,
    MinionState,
    is_report,
    read_events,
    report_files,
    sane_number,
)
from .allocator import decision_for
from .held import held
from .model import (
    KEEP,
    LOOP_HEARTBEAT,
    LOST_MARGIN,
    RECENT_WINDOW,
    THROUGHPUT_BUCKET,
    THROUGHPUT_BUCKETS,
    MinionStatus,
    Status,
    number,
)

log = logging.getLogger("minionize.status")

#: What damage to one report may raise while it is read: that report is skipped.
DAMAGE = (ArithmeticError, ValueError, TypeError, KeyError, AttributeError, RecursionError)
#: A value of a record is shown when it is nested at most this deep and holds at most
#: this many values (it came from a file: it may be anything JSON can write).
SHOWN_DEPTH = 50
SHOWN_VALUES = 10_000
#: The fields of a record that are times or durations, and those that are integers.
_SECONDS = ("t", "start", "duration")
_INTEGERS = ("attempt", "exit_code", "busy", "number", "pid")


def shown(value: Any) -> bool:
    """True when ``value`` (read from JSON) can be printed: nested at most
    :data:`SHOWN_DEPTH` deep, at most :data:`SHOWN_VALUES` values."""
    stack = [(value, 0)]
    count = 0
    while stack:
        item, level = stack.pop()
        count += 1
        if count > SHOWN_VALUES or level > SHOWN_DEPTH:
            return False
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return True


def _integer(value: Any) -> Optional[int]:
    number = sane_number(value)
    return value if number is not None and isinstance(value, int) else None


def clean_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a report's ``record`` that can be shown: its times and durations are
    sane numbers or None, its integers too, and a value that cannot be printed is a text
    saying so (a param, then with ``param_repr``)."""
    clean: dict[str, Any] = {}
    for key, value in record.items():
        if key in _SECONDS:
            value = sane_number(value)
        elif key in _INTEGERS:
            value = _integer(value)
        elif not shown(value):
            value = "<damaged: nested too deep or too large>"
            if key == "param":
                clean["param_repr"] = True
        clean[key] = value
    if not isinstance(clean.get("id"), (str, int, type(None))):
        clean["id"] = json.dumps(clean["id"])[:100]
    return clean


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
    except (OSError, *DAMAGE) as error:
        why = str(error) if isinstance(error, (OSError, ValueError)) else type(error).__name__
        warnings.append(f"{summary_path.name} unreadable ({why[:200]}): replayed the report")
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
    identity = clean_record(state.minion)
    threshold = lost_after
    if threshold is None:
        threshold = 3 * max(state.heartbeat_period, LOOP_HEARTBEAT) + LOST_MARGIN
    if state.stopped is not None:
        condition = "finished"
    elif now - state.last_seen > threshold:
        condition = "lost"
    else:
        condition = "alive"
    exit_code = _integer(state.stopped.get("exit_code")) if state.stopped else None
    running = [clean_record(record) for record in state.running.values()]
    return MinionStatus(
        name=name,
        host=str(identity.get("host") or name),
        pid=identity.get("pid"),
        job=_job_label(identity),
        pod=identity.get("pod") if isinstance(identity.get("pod"), str) else None,
        state=condition,
        start=sane_number(identity.get("start")),
        last_seen=state.last_seen,
        heartbeat=state.heartbeat_period,
        exit_code=exit_code,
        done=state.counts[Settle.DONE.value],
        failed=state.counts[Settle.RETRY.value] + state.counts[Settle.DEAD.value],
        dead=state.counts[Settle.DEAD.value],
        released=state.counts[Settle.RELEASED.value],
        running=sorted(running, key=lambda r: number(r.get("start"))),
        in_progress=0 if state.stopped is not None else state.in_progress,
        busy=sum(state.busy.values()),
        identity=identity,
    )


@dataclass
class Report:
    """One minion's report, read: its name, its folded state, what is shown of it."""

    name: str
    state: MinionState
    minion: MinionStatus

    @property
    def queue(self) -> Any:
        """The queue it serves, as its start record names it (None in older reports)."""
        return self.minion.identity.get("queue")


def read_reports(
    directory: str | os.PathLike[str], now: float, lost_after: Optional[float] = None
) -> tuple[list[Report], list[str]]:
    """Every report in ``directory``, and the warnings its damage gave."""
    path = Path(directory)
    reports: list[Report] = []
    warnings: list[str] = []
    for name in report_files(path):
        try:
            state, said = load_minion(path, name)
            warnings.extend(said)
            if state is None:
                continue
            reports.append(Report(name, state, minion_status(name, state, now, lost_after)))
        except DAMAGE as error:
            why = f"{type(error).__name__}: {error}"
            warnings.append(f"{name}{EVENTS_SUFFIX}: damaged report skipped ({why[:200]})")
    return reports, warnings


def read_status(
    directory: str | os.PathLike[str],
    now: Optional[float] = None,
    lost_after: Optional[float] = None,
    queue: Optional[dict[str, Any]] = None,
    queue_note: str = "",
    in_flight: Optional[list[dict[str, Any]]] = None,
) -> Status:
    """Read every report in ``directory`` into one :class:`Status`.

    ``queue``: the engine's counters, if known (see :func:`query_queue`), for the ETA
    and for what lost minions still hold; ``in_flight``: the params it has in flight
    (``id``, and who holds each), when it can list them.
    ``lost_after``: seconds of silence after which a minion is lost (default: three of
    its heartbeat periods plus :data:`LOST_MARGIN`).
    """
    now = time.time() if now is None else now
    reports, warnings = read_reports(directory, now, lost_after)
    return summarize(directory, reports, now, queue, queue_note, in_flight, warnings)


def summarize(
    directory: str | os.PathLike[str],
    reports: list[Report],
    now: float,
    queue: Optional[dict[str, Any]] = None,
    queue_note: str = "",
    in_flight: Optional[list[dict[str, Any]]] = None,
    warnings: Optional[list[str]] = None,
) -> Status:
    """``reports`` (of one queue, or all of a directory) summed into a :class:`Status`.

    What lost minions hold is what the queue still has in flight (:func:`held`), when
    ``queue`` is known: their reports say what they ran when they were last heard of.
    """
    status = Status(directory=str(directory), exists=Path(directory).is_dir(), now=now)
    status.queue, status.queue_note = queue, queue_note
    status.warnings.extend(warnings or [])
    per_second: dict[int, int] = {}
    slowest: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for report in reports:
        try:
            state, minion = report.state, report.minion
            recent = dict(state.recent)
            slow = [dict(clean_record(r), minion=report.name) for r in state.slowest]
            failures = [dict(clean_record(r), minion=report.name) for r in state.errors]
        except DAMAGE as error:
            why = f"{type(error).__name__}: {error}"
            status.warnings.append(
                f"{report.name}{EVENTS_SUFFIX}: damaged report skipped ({why[:200]})")
            continue
        status.minions.append(minion)
        status.done += minion.done
        status.failed += minion.failed
        status.dead += minion.dead
        status.released += minion.released
        if minion.state == "alive":
            status.running += minion.in_progress
        if state.first_start is not None and (
            status.first_start is None or state.first_start < status.first_start
        ):
            status.first_start = state.first_start
        if state.last_end is not None and (
            status.last_end is None or state.last_end > status.last_end
        ):
            status.last_end = state.last_end
        for second, count in recent.items():
            per_second[second] = per_second.get(second, 0) + count
        slowest.extend(slow)
        errors.extend(failures)
    held(status, in_flight)
    status.allocator = decision_for(directory, (report.queue for report in reports))
    status.stranded = sum(m.in_progress for m in status.minions if m.state == "lost")
    status.slowest = sorted(slowest, key=lambda r: -number(r.get("duration")))[:KEEP]
    # The newest failure of each param: its attempt number tells how many came before.
    seen: set[Any] = set()
    for record in sorted(errors, key=lambda r: -number(r.get("t"))):
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
        span = status.end - status.first_start
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
