"""The JSON reporter: one append-only report file per minion, plus a small summary.

Files in ``REPORTER_JSON_DIRECTORY`` (default ``minion-report``): ``<name>.jsonl``, one
record per line, and ``<name>.summary.json``, the records folded into counters; their
format, and how readers read and fold them, are :mod:`minionize.reporters.format`.

Lines are written unbuffered, one ``write`` per task: a SIGKILLed minion loses no
settled task, and the cost (a few microseconds) stays far below a process start. The
summary is replaced atomically (temporary file and rename) at start, on heartbeats, at
stop, and every :data:`SUMMARY_EVERY` task lines.

The start record's identity names the queue the minion serves (``queue``, see
:mod:`._queue_ref`), so that ``minion-status`` finds it from anywhere; log paths are
written absolute.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError
from .base import MinionInfo, Reporter, TaskReport
from .format import (
    DEFAULT_DIRECTORY,
    DEFAULT_HEARTBEAT,
    EVENTS_SUFFIX,
    HEARTBEAT,
    START,
    STOP,
    SUMMARY_SUFFIX,
    TASK,
    MinionState,
    encode_record,
    encode_summary,
    param_fields,
    report_name,
    tail,
)
from .queue_ref import engine_kind, queue_ref

if TYPE_CHECKING:
    from ..callbacks.base import Task
    from ..config import Settings

#: Task lines after which the summary is refreshed even between heartbeats, so that a
#: reader never replays more than this many lines per minion (about 0.3 ms per refresh).
SUMMARY_EVERY = 500


def report_directory(settings: Settings) -> str:
    """Where the JSON reporter of ``settings`` writes (``REPORTER_JSON_DIRECTORY``)."""
    return settings.env.str("REPORTER_JSON_DIRECTORY", DEFAULT_DIRECTORY) or DEFAULT_DIRECTORY


class JsonReporter(Reporter):
    """Writes ``<directory>/<host>_<pid>[_<job>].jsonl`` and its ``.summary.json``."""

    name = "json"

    def __init__(
        self,
        directory: str | os.PathLike[str] = DEFAULT_DIRECTORY,
        heartbeat: float = DEFAULT_HEARTBEAT,
        queue: Optional[tuple[str, Mapping[str, str]]] = None,
    ) -> None:
        self.directory = Path(directory)
        #: The engine named by the settings and the settings (see :mod:`._queue_ref`).
        self.queue = queue
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
        directory = report_directory(settings)
        heartbeat = settings.env.positive_seconds("MINION_HEARTBEAT", DEFAULT_HEARTBEAT)
        return cls(directory, heartbeat, queue=(settings.engine, settings.env.values))

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
                "ev": START,
                "t": now,
                "minion": self._identity(minion),
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
            "ev": TASK,
            "t": time.time(),
            "id": report.param_id,
            "param": report.param,  # cut by encode_record if long
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
        # Absolute: the report is read from anywhere (minion-status DIR).
        if report.stdout_path:
            record["stdout_path"] = os.path.abspath(report.stdout_path)
        if report.stderr_path:
            record["stderr_path"] = os.path.abspath(report.stderr_path)
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
                entries.append({
                    "id": task.delivery.id,
                    **param_fields(task.param),
                    "attempt": task.attempt,
                    "start": task.wall_start,
                })
            record = {"ev": HEARTBEAT, "t": now, "running": entries}
            self._state.apply(record)
            self._write(encode_record(record))
            self._save_summary(now)

    def stop(self, exit_code: int) -> None:
        now = time.time()
        with self._lock:
            if self._fd is None:
                return
            record = {"ev": STOP, "t": now, "exit_code": exit_code}
            self._state.apply(record)
            self._write(encode_record(record))
            self._save_summary(now)
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _identity(self, minion: MinionInfo) -> dict[str, Any]:
        """The start record's ``minion``: who it is, and which queue it serves when the
        settings name the engine it runs (an engine object given from Python may be
        another: no queue is recorded then)."""
        identity = minion.to_dict()
        if self.queue is not None:
            engine, values = self.queue
            if engine_kind(engine) == engine_kind(minion.engine):
                identity["queue"] = queue_ref(engine, values)
        return identity

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
            text = encode_summary(self._state.to_summary(offset, now))
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
