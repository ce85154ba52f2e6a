"""The optional one-line progress display of a pool call (``Pool(progress=True)``)."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

#: Least time between two redraws.
REDRAW_SECONDS = 0.5


def format_line(done: int, total: Optional[int], alive: int, lost: int, failed: int,
                elapsed: float) -> str:
    """``done/total items, workers, failures, rate, ETA`` in one line (``total`` None:
    an input whose length is not known, shown ``?``)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    if total is not None and done >= total:
        eta = "0s"
    elif total is not None and rate > 0:
        eta = f"{(total - done) / rate:.0f}s"
    else:
        eta = "?"
    return (f"pool: {done}/{'?' if total is None else total} items, {alive} worker(s) alive, {lost} lost, "
            f"{failed} failed, {rate:.1f} items/s, ETA {eta}")


class ProgressLine:
    """Redraws one line on ``stream`` (standard error by default) at most twice a second."""

    def __init__(self, total: Optional[int], stream: Optional[TextIO] = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    def update(self, done: int, alive: int, lost: int, failed: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < REDRAW_SECONDS:
            return
        self._drawn = now
        line = format_line(done, self.total, alive, lost, failed, now - self.started)
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def end(self, done: int, alive: int, lost: int, failed: int) -> None:
        self.update(done, alive, lost, failed, force=True)
        self.stream.write("\n")
        self.stream.flush()
