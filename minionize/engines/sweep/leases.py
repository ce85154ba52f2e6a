"""Who holds the params in flight of a sweep queue: a lease per param claimed, with the
claim (minion, seq) that holds it and until when, and a heap of their ends so that the
lock holder finds the leases that ended without a scan (:mod:`.state`)."""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

from ...owners import host_hash, is_gone


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: written into every claim record."""

    minion: str
    host: str
    pid: int
    job: str = ""
    #: The process's start time (clock ticks since boot, 0 when unknown): with the pid,
    #: it tells a holder of this host that ended from a later process given its pid.
    start: int = 0


class Lease:
    """A claim on one param, valid until ``expiry`` (wall clock, seconds)."""

    __slots__ = ("minion", "seq", "expiry", "host", "pid", "job", "started", "start")

    def __init__(
        self, minion: str, seq: int, expiry: float, host: str, pid: int, job: str,
        started: bool = True, start: int = 0,
    ) -> None:
        #: The claim (minion, seq) that holds the lease, and until when.
        self.minion, self.seq, self.expiry = minion, seq, expiry
        #: Where that minion runs (said in the dead-letter reason when it expires).
        self.host, self.pid, self.job = host, pid, job
        #: False for a param claimed ahead and not handed to a task yet: its expiry
        #: puts it back without counting an attempt (it never ran).
        self.started = started
        #: The holder's process start time (see :class:`Owner`; 0: unknown).
        self.start = start

    def describe(self) -> str:
        job = f", job {self.job}" if self.job else ""
        return f"minion {self.minion} on {self.host} (pid {self.pid}{job})"


class Leases:
    """The leases of the params in flight, by param index, with a heap of their ends."""

    def __init__(self, leases: Optional[dict[int, Lease]] = None) -> None:
        self.by_index: dict[int, Lease] = leases or {}
        #: (expiry, index, minion, seq): may hold stale entries, checked when popped.
        self.heap: list[tuple[float, int, str, int]] = []
        self._rebuild()

    def __len__(self) -> int:
        return len(self.by_index)

    def __iter__(self) -> Iterator[int]:
        return iter(self.by_index)

    def items(self) -> Iterable[tuple[int, Lease]]:
        return self.by_index.items()

    def values(self) -> Iterable[Lease]:
        return self.by_index.values()

    def get(self, index: int) -> Optional[Lease]:
        return self.by_index.get(index)

    def put(self, index: int, lease: Lease) -> None:
        """A new lease, or ``lease`` extended (its expiry changed)."""
        self.by_index[index] = lease
        heapq.heappush(self.heap, (lease.expiry, index, lease.minion, lease.seq))
        if len(self.heap) > 2 * len(self.by_index) + 1024:
            # Settled and extended leases leave stale entries: rebuild, amortised O(1).
            self._rebuild()

    def _rebuild(self) -> None:
        self.heap = [(le.expiry, i, le.minion, le.seq) for i, le in self.by_index.items()]
        heapq.heapify(self.heap)

    def drop(self, index: int) -> None:
        del self.by_index[index]

    def holds(self, index: int, minion: str, seq: int) -> bool:
        """Whether the claim ``(minion, seq)`` still holds the lease of ``index``."""
        lease = self.by_index.get(index)
        return lease is not None and lease.minion == minion and lease.seq == seq

    def take(self, index: int, minion: str, seq: int) -> Optional[Lease]:
        """Remove and return the lease of ``index`` if the claim still holds it."""
        lease = self.by_index.get(index)
        if lease is None or lease.minion != minion or lease.seq != seq:
            return None
        del self.by_index[index]
        return lease

    def ended(self, now: float) -> list[tuple[int, Lease]]:
        """The leases that ended at or before ``now`` (left in place)."""
        found = []
        heap = self.heap
        while heap and heap[0][0] <= now:
            _, index, minion, seq = heapq.heappop(heap)
            lease = self.by_index.get(index)
            if lease is None or lease.minion != minion or lease.seq != seq or lease.expiry > now:
                continue  # settled or extended since
            found.append((index, lease))
        return found

    def counts(self, now: float) -> tuple[int, int]:
        """(unexpired, expired) leases."""
        expired = sum(1 for lease in self.by_index.values() if lease.expiry <= now)
        return len(self.by_index) - expired, expired

    def held_by_gone(self) -> list[tuple[int, Lease]]:
        """The leases whose holder is a process of this host that ended (its pid is
        gone, or was given to a process started after the claim): it cannot come back,
        so waiting for its leases to expire is waiting for nothing. A holder of another
        host, or whose start time is unknown and whose pid is alive, is not gone."""
        verdicts: dict[tuple[str, int, int], bool] = {}
        found = []
        for index, lease in self.by_index.items():
            key = (lease.host, lease.pid, lease.start)
            gone = verdicts.get(key)
            if gone is None:
                gone = verdicts[key] = is_gone(f"{host_hash(lease.host)}.{lease.pid}.{lease.start}")
            if gone:
                found.append((index, lease))
        return found

    def holders(self) -> list[dict[str, Any]]:
        """Who holds the params in flight: a row per holder (minion, host, pid, job),
        with how many it holds and when the last of its leases ends (``lease_end``, wall
        clock: it comes back by then unless it renews them), most params first."""
        rows: dict[str, dict[str, Any]] = {}
        for lease in self.by_index.values():
            row = rows.get(lease.minion)
            if row is None:
                row = rows[lease.minion] = {
                    "minion": lease.minion, "host": lease.host, "pid": lease.pid,
                    "job": lease.job, "params": 0, "lease_end": lease.expiry,
                }
            row["params"] += 1
            row["lease_end"] = max(row["lease_end"], lease.expiry)
        return sorted(rows.values(), key=lambda row: (-row["params"], row["minion"]))


def holder_line(row: dict[str, Any], now: float) -> str:
    """``2 held by minion m on host (pid 12, job 34), lease ends in 4m59s (at 12:03:04)``."""
    return f"{row['params']} {held_text(row, now)}"


def held_text(row: dict[str, Any], now: float) -> str:
    """``held by minion m on host (pid 12, job 34), lease ends in 4m59s (at 12:03:04)``
    (``row``: minion, host, pid, job, lease_end)."""
    job = f", job {row['job']}" if row["job"] else ""
    left = max(0, int(row["lease_end"] - now + 0.999))
    at = time.strftime("%H:%M:%S", time.localtime(row["lease_end"]))
    return (f"held by minion {row['minion']} on {row['host']} (pid {row['pid']}{job}), "
            f"lease ends in {left // 60}m{left % 60:02d}s (at {at})")
