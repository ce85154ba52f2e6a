"""The minions' report files: their format, how they are read, and the fold.

The JSON reporter (:mod:`minionize.reporters.json`) writes them; ``minion-status`` and
``mtop`` (:mod:`minionize.status`) read them. In ``REPORTER_JSON_DIRECTORY`` (default
``minion-report``), each minion has two files, named after its host, pid and job
(:func:`report_name`, e.g. ``node-3_4242_1234_5``):

``<name>.jsonl``
    One JSON object per line (a *record*), appended with one ``write`` each, never
    rewritten. Its ``ev`` is its kind: ``start`` (the minion's identity and heartbeat
    period), ``task`` (one per settled attempt: id, param, attempt, outcome, start,
    duration, and for a failure exit code, reason and stderr tail), ``heartbeat`` (the
    attempts running) and ``stop`` (the exit code). A minion killed mid-write can leave
    at most one torn last line, which readers skip (:func:`read_events`).
``<name>.summary.json``
    The same records folded into counters (:class:`MinionState`): done, failed, dead,
    running params, recent throughput, slowest tasks, last errors. It records the byte
    offset of the ``.jsonl`` it covers, so a reader folds the summary plus only the
    lines appended since, whatever the length of the run.

Records are strict JSON in ASCII (:func:`encode_record`): a param JSON cannot encode is
written as its repr with ``"param_repr": true``; a param whose JSON is longer than
:data:`PARAM_CHARS` as the start of that text, with ``"param_repr": true`` and
``"param_cut": true`` (its id names it; a report line stays small whatever the param).
"""

from __future__ import annotations

import heapq
import json
import os
import re
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from ..engines.base import Settle
from ..identity import MinionInfo

FORMAT_VERSION = 1
EVENTS_SUFFIX = ".jsonl"
SUMMARY_SUFFIX = ".summary.json"
DEFAULT_DIRECTORY = "minion-report"
DEFAULT_HEARTBEAT = 5.0
#: Seconds of per-second throughput kept in a summary (mtop draws the last minutes).
RECENT_SECONDS = 300
KEEP_SLOWEST = 10
KEEP_ERRORS = 10
#: Characters of stderr kept per failure (the end of it: where the error usually is).
TAIL_CHARS = 2000
#: Characters of a param's JSON kept in a report record (a longer one is cut).
PARAM_CHARS = 1000
#: The kinds of record (their ``ev``).
START, TASK, HEARTBEAT, STOP = "start", "task", "heartbeat", "stop"
#: A task record's ``outcome``: how its attempt was settled, a :class:`~minionize.engines.base.Settle`.
OUTCOMES = tuple(settle.value for settle in Settle)
#: The outcomes after which the param leaves the queue, and those of a failed attempt.
FINAL = frozenset((Settle.DONE.value, Settle.DEAD.value))
FAILED = frozenset((Settle.RETRY.value, Settle.DEAD.value))

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Built once: json.dumps with options builds a new encoder per call (a few us per line).
_STRICT = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def safe_repr(value: Any) -> str:
    """``repr(value)``, or a placeholder when even that fails."""
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not break the report
        return f"<unrepresentable {type(value).__name__}>"


def json_param(param: Any) -> tuple[Any, bool]:
    """``(param, False)`` when strict JSON can encode it in at most :data:`PARAM_CHARS`
    characters, else ``(a text for it, True)``: its repr, or the start of its JSON."""
    value, kind = _param_as(param)
    return value, bool(kind)


def _param_as(param: Any) -> tuple[Any, str]:
    """``(param, "")``, ``(its repr, "repr")`` or ``(its JSON cut, "cut")``."""
    try:
        text = _STRICT.encode(param)
    except (TypeError, ValueError, RecursionError):
        return safe_repr(param)[:PARAM_CHARS], "repr"
    if len(text) > PARAM_CHARS:
        return text[:PARAM_CHARS] + "...", "cut"
    return param, ""


def param_fields(param: Any) -> dict[str, Any]:
    """The fields a record gives a param: ``param``, and ``param_repr`` (and
    ``param_cut`` for a long one) when it is a text standing for it."""
    value, kind = _param_as(param)
    if not kind:
        return {"param": value}
    if kind == "cut":
        return {"param": value, "param_repr": True, "param_cut": True}
    return {"param": value, "param_repr": True}


def encode_record(record: dict[str, Any]) -> bytes:
    """One strict-JSON line (ASCII, ends with a newline) for ``record``.

    Its ``param`` is written as :func:`param_fields` says: a param that JSON cannot
    encode (a set, NaN, a custom object, a cycle) as its repr, a long one cut; ``record``
    is changed to match (the fold then keeps what the line says). The usual record, short
    and encodable, is encoded once.
    """
    try:
        text = _STRICT.encode(record)
    except (TypeError, ValueError, RecursionError):
        if "param" in record:
            record.update(param_fields(record["param"]))
        try:
            text = json.dumps(record, allow_nan=False, separators=(",", ":"), default=safe_repr)
        except (TypeError, ValueError, RecursionError):
            text = json.dumps({k: safe_repr(v) for k, v in record.items()}, separators=(",", ":"))
    else:
        if len(text) > PARAM_CHARS and "param" in record and not record.get("param_repr"):
            fields = param_fields(record["param"])
            if "param_cut" in fields:
                record.update(fields)
                text = _STRICT.encode(record)
    return (text + "\n").encode("ascii")


def tail(text: str, limit: int = TAIL_CHARS) -> str:
    """The end of ``text``, at most ``limit`` characters (where an error usually is)."""
    return text if len(text) <= limit else "..." + text[-limit:]


def encode_summary(summary: dict[str, Any]) -> str:
    """A summary as compact JSON; whatever JSON cannot encode in it becomes its repr."""
    try:
        return json.dumps(summary, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return json.dumps(summary, separators=(",", ":"), default=safe_repr)


def report_name(minion: MinionInfo) -> str:
    """The file name stem of a minion's report: host, pid and job label."""
    host = _UNSAFE.sub("_", minion.host) or "host"
    name = f"{host}_{minion.pid}"
    job = _UNSAFE.sub("_", minion.job_label)
    return f"{name}_{job}" if job else name


class MinionState:
    """A minion's report folded into counters: built by the reporter as it goes, saved
    as the summary, and rebuilt by readers from a summary plus the lines after it."""

    def __init__(self, minion: dict[str, Any] | None = None) -> None:
        self.minion: dict[str, Any] = minion or {}
        self.heartbeat_period = DEFAULT_HEARTBEAT
        #: Wall time of the last sign of life (start, heartbeat, task or stop).
        self.last_seen = 0.0
        self.stopped: Optional[dict[str, Any]] = None
        self.counts = dict.fromkeys(OUTCOMES, 0)
        #: Seconds spent running attempts, by outcome.
        self.busy = dict.fromkeys(OUTCOMES, 0.0)
        self.first_start: Optional[float] = None
        self.last_end: Optional[float] = None
        #: ``id#attempt`` -> {id, param, attempt, start} of the attempts running now.
        self.running: dict[str, dict[str, Any]] = {}
        #: How many attempts were running at the minion's latest line: heartbeats list
        #: them, task lines count those still running (``busy``), so that short tasks,
        #: which come and go between two heartbeats, are counted too.
        self.in_progress = 0
        #: Params done or dead-lettered, per second (the key is ``int(wall time)``).
        self.recent: dict[int, int] = {}
        self._slowest: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = 0
        self.errors: deque[dict[str, Any]] = deque(maxlen=KEEP_ERRORS)

    # -- events --------------------------------------------------------------------
    def apply(self, event: dict[str, Any]) -> None:
        """Fold one line of a report file in."""
        kind = event.get("ev")
        t = _number(event.get("t"))
        if kind == TASK:
            self.add_task(event)
        elif kind == START:
            minion = event.get("minion")
            if isinstance(minion, dict):
                self.minion = minion
            period = sane_number(event.get("heartbeat"))
            if period is not None and period >= 0:
                self.heartbeat_period = period
        elif kind == STOP:
            self.stopped = {"t": t, "exit_code": event.get("exit_code")}
            self.running.clear()
            self.in_progress = 0
        elif kind == HEARTBEAT and isinstance(event.get("running"), list):
            self.running = {_running_key(r): r for r in event["running"] if isinstance(r, dict)}
            self.in_progress = len(self.running)
        if t > self.last_seen:
            self.last_seen = t

    def add_task(self, record: dict[str, Any]) -> None:
        """Count one settled attempt (a ``task`` line)."""
        outcome = record.get("outcome")
        if outcome not in self.counts:
            return
        start = _number(record.get("start"))
        duration = _number(record.get("duration"))
        end = start + duration
        self.counts[outcome] += 1
        self.busy[outcome] += duration
        if self.running:
            self.running.pop(_running_key(record), None)
        busy = record.get("busy")
        if isinstance(busy, int) and not isinstance(busy, bool) and 0 <= busy <= MAX_NUMBER:
            self.in_progress = busy
        else:
            self.in_progress = len(self.running)
        if start and (self.first_start is None or start < self.first_start):
            self.first_start = start
        if self.last_end is None or end > self.last_end:
            self.last_end = end
        if outcome in FINAL:
            second = int(end)
            self.recent[second] = self.recent.get(second, 0) + 1
            if len(self.recent) > 2 * RECENT_SECONDS:  # prune in bulk: O(1) per task
                horizon = max(self.recent) - RECENT_SECONDS
                self.recent = {s: n for s, n in self.recent.items() if s > horizon}
        if outcome != Settle.RELEASED.value:
            self._seq += 1
            if len(self._slowest) < KEEP_SLOWEST:
                heapq.heappush(self._slowest, (duration, self._seq, record))
            elif duration > self._slowest[0][0]:
                heapq.heapreplace(self._slowest, (duration, self._seq, record))
        if outcome in FAILED:
            self.errors.append(record)

    @property
    def slowest(self) -> list[dict[str, Any]]:
        return [record for _, _, record in sorted(self._slowest, key=lambda x: -x[0])]

    # -- summary -------------------------------------------------------------------
    def to_summary(self, offset: int, now: float) -> dict[str, Any]:
        horizon = int(now) - RECENT_SECONDS
        recent = {str(s): n for s, n in self.recent.items() if s > horizon}
        return {
            "version": FORMAT_VERSION,
            "t": now,
            "offset": offset,
            "minion": self.minion,
            "heartbeat": self.heartbeat_period,
            "last_seen": self.last_seen,
            "stopped": self.stopped,
            "counts": self.counts,
            "busy": self.busy,
            "first_start": self.first_start,
            "last_end": self.last_end,
            "running": list(self.running.values()),
            "in_progress": self.in_progress,
            "recent": recent,
            "slowest": self.slowest,
            "errors": list(self.errors),
        }

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> MinionState:
        """Rebuild from a summary; raise ValueError/TypeError/KeyError on a bad one (a
        number out of :func:`sane_number`'s range is a ValueError)."""
        if summary.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown summary version {safe_repr(summary.get('version'))[:40]}")
        state = cls(dict(summary["minion"]))
        period = summary.get("heartbeat")
        state.heartbeat_period = DEFAULT_HEARTBEAT if period is None else _checked(period, "heartbeat")
        state.last_seen = _checked(summary.get("last_seen") or 0.0, "last_seen")
        stopped = summary.get("stopped")
        state.stopped = dict(stopped) if isinstance(stopped, dict) else None
        for outcome in OUTCOMES:
            state.counts[outcome] = _count(summary["counts"].get(outcome, 0), outcome)
            state.busy[outcome] = _checked(summary["busy"].get(outcome, 0.0), "busy")
        first, last = summary.get("first_start"), summary.get("last_end")
        state.first_start = None if first is None else _checked(first, "first_start")
        state.last_end = None if last is None else _checked(last, "last_end")
        state.running = {
            _running_key(r): r for r in summary.get("running", []) if isinstance(r, dict)
        }
        in_progress = summary.get("in_progress")
        state.in_progress = _count(in_progress, "in_progress") if in_progress else len(state.running)
        state.recent = {
            _count(int(s), "recent"): _count(n, "recent") for s, n in summary.get("recent", {}).items()
        }
        for record in summary.get("slowest", []):
            state._seq += 1
            state._slowest.append((_number(record.get("duration")), state._seq, record))
        heapq.heapify(state._slowest)
        state.errors.extend(e for e in summary.get("errors", []) if isinstance(e, dict))
        return state


#: The largest magnitude a number of a report may have (times, durations, counts): what
#: is beyond it, or not finite, is damage (a float could not even hold a 400-digit int).
MAX_NUMBER = 2.0**53


def sane_number(value: Any) -> Optional[float]:
    """``value`` as a float if it is a number (not a bool), finite and at most
    :data:`MAX_NUMBER` in magnitude, else None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if isinstance(value, int) and abs(value) > MAX_NUMBER:
        return None
    number = float(value)
    return number if abs(number) <= MAX_NUMBER else None  # NaN fails the test too


def _number(value: Any) -> float:
    number = sane_number(value)
    return 0.0 if number is None else number


def _checked(value: Any, what: str) -> float:
    number = sane_number(value)
    if number is None:
        raise ValueError(f"{what} is not a number a report may hold: {safe_repr(value)[:40]}")
    return number


def _count(value: Any, what: str) -> int:
    number = _checked(value, what)
    if number < 0 or number != int(number):
        raise ValueError(f"{what} is not a count: {safe_repr(value)[:40]}")
    return int(number)


def _running_key(record: dict[str, Any]) -> str:
    return f"{record.get('id')}#{record.get('attempt')}"


#: How every report begins: its ``start`` record, written by the JSON reporter's
#: ``start`` (compact JSON, "ev" first), possibly torn by a crash.
REPORT_START = b'{"ev":"start"'


def is_report(data: bytes) -> bool:
    """True when ``data``, the beginning of a ``.jsonl`` file, is a minion's report: its
    first line is the ``start`` record (whole, or cut by a crash). Another ``.jsonl``
    put in the report directory, or an empty one, is not."""
    first = data.split(b"\n", 1)[0].lstrip()
    return first.startswith(REPORT_START) or (
        first.startswith(b"{") and b"\n" in data and _start_event(first)
    )


def _start_event(line: bytes) -> bool:
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(event, dict) and event.get("ev") == START


def read_events(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The events in ``data`` (complete lines only) and how many lines were unreadable.

    The last piece, when it does not end with a newline, is a line being written or torn
    by a crash: it is ignored, not counted as an error.
    """
    events: list[dict[str, Any]] = []
    bad = 0
    # Decoding once is faster than letting json.loads guess each line's encoding.
    lines = data.decode("utf-8", "replace").split("\n")
    for line in lines[:-1]:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            bad += 1
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            bad += 1
    return events, bad


def report_files(directory: Path) -> Iterable[str]:
    """The report names (stems) present in ``directory``, from either kind of file."""
    names: set[str] = set()
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    for entry in entries:
        if entry.startswith("."):
            continue
        if entry.endswith(EVENTS_SUFFIX):
            names.add(entry[: -len(EVENTS_SUFFIX)])
        elif entry.endswith(SUMMARY_SUFFIX):
            names.add(entry[: -len(SUMMARY_SUFFIX)])
    return sorted(names)
