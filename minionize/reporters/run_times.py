"""The queue's record of how long its tasks run: the ``task`` lines of the reports that
the minions of one queue leave in one directory (``REPORTER_JSON_DIRECTORY``).

A minion that starts late in an allocation has run nothing yet; the minions before it
have. :func:`recent_run_times` reads the end of each report of the same queue (a bounded
tail, whatever the length of the runs) and gives the durations of the most recent
attempts that ran to their end (done or failed; a param given back did not).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from ..engines.base import Settle
from .format import EVENTS_SUFFIX, START, TASK, read_events, report_files, sane_number
from .queue_ref import ref_key

#: Bytes read from the end of each report (about 2,000 task lines).
TAIL_BYTES = 256 * 1024
#: Bytes read from the start of a report for its start record.
HEAD_BYTES = 64 * 1024
#: Outcomes of attempts that ran to their end (or to their timeout).
RAN = frozenset((Settle.DONE.value, Settle.RETRY.value, Settle.DEAD.value))


def _read(path: Path, start: int, size: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read(size)
    except OSError:
        return b""


def _queue_of(path: Path) -> Optional[tuple[str, str]]:
    """The queue a report's start record names (None: none recorded, or unreadable)."""
    head = _read(path, 0, HEAD_BYTES)
    events, _ = read_events(head.split(b"\n", 1)[0] + b"\n")
    if not events or events[0].get("ev") != START:
        return None
    minion = events[0].get("minion")
    return ref_key(minion.get("queue")) if isinstance(minion, dict) else None


def _tail_tasks(path: Path) -> Iterable[tuple[float, float]]:
    """(end, duration) of the attempts in the tail of one report that ran to their end."""
    try:
        size = path.stat().st_size
    except OSError:
        return []
    start = max(0, size - TAIL_BYTES)
    data = _read(path, start, TAIL_BYTES)
    if start:
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""  # a cut first line
    events, _ = read_events(data)
    found = []
    for event in events:
        if event.get("ev") != TASK or event.get("outcome") not in RAN:
            continue
        began, took = sane_number(event.get("start")), sane_number(event.get("duration"))
        if began is not None and took is not None and took >= 0:
            found.append((began + took, took))
    return found


def recent_run_times(directory: str | os.PathLike[str], queue: Any,
                     limit: int) -> list[float]:
    """The durations of the ``limit`` most recent attempts that ran to their end, in the
    reports of ``directory`` whose minions serve ``queue`` (a queue reference, see
    :mod:`.queue_ref`), oldest first. [] for none, a missing or unreadable directory."""
    wanted = ref_key(queue)
    if wanted is None or limit <= 0:
        return []
    root = Path(directory)
    ended: list[tuple[float, float]] = []
    for name in report_files(root):
        path = root / (name + EVENTS_SUFFIX)
        if _queue_of(path) != wanted:
            continue
        ended.extend(_tail_tasks(path))
    return [took for _, took in sorted(heapq.nlargest(limit, ended))]
