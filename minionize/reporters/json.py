"""The JSON reporter: one append-only report file per minion, plus a small summary.

Files in ``REPORTER_JSON_DIRECTORY`` (default ``minion-report``), named after the
minion's host, pid and job (``node-3_4242_1234_5``):

``<name>.jsonl``
    One JSON object per line, appended with one ``write`` each (``O_APPEND``), never
    rewritten: ``start`` (the minion's identity), ``task`` (one per settled attempt),
    ``heartbeat`` and ``stop``. A minion killed mid-write can leave at most one torn last
    line, which readers skip.
``<name>.summary.json``
    The same information folded into counters (done, failed, dead, running params,
    recent throughput, slowest tasks, last errors), replaced atomically (temporary file
    and rename) at start, on heartbeats and at stop. It records the byte offset of the
    ``.jsonl`` it covers, so ``minion-status`` reads the summary and replays only the
    lines appended since, whatever the length of the run.

Lines are written unbuffered, one ``write`` per task: a SIGKILLed minion loses no
settled task, and the cost (a few microseconds) stays far below a process start.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError
from .base import MinionInfo, Reporter, TaskReport

if TYPE_CHECKING:
    from ..callbacks.base import Task
    from ..config import Settings

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
#: Task lines after which the summary is refreshed even between heartbeats, so that a
#: reader never replays more than this many lines per minion (about 0.3 ms per refresh).
SUMMARY_EVERY = 500
OUTCOMES = ("done", "retry", "dead", "released")

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
    """``(param, False)`` when strict JSON can encode it, else ``(repr(param), True)``."""
    try:
        _STRICT.encode(param)
    except (TypeError, ValueError, RecursionError):
        return safe_repr(param), True
    return param, False


def encode_record(record: dict[str, Any]) -> bytes:
    """One strict-JSON line (ASCII, ends with a newline) for ``record``.

    A param that JSON cannot encode (a set, NaN, a custom object, a cycle) is replaced by
    its repr and flagged with ``"param_repr": true``; the line is always valid JSON.
    """
    try:
        text = _STRICT.encode(record)
    except (TypeError, ValueError, RecursionError):
        if "param" in record:
            record["param"] = safe_repr(record["param"])
            record["param_repr"] = True
        try:
            text = json.dumps(record, allow_nan=False, separators=(",", ":"), default=safe_repr)
        except (TypeError, ValueError, RecursionError):
            text = json.dumps({k: safe_repr(v) for k, v in record.items()}, separators=(",", ":"))
    return (text + "\n").encode("ascii")


def tail(text: str, limit: int = TAIL_CHARS) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


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
        if kind == "task":
            self.add_task(event)
        elif kind == "start":
            minion = event.get("minion")
            if isinstance(minion, dict):
                self.minion = minion
            period = event.get("heartbeat")
            if isinstance(period, (int, float)) and period >= 0:
                self.heartbeat_period = float(period)
        elif kind == "stop":
            self.stopped = {"t": t, "exit_code": event.get("exit_code")}
            self.running.clear()
            self.in_progress = 0
        elif kind == "heartbeat" and isinstance(event.get("running"), list):
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
        self.in_progress = busy if isinstance(busy, int) else len(self.running)
        if start and (self.first_start is None or start < self.first_start):
            self.first_start = start
        if self.last_end is None or end > self.last_end:
            self.last_end = end
        if outcome in ("done", "dead"):
            second = int(end)
            self.recent[second] = self.recent.get(second, 0) + 1
            if len(self.recent) > 2 * RECENT_SECONDS:  # prune in bulk: O(1) per task
                horizon = max(self.recent) - RECENT_SECONDS
                self.recent = {s: n for s, n in self.recent.items() if s > horizon}
        if outcome != "released":
            self._seq += 1
            if len(self._slowest) < KEEP_SLOWEST:
                heapq.heappush(self._slowest, (duration, self._seq, record))
            elif duration > self._slowest[0][0]:
                heapq.heapreplace(self._slowest, (duration, self._seq, record))
        if outcome in ("retry", "dead"):
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
        """Rebuild from a summary; raise ValueError/TypeError/KeyError on a bad one."""
        if summary.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown summary version {summary.get('version')!r}")
        state = cls(dict(summary["minion"]))
        period = summary.get("heartbeat")
        state.heartbeat_period = float(DEFAULT_HEARTBEAT if period is None else period)
        state.last_seen = float(summary.get("last_seen") or 0.0)
        stopped = summary.get("stopped")
        state.stopped = dict(stopped) if isinstance(stopped, dict) else None
        for outcome in OUTCOMES:
            state.counts[outcome] = int(summary["counts"].get(outcome, 0))
            state.busy[outcome] = float(summary["busy"].get(outcome, 0.0))
        first, last = summary.get("first_start"), summary.get("last_end")
        state.first_start = None if first is None else float(first)
        state.last_end = None if last is None else float(last)
        state.running = {
            _running_key(r): r for r in summary.get("running", []) if isinstance(r, dict)
        }
        state.in_progress = int(summary.get("in_progress") or len(state.running))
        state.recent = {int(s): int(n) for s, n in summary.get("recent", {}).items()}
        for record in summary.get("slowest", []):
            state._seq += 1
            state._slowest.append((_number(record.get("duration")), state._seq, record))
        heapq.heapify(state._slowest)
        state.errors.extend(e for e in summary.get("errors", []) if isinstance(e, dict))
        return state


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _running_key(record: dict[str, Any]) -> str:
    return f"{record.get('id')}#{record.get('attempt')}"


#: How every report begins: its ``start`` record, written by :meth:`JsonReporter.start`
#: (compact JSON, "ev" first), possibly torn by a crash.
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
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("ev") == "start"


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
        except ValueError:
            bad += 1
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            bad += 1
    return events, bad


class JsonReporter(Reporter):
    """Writes ``<directory>/<host>_<pid>[_<job>].jsonl`` and its ``.summary.json``."""

    name = "json"

    def __init__(
        self,
        directory: str | os.PathLike[str] = DEFAULT_DIRECTORY,
        heartbeat: float = DEFAULT_HEARTBEAT,
    ) -> None:
        self.directory = Path(directory)
        #: Seconds between two heartbeats written (the monitor may call more often).
        self.heartbeat_period = heartbeat
        self.path: Optional[Path] = None
        self.summary_path: Optional[Path] = None
        self._fd: Optional[int] = None
        self._lock = threading.Lock()
        self._state = MinionState()
        self._last_heartbeat = 0.0
        self._unsummarized = 0
        self._started: set[tuple[str, int]] = set()
        self._torn = False
        self._warned = False

    @classmethod
    def from_settings(cls, settings: Settings) -> JsonReporter:
        directory = (
            settings.env.str("REPORTER_JSON_DIRECTORY", DEFAULT_DIRECTORY) or DEFAULT_DIRECTORY
        )
        return cls(directory, settings.env.positive_seconds("MINION_HEARTBEAT", DEFAULT_HEARTBEAT))

    # -- the Reporter protocol -------------------------------------------------------
    def start(self, minion: MinionInfo) -> None:
        """Create the report file. Raises ConfigError if the directory is unusable, so
        that a minion asked for reports does not run without them."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            stem = report_name(minion)
            for n in range(1, 1000):
                name = stem if n == 1 else f"{stem}.{n}"
                path = self.directory / (name + EVENTS_SUFFIX)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                except FileExistsError:
                    continue
                break
            else:
                raise OSError(f"too many report files named {stem}*")
        except OSError as error:
            raise ConfigError(
                f"REPORTER_JSON_DIRECTORY={str(self.directory)!r}: cannot write reports there "
                f"({error}): set it to a writable directory"
            ) from error
        now = time.time()
        with self._lock:
            self._fd = fd
            self.path = path
            self.summary_path = self.directory / (name + SUMMARY_SUFFIX)
            record = {
                "ev": "start",
                "t": now,
                "minion": minion.to_dict(),
                "heartbeat": self.heartbeat_period,
            }
            self._state.apply(record)
            self._write(encode_record(record))
            self._save_summary(now)
            self._last_heartbeat = now

    def task_started(self, task: Task) -> None:
        # Memory only: counted in the next line written, never a line of its own.
        with self._lock:
            self._started.add((task.delivery.id, task.attempt))

    def task_finished(self, report: TaskReport) -> None:
        record: dict[str, Any] = {
            "ev": "task",
            "t": time.time(),
            "id": report.param_id,
            "param": report.param,
            "attempt": report.attempt,
            "outcome": report.outcome,
            "start": report.start,
            "duration": report.duration,
        }
        if report.exit_code is not None:
            record["exit_code"] = report.exit_code
        if report.reason:
            record["reason"] = tail(report.reason)
        if report.stderr_tail:
            record["stderr_tail"] = tail(report.stderr_tail)
        if report.stdout_path:
            record["stdout_path"] = report.stdout_path
        if report.stderr_path:
            record["stderr_path"] = report.stderr_path
        with self._lock:
            self._started.discard((report.param_id, report.attempt))
            record["busy"] = len(self._started)
            line = encode_record(record)
            self._state.add_task(record)
            self._write(line)
            self._unsummarized += 1
            if self._unsummarized >= SUMMARY_EVERY:
                self._save_summary(time.time())

    def heartbeat(self, running: Sequence[Task]) -> None:
        now = time.time()
        # The monitor calls every couple of seconds; write at most once per period.
        if now - self._last_heartbeat < self.heartbeat_period * 0.95:
            return
        with self._lock:
            if self._fd is None:
                return
            self._last_heartbeat = now
            entries = []
            for task in running:
                param, is_repr = json_param(task.param)
                entry = {
                    "id": task.delivery.id,
                    "param": param,
                    "attempt": task.attempt,
                    "start": task.wall_start,
                }
                if is_repr:
                    entry["param_repr"] = True
                entries.append(entry)
            record = {"ev": "heartbeat", "t": now, "running": entries}
            self._state.apply(record)
            self._write(encode_record(record))
            self._save_summary(now)

    def stop(self, exit_code: int) -> None:
        now = time.time()
        with self._lock:
            if self._fd is None:
                return
            record = {"ev": "stop", "t": now, "exit_code": exit_code}
            self._state.apply(record)
            self._write(encode_record(record))
            self._save_summary(now)
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    # -- files -----------------------------------------------------------------------
    def _write(self, line: bytes) -> None:
        """Append one line with one write (the lock is held)."""
        if self._fd is None:
            return
        if self._torn:
            # A previous write stopped mid-line: end that torn line so this one stays whole.
            line = b"\n" + line
        try:
            written = os.write(self._fd, line)
            while written < len(line):
                written += os.write(self._fd, line[written:])
            self._torn = False
        except OSError as error:
            self._torn = True
            self._warn(f"cannot append to {self.path}: {error}")

    def _save_summary(self, now: float) -> None:
        """Replace the summary atomically (the lock is held)."""
        if self._fd is None or self.summary_path is None:
            return
        self._unsummarized = 0
        try:
            offset = os.fstat(self._fd).st_size
            summary = self._state.to_summary(offset, now)
            try:
                text = json.dumps(summary, allow_nan=False, separators=(",", ":"))
            except (TypeError, ValueError, RecursionError):
                text = json.dumps(summary, separators=(",", ":"), default=safe_repr)
            temporary = self.summary_path.with_name("." + self.summary_path.name + ".tmp")
            temporary.write_text(text)
            os.replace(temporary, self.summary_path)
        except OSError as error:
            self._warn(f"cannot write {self.summary_path}: {error}")

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            print(
                f"minionize: json reporter: {message} (reports may be incomplete)", file=sys.stderr
            )


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
