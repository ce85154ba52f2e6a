"""``mtop``: htop for minions. A live view of a report directory, refreshed every second.

Drawn with ``rich`` (``pip install 'minionize[mtop]'``), imported only here. The view is
a pure function of a :class:`~minionize.status.model.Status` (:func:`render`), so it can be
checked through rich's own recording console as well as in a real terminal.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..engines.base import Settle
from ..errors import MissingExtraError
from .model import THROUGHPUT_BUCKET, Status, minion_order
from .queue import query_queue
from .read import read_status
from .text import (
    allocator_text,
    count_text,
    duration,
    eta_text,
    failure_reason,
    param_text,
    queue_line,
    rate,
    totals_words,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

SPARKS = "▁▂▃▄▅▆▇█"
#: Seconds between two questions to the queue (it may be a remote service; asked in a
#: thread): once a frame, so that its counts trail the reports' by a second at most.
QUEUE_EVERY = 1.0
STATE_STYLE = {"alive": "green", "finished": "dim", "lost": "bold red"}


def require_rich() -> None:
    try:
        import rich  # noqa: F401
    except ImportError:
        raise MissingExtraError("mtop", "mtop", "rich") from None


def sparkline(counts: list[int]) -> str:
    top = max(counts, default=0)
    if top == 0:
        return SPARKS[0] * len(counts)
    return "".join(
        SPARKS[min(len(SPARKS) - 1, (c * (len(SPARKS) - 1) + top - 1) // top)] if c else " "
        for c in counts
    )


def render(status: Status, max_rows: int = 20) -> RenderableType:
    """The whole screen for ``status``: header, progress, minions, throughput, errors."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    # One row each, cut to the terminal's width (never wrapped).
    head = Text(no_wrap=True, overflow="ellipsis")
    head.append("mtop ", style="bold")
    head.append(time.strftime("%H:%M:%S", time.localtime(status.now)))
    head.append(f"   {count_text(len(status.minions), 'minion')}: ")
    head.append(f"{status.count('alive')} alive", style="green")
    head.append(", ")
    head.append(f"{status.count('lost')} lost", style="bold red" if status.count("lost") else "")
    head.append(f", {status.count('finished')} finished   (q quits)  {status.directory}")
    parts.append(head)
    if status.empty:
        missing = "" if status.exists else " (the directory does not exist yet)"
        parts.append(
            Text(
                f"No minion reports in {status.directory}{missing}: waiting for minions "
                "started with MINION_REPORTER=json."
            )
        )

    progress = status.progress
    if progress is not None:
        finished, total = progress
        bar = Table.grid(padding=(0, 1))
        bar.add_column(width=40)
        bar.add_column()
        percent = 100.0 * finished / total if total else 100.0
        bar.add_row(
            ProgressBar(total=max(total, 1), completed=finished, width=40),
            Text(f"{finished}/{total} params finished ({percent:.1f} %)", no_wrap=True,
                 overflow="ellipsis"),
        )
        parts.append(bar)
        parts.append(Text(f"ETA {eta_text(status)}", no_wrap=True, overflow="ellipsis"))
    else:
        parts.append(Text(f"queue: {queue_line(status)}", style="dim", no_wrap=True,
                          overflow="ellipsis"))

    totals = Text()
    styles = {"done": "green", "note": "dim", "failed": "yellow" if status.failed else "",
              "dead": "red" if status.dead_params else ""}
    for k, (words, kind) in enumerate(totals_words(status)):
        totals.append(("   " if k else "") + words, style=styles[kind])
    totals.append(f"   running {status.running}")
    if status.stranded:
        totals.append(f"   held by lost minions {status.stranded}", style="red")
    totals.no_wrap, totals.overflow = True, "ellipsis"
    parts.append(totals)
    recent = "-" if status.rate_recent is None else rate(status.rate_recent)
    parts.append(Text(f"rate {recent} now, {rate(status.rate_overall)} overall", no_wrap=True,
                      overflow="ellipsis"))
    allocator = allocator_text(status)
    if allocator:
        parts.append(Text(allocator, style="cyan", no_wrap=True, overflow="ellipsis"))

    if status.minions:
        table = Table(expand=True, pad_edge=False, box=None, header_style="bold reverse")
        numbers = ("DONE", "FAILED", "DEAD", "RUN", "RUNNING FOR")
        for name in ("HOST", "JOB", "STATE", *numbers, "CURRENT PARAM"):
            table.add_column(
                name,
                justify="right" if name in numbers else "left",
                no_wrap=True,
                overflow="ellipsis",
                ratio=3 if name == "CURRENT PARAM" else None,
            )
        minions = sorted(status.minions, key=minion_order)
        for m in minions[:max_rows]:
            current = m.current if m.state != "finished" else None
            since = ""
            if current is not None and m.state == "alive":
                since = duration(status.now - float(current.get("start") or status.now))
            more = f" (+{len(m.running) - 1})" if current is not None and len(m.running) > 1 else ""
            state = m.state
            if m.state == "lost":
                state = f"lost {duration(status.now - m.last_seen)}"
            table.add_row(
                m.host + (f":{m.pid}" if m.pid else ""),
                m.job or "-",
                Text(state, style=STATE_STYLE.get(m.state, "")),
                str(m.done),
                str(m.failed),
                str(m.dead),
                str(m.in_progress) if m.state == "alive" else "",
                since,
                ("held: " if m.state == "lost" else "") + param_text(current, 80) + more
                if current is not None
                else "",
            )
        if len(minions) > max_rows:
            table.add_row(f"... {len(minions) - max_rows} more", *[""] * 8)
        parts.append(table)

    counts = status.throughput
    spark = Text("throughput ", no_wrap=True, overflow="ellipsis")
    spark.append(sparkline(counts), style="cyan")
    spark.append(
        f"  last {len(counts) * THROUGHPUT_BUCKET // 60} min, params finished per "
        f"{THROUGHPUT_BUCKET} s (highest: {max(counts, default=0)})",
        style="dim",
    )
    parts.append(spark)

    if status.errors:
        parts.append(Text("latest errors", style="bold"))
        for record in status.errors[:4]:
            line = Text("  ", no_wrap=True, overflow="ellipsis")
            line.append(time.strftime("%H:%M:%S", time.localtime(float(record.get("t") or 0))))
            line.append(
                f"  {record.get('minion', '')}  {param_text(record, 50)}  "
                f"attempt {record.get('attempt')}  "
            )
            dead = record.get("outcome") == Settle.DEAD.value
            line.append("dead-lettered" if dead else "retried", style="red" if dead else "yellow")
            reason = failure_reason(record)
            if reason:
                line.append(f"  {reason}")
            parts.append(line)
            detail = []
            stderr = str(record.get("stderr_tail") or "").strip().splitlines()
            if stderr:
                detail.append(f"| {stderr[-1][:200]}")
            if record.get("stderr_path"):
                detail.append(f"log: {record['stderr_path']}")
            if detail:
                parts.append(
                    Text(
                        "      " + "   ".join(detail),
                        style="dim",
                        no_wrap=True,
                        overflow="ellipsis",
                    )
                )
    for warning in status.warnings[:3]:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return Group(*parts)


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], Optional[str]]]:
    """Yield ``wait(seconds) -> key or None``; keys are read in cbreak mode from the tty."""
    stdin = sys.stdin
    fd = -1
    try:
        if stdin is not None and stdin.isatty():
            fd = stdin.fileno()
    except (OSError, ValueError):
        fd = -1
    if fd < 0:

        def sleep(seconds: float) -> Optional[str]:
            time.sleep(seconds)
            return None

        yield sleep
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def wait(seconds: float) -> Optional[str]:
        ready, _, _ = select.select([fd], [], [], max(0.0, seconds))
        if not ready:
            return None
        data = os.read(fd, 32)
        return data.decode("utf-8", "replace") if data else None

    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _Queue:
    """Asks the queue for its counters in the background, every QUEUE_EVERY seconds."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.counters: Optional[dict[str, Any]] = None
        self.note = "" if enabled else "not asked (--no-queue)"
        self._asked = -QUEUE_EVERY
        self._busy = False
        self._lock = threading.Lock()

    def poll(self) -> tuple[Optional[dict[str, Any]], str]:
        now = time.monotonic()
        with self._lock:
            if self.enabled and not self._busy and now - self._asked >= QUEUE_EVERY:
                self._busy = True
                self._asked = now
                threading.Thread(target=self._ask, daemon=True).start()
            return self.counters, self.note

    def _ask(self) -> None:
        counters, note = query_queue(timeout=10.0)
        with self._lock:
            self.counters, self.note, self._busy = counters, note, False


def watch(
    directory: str,
    lost_after: Optional[float] = None,
    ask_queue: bool = True,
    interval: float = 1.0,
    console: Optional[Console] = None,
    frames: Optional[int] = None,
) -> int:
    """Show the live view until ``q`` (or Ctrl-C). ``frames`` bounds it (tests)."""
    require_rich()
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    queue = _Queue(ask_queue)
    full_screen = console.is_terminal

    def frame() -> RenderableType:
        counters, note = queue.poll()
        status = read_status(directory, lost_after=lost_after, queue=counters, queue_note=note)
        return render(status, max_rows=max(3, console.size.height - 16))

    shown = 0
    try:
        with (
            _keys() as wait,
            Live(
                frame(), console=console, screen=full_screen, auto_refresh=False, transient=False
            ) as live,
        ):
            while frames is None or shown < frames:
                live.update(frame(), refresh=True)
                shown += 1
                deadline = time.monotonic() + interval
                while (left := deadline - time.monotonic()) > 0:
                    key = wait(left)
                    if key and key.strip().lower().startswith("q"):
                        return 0
    except KeyboardInterrupt:
        return 0
    return 0
