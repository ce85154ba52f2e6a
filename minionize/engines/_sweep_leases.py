"""Who holds the params in flight of a sweep queue: a lease per param claimed, with the
claim (minion, seq) that holds it and until when, and a heap of their ends so that the
lock holder finds the leases that ended without a scan (:mod:`._sweep_state`)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: written into every claim record."""

    minion: str
    host: str
    pid: int
    job: str = ""


class Lease:
    """A claim on one param, valid until ``expiry`` (wall clock, seconds)."""

    __slots__ = ("minion", "seq", "expiry", "host", "pid", "job", "started")

    def __init__(
        self, minion: str, seq: int, expiry: float, host: str, pid: int, job: str,
        started: bool = True,
    ) -> None:
        #: The claim (minion, seq) that holds the lease, and until when.
        self.minion, self.seq, self.expiry = minion, seq, expiry
        #: Where that minion runs (said in the dead-letter reason when it expires).
        self.host, self.pid, self.job = host, pid, job
        #: False for a param claimed ahead and not handed to a task yet: its expiry
        #: puts it back without counting an attempt (it never ran).
        self.started = started

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
