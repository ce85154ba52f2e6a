"""``--progress``, ``--eta``, ``--bar``: one line on stderr, redrawn, from the queue's own
counters (``engine.status()``: every minion's work, not only this one's).

Drawn only when stderr is a terminal (a log file gets nothing). Tasks write to the same
terminal (they inherit it) whenever they like, so the line is kept where they never
write: the terminal's last row, out of a scrolling region made of the rows above it
(what ``apt`` does). Each draw saves the cursor, writes the last row, and puts the cursor
back where the task left it, in one write; task lines scroll above it, never mixed with
it, and keep their terminal (not a pipe: no change of buffering, colours or prompts). A
terminal too small for that, or whose size is unknown, gets the line redrawn in place.
At the end the region is undone and the last line stays, below the tasks' output. The
counters are read by
an engine of its own, about once a second (less often when reading them is slow), so
that the minion's engine is never shared with the drawing thread. An engine that cannot
count (the file engine) shows this minion's own counts, without a total. The rate, and
the ETA from it, are those of the last :data:`WINDOW` seconds, so the ETA follows a run
whose pace changes (more minions joining, slower params).
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from typing import IO, Any, Callable, Optional

from ..engines.base import Engine
from ..minion.hooks import Hook
from ..reporters.base import MinionInfo, TaskReport

MODES = ("progress", "eta", "bar")
#: Seconds of history the rate is computed over.
WINDOW = 30.0
INTERVAL = 1.0
BAR_WIDTH = 30


def duration_text(seconds: Optional[float]) -> str:
    """``12s``, ``3m05s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Rate:
    """Params finished per second over the last ``window`` seconds."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, now: float, finished: int) -> Optional[float]:
        self.samples.append((now, finished))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        first_time, first = self.samples[0]
        if now - first_time <= 0:
            return None
        return (finished - first) / (now - first_time)


def render(mode: str, counts: dict[str, Any], rate: Optional[float]) -> str:
    """The line of ``mode`` for ``counts`` (the keys of ``engine.status()``)."""
    done, dead = int(counts.get("done") or 0), int(counts.get("dead") or 0)
    finished = done + dead
    total = counts.get("total")
    running = counts.get("in_flight")
    eta: Optional[float] = None
    if total is not None and rate:
        eta = max(0, total - finished) / rate
    elif total is not None and finished >= total:
        eta = 0.0
    of_total = f"{finished}/{total}" if total is not None else f"{finished}"
    rate_text = f"{rate:.1f}/s" if rate is not None else "?/s"
    if mode == "bar":
        share = finished / total if total else 0.0
        filled = int(share * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return f"{share * 100:3.0f}% [{bar}] {of_total} ETA {duration_text(eta)}"
    line = f"{of_total} done ({dead} dead)"
    if running is not None:
        line += f", {running} running"
    line += f", {rate_text}"
    if mode == "eta":
        line += f", ETA {duration_text(eta)}"
    return line


class BottomLine:
    """The escapes that keep one line on the terminal's last row, out of the scrolling
    region above it (see the module), or redrawn in place where that cannot be done."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.rows = 0  # the terminal's height the region was made for (0: none made)

    def _height(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).lines
        except (AttributeError, ValueError, OSError):
            return 0

    def draw(self, line: str) -> str:
        """What to write to show ``line``: one write, so that no task's bytes fall
        inside it, and the cursor is left where the tasks' output is."""
        rows = self._height()
        if rows < 3:
            return self.release() + f"\r{line}\x1b[K"
        setup = ""
        if rows != self.rows:
            # A new line for the region's last row (scrolling up if the cursor is on the
            # terminal's last), the region above the bar, the cursor back on that row.
            setup = f"\n\x1b7\x1b[1;{rows - 1}r\x1b8\x1b[1A"
            self.rows = rows
        return f"{setup}\x1b7\x1b[{rows};1H{line}\x1b[K\x1b8"

    def release(self) -> str:
        """What undoes the region and clears the bar's row (nothing if none was made)."""
        if not self.rows:
            return ""
        rows, self.rows = self.rows, 0
        return f"\x1b7\x1b[r\x1b[{rows};1H\x1b[2K\x1b8"


class Progress(Hook):
    """Draws the line of ``mode`` on ``stream`` while the minion runs (see the module).

    ``open_engine`` makes the engine whose ``status()`` is read (None: this minion's
    own counts only)."""

    name = "progress"

    def __init__(self, mode: str, open_engine: Optional[Callable[[], Engine]] = None,
                 stream: Optional[IO[str]] = None, interval: float = INTERVAL) -> None:
        self.mode = mode
        self.open_engine = open_engine
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._own = {"done": 0, "dead": 0}
        self._rate = Rate()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._engine: Optional[Engine] = None
        self._screen = BottomLine(self.stream)

    def before_run(self, minion: MinionInfo) -> None:
        try:
            drawn = self.stream.isatty()
        except (AttributeError, ValueError):
            drawn = False
        if drawn:
            self._thread = threading.Thread(target=self._draw_loop, name="minion-progress",
                                            daemon=True)
            self._thread.start()

    def task_settled(self, report: TaskReport) -> None:
        if report.outcome in self._own:
            self._own[report.outcome] += 1

    def after_run(self, exit_code: int) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5)
        line = self._line()
        self._write(self._screen.release() + f"\r{line}\x1b[K\n")
        if self._engine is not None:
            try:
                self._engine.close()
            except Exception:
                pass

    # -- drawing ---------------------------------------------------------------------
    def _draw_loop(self) -> None:
        if self.open_engine is not None:
            try:
                engine = self.open_engine()
                engine.open()
                engine.status()
                self._engine = engine
            except Exception:
                self._engine = None  # this minion's own counts, then
        wait = self.interval
        while not self._stop.wait(wait):
            began = time.monotonic()
            self._draw()
            wait = max(self.interval, 10 * (time.monotonic() - began))

    def counts(self) -> dict[str, Any]:
        if self._engine is not None:
            try:
                return self._engine.status()
            except Exception:
                pass
        return dict(self._own)

    def _line(self) -> str:
        counts = self.counts()
        finished = int(counts.get("done") or 0) + int(counts.get("dead") or 0)
        rate = self._rate.add(time.monotonic(), finished)
        return render(self.mode, counts, rate)

    def _draw(self) -> None:
        self._write(self._screen.draw(self._line()))

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass
