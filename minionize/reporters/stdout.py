"""The stdout reporter: one readable line per settled attempt, on standard output.

Tasks usually write to the same standard output. Each line goes out with a single
``write`` on the file descriptor (after flushing Python's own buffer), so a report line
is never split by, nor buffered behind, the output of a task running at the same time.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import IO, TYPE_CHECKING, Optional

from ..engines.base import Settle
from .base import MinionInfo, Reporter, TaskReport
from .format import FAILED, OUTCOMES, json_param

if TYPE_CHECKING:
    from ..config import Settings

PARAM_CHARS = 200


def param_text(param: object) -> str:
    """The param as compact JSON (its repr if JSON cannot encode it), cut to one line."""
    import json

    value, is_repr = json_param(param)
    text = str(value) if is_repr else json.dumps(value, separators=(",", ":"))
    text = text.replace("\n", "\\n")
    return text if len(text) <= PARAM_CHARS else text[: PARAM_CHARS - 3] + "..."


def format_task(report: TaskReport) -> str:
    """``minionize: done  attempt 1  0.012s  "param"`` (and why, for a failure)."""
    line = (
        f"minionize: {report.outcome:<8} attempt {report.attempt}  "
        f"{report.duration:.3f}s  {param_text(report.param)}"
    )
    why = []
    reason = report.reason.strip().splitlines()[-1][:200] if report.reason.strip() else ""
    if report.outcome != Settle.DONE.value:
        code = report.exit_code
        if code is not None and f"exit code {code}" not in reason:
            why.append(f"exit {code}")
        if reason:
            why.append(reason)
    if report.stderr_path and report.outcome in FAILED:
        why.append(f"stderr in {report.stderr_path}")
    why = [w for w in why if w]
    return line + (f"  ({'; '.join(why)})" if why else "")


class StdoutReporter(Reporter):
    """Prints a line per task, plus one when the minion starts and stops."""

    name = "stdout"

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(OUTCOMES, 0)

    @classmethod
    def from_settings(cls, settings: Settings) -> StdoutReporter:
        return cls()

    def start(self, minion: MinionInfo) -> None:
        job = f" job {minion.job_label}" if minion.job_label else ""
        self._emit(f"minionize: minion {minion.host}:{minion.pid}{job} starts")

    def task_finished(self, report: TaskReport) -> None:
        with self._lock:
            if report.outcome in self._counts:
                self._counts[report.outcome] += 1
        self._emit(format_task(report))

    def stop(self, exit_code: int) -> None:
        done, retry, dead, released = (self._counts[settle.value] for settle in
                                       (Settle.DONE, Settle.RETRY, Settle.DEAD, Settle.RELEASED))
        self._emit(
            f"minionize: minion stops (exit {exit_code}): {done} done, "
            f"{retry + dead} failed attempts, {dead} dead-lettered"
            + (f", {released} released" if released else "")
        )

    def _emit(self, line: str) -> None:
        data = line + "\n"
        with self._lock:
            stream = self._stream if self._stream is not None else sys.stdout
            try:
                stream.flush()
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):
                fd = -1
            try:
                if fd >= 0:
                    # One write(2) per line: never interleaved with a task's own output.
                    encoded = data.encode("utf-8", "backslashreplace")
                    written = os.write(fd, encoded)
                    while written < len(encoded):
                        written += os.write(fd, encoded[written:])
                else:
                    stream.write(data)
                    stream.flush()
            except (OSError, ValueError):
                pass  # a closed stdout must not stop the minion
