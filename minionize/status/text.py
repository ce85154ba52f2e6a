"""The text of ``minion-status``, and the words and numbers ``mtop`` shows too."""

from __future__ import annotations

import json
import time
from typing import Any, Optional

from ..engines.base import Settle
from .model import Status, minion_order


def duration(seconds: Optional[float]) -> str:
    """``4.2 ms``, ``420 ms``, ``4.2 s``, ``12 s``, ``3 min 05 s``, ``2 h 03 min``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24:02d} h"


def count_text(n: int, word: str) -> str:
    """``1 param``, ``0 params``, ``2 params``: a count and its noun, in the right number."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def totals_words(status: Status) -> list[tuple[str, str]]:
    """The run's totals as (text, kind) pairs: ``done`` and ``dead-lettered`` count params
    (the queue's counts when it tells, as the progress does), failed attempts and running
    count attempts; the reports' done attempts are added when they differ."""
    words = [(f"done {status.done_params}", "done")]
    if status.done != status.done_params:
        words.append((f"({count_text(status.done, 'done attempt')} in the reports)", "note"))
    words.append((f"failed attempts {status.failed}", "failed"))
    words.append((f"dead-lettered {status.dead_params}", "dead"))
    return words


def rate(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}/s"
    if value >= 10:
        return f"{value:.1f}/s"
    if value >= 0.1:
        return f"{value:.2f}/s"
    return f"{value * 60:.2f}/min"


def param_text(record: dict[str, Any], limit: int = 60) -> str:
    param = record.get("param")
    if record.get("param_repr"):
        text = str(param)
    else:
        try:
            text = json.dumps(param, separators=(",", ":"))
        except (TypeError, ValueError):
            text = repr(param)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clock(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(t))


def minions_line(status: Status) -> str:
    return (
        f"{count_text(len(status.minions), 'minion')}: {status.count('alive')} alive, "
        f"{status.count('finished')} finished, {status.count('lost')} lost"
    )


def queue_line(status: Status) -> str:
    queue = status.queue
    if not queue:
        return status.queue_note or "queue size unknown"
    words = []
    for key, label in (
        ("todo", "to do"),
        ("in_flight", "in flight"),
        ("expired", "expired"),
        ("done", "done"),
        ("dead", "dead"),
    ):
        if isinstance(queue.get(key), int):
            words.append(f"{queue[key]} {label}")
    described = f" ({status.queue_note})" if status.queue_note else ""
    return ", ".join(words) + described


def eta_text(status: Status) -> str:
    if status.remaining is None:
        return "unknown (the queue's size is unknown)"
    if status.remaining == 0:
        return "the queue is empty"
    left = count_text(status.remaining, "param")
    overdue = status.overdue
    if status.eta is None and overdue is not None:
        return (f"unknown: {left} left, all running, one for {duration(overdue)} (longer than "
                f"the mean attempt, {duration(status.mean_attempt)})")
    if status.eta is None:
        return f"{count_text(status.remaining, 'param')} left, no minion is making progress"
    at = time.strftime("%H:%M:%S", time.localtime(status.now + status.eta))
    return f"{duration(status.eta)} (at {at}), {count_text(status.remaining, 'param')} left"


def allocator_text(status: Status) -> Optional[str]:
    """``allocator at 12:03:04 (30 s ago), jobs NAME on SLURM: target ...: act (why)``:
    the allocator's last decision; None when no allocator decided for these minions."""
    decision = status.allocator
    if decision is None:
        return None
    ago = duration(max(0.0, status.now - decision.t))
    return (f"allocator at {clock(decision.t)} ({ago} ago), jobs {decision.name} on "
            f"{decision.scheduler}: {decision.line()}")


def failure_reason(record: dict[str, Any]) -> str:
    """``exit 3``, or the reason's last line when it says more."""
    reason = str(record.get("reason") or "").strip()
    reason = reason.splitlines()[-1][:200] if reason else ""
    code = record.get("exit_code")
    if isinstance(code, int) and f"exit code {code}" not in reason:
        return f"exit {code}: {reason}" if reason else f"exit {code}"
    return reason


def error_lines(record: dict[str, Any], indent: str = "    ") -> list[str]:
    head = (
        f"{clock(record.get('t'))}  {record.get('minion', '')}  {param_text(record)}  "
        f"attempt {record.get('attempt')}  "
        f"{'dead-lettered' if record.get('outcome') == Settle.DEAD.value else 'will be retried'}"
    )
    lines = ["  " + head]
    why = failure_reason(record)
    if why:
        lines.append(indent + why)
    stderr = str(record.get("stderr_tail") or "").rstrip().splitlines()[-5:]
    lines.extend(f"{indent}| {line[:200]}" for line in stderr)
    if record.get("stderr_path"):
        lines.append(f"{indent}log: {record['stderr_path']}")
    return lines


def format_status(status: Status) -> str:
    """The text ``minion-status`` prints."""
    out: list[str] = []
    if status.empty:
        why = "" if status.exists else " (the directory does not exist)"
        out.append(f"No minion reports in {status.directory}{why}.")
        out.append("Run minions with MINION_REPORTER=json to write them there.")
        if status.queue:
            out.append(f"queue: {queue_line(status)}")
        allocator = allocator_text(status)
        if allocator:
            out.append(allocator)
        out.extend(f"warning: {w}" for w in status.warnings)
        return "\n".join(out) + "\n"
    elapsed = status.elapsed
    out.append(f"{status.directory}: {minions_line(status)}")
    out.append(
        "  " + "   ".join(text for text, _ in totals_words(status))
        + f"   running now {status.running}"
        + (f"   held by lost minions {status.stranded}" if status.stranded else "")
        + (f"   released {status.released}" if status.released else "")
    )
    rates = []
    if status.rate_recent is not None:
        rates.append(f"{rate(status.rate_recent)} over the last minute")
    rates.append(f"{rate(status.rate_overall)} overall")
    over = f" over {duration(elapsed)}" if elapsed is not None else ""
    out.append(f"  rate: {', '.join(rates)}{over}")
    out.append(f"  queue: {queue_line(status)}")
    out.append(f"  ETA: {eta_text(status)}")
    allocator = allocator_text(status)
    if allocator:
        out.append(f"  {allocator}")
    out.append("")
    out.append("minions")
    header = ("STATE", "HOST", "JOB", "PID", "DONE", "FAILED", "DEAD", "RUN", "SEEN", "CURRENT")
    rows = [header]
    for m in sorted(status.minions, key=minion_order):
        current = m.current
        now_running = ""
        if current and m.state == "alive":
            since = status.now - float(current.get("start") or status.now)
            now_running = f"{param_text(current, 40)} for {duration(since)}"
        rows.append(
            (
                m.state,
                m.host,
                m.job or "-",
                str(m.pid or "-"),
                str(m.done),
                str(m.failed),
                str(m.dead),
                str(m.in_progress if m.state == "alive" else 0),
                duration(max(0.0, status.now - m.last_seen)) + " ago",
                now_running,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [
            row[i].ljust(widths[i]) if i < 3 else row[i].rjust(widths[i])
            for i in range(len(widths))
        ]
        out.append(("  " + "  ".join(cells) + "  " + row[-1]).rstrip())
    if status.slowest:
        out.append("")
        out.append("slowest attempts")
        for record in status.slowest[:5]:
            out.append(
                f"  {duration(record.get('duration')):>10}  {param_text(record)}  "
                f"{record.get('outcome')}, attempt {record.get('attempt')}, {record.get('minion')}"
            )
    if status.errors:
        out.append("")
        out.append("last errors")
        for record in status.errors[:5]:
            out.extend(error_lines(record))
    for warning in status.warnings:
        out.append(f"warning: {warning}")
    return "\n".join(out) + "\n"
