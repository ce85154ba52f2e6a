"""What lost minions hold: what the queue still has in flight, not what their reports
last said (their leases may have ended and their params been run by others since)."""

from __future__ import annotations

from typing import Any, Optional

from .model import MinionStatus, Status, minion_order


def held(status: Status, in_flight: Optional[list[dict[str, Any]]]) -> None:
    """Make what each lost minion of ``status`` is said to hold what the queue holds.

    A lost minion's report says what it ran when it was last heard of; since then, its
    leases may have ended and its params been run by others. With the params the queue
    has in flight (``in_flight``: ids, and holders when the engine names them), a lost
    minion holds those of its params still in flight (and held by it); with the queue's
    counters only, lost minions hold at most the params in flight that alive minions do
    not run. Without the queue, what the reports say stands.
    """
    lost = [m for m in status.minions if m.state == "lost"]
    if not lost:
        return
    if in_flight is not None:
        ids = {str(r.get("id")) for r in in_flight if isinstance(r, dict)}
        for minion in lost:
            holds = [r for r in in_flight if isinstance(r, dict) and _holder_is(r, minion)]
            minion.running = [r for r in minion.running if str(r.get("id")) in ids]
            if holds:  # the queue names this minion as the holder: exact
                mine = {str(r.get("id")) for r in holds}
                minion.running = [r for r in minion.running if str(r.get("id")) in mine]
                minion.in_progress = len(holds)
            elif any(_holder(r) for r in in_flight if isinstance(r, dict)):
                minion.running, minion.in_progress = [], 0  # holders named, not this one
            else:
                minion.in_progress = min(minion.in_progress, len(minion.running))
    flying = (status.queue or {}).get("in_flight")
    if not isinstance(flying, int) or isinstance(flying, bool):
        return
    budget = max(0, flying - status.running)
    for minion in sorted(lost, key=minion_order):
        minion.in_progress = min(minion.in_progress, budget)
        minion.running = minion.running[: minion.in_progress]
        budget -= minion.in_progress


def _holder(record: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Who holds a param in flight, as the engine lists it (``holder`` or the record
    itself), when it says it (a host and pid, or a minion id)."""
    inner = record.get("holder")
    holder: dict[str, Any] = inner if isinstance(inner, dict) else record
    if holder.get("minion") or (holder.get("host") and holder.get("pid") is not None):
        return holder
    return None


def _holder_is(record: dict[str, Any], minion: MinionStatus) -> bool:
    holder = _holder(record)
    if holder is None:
        return False
    # Host and pid first: the engine may name the minion by an id of its own.
    if holder.get("host") and holder.get("pid") is not None:
        return str(holder["host"]) == minion.host and str(holder["pid"]) == str(minion.pid)
    return str(holder.get("minion")) == str(minion.identity.get("minion_id"))
