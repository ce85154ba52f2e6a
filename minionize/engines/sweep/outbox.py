"""What a sweep minion owes its queue between two lock sessions.

A settle is not written at once: a worker that settles a param takes its next one at
once, so the record is written microseconds later under the same lock as that claim
(one lock session per task rather than two: measured, about 80 us of CPU per task less
with a process per task). Every other session writes what waits too, and the minion
loop flushes every 0.1 s. Params claimed *ahead* wait here as well (while tasks are
short, a claim takes a few more, handed to the next tasks without the lock), with the
``start`` records that say they were handed out. If the process dies, what waits here
is lost, never a param: its lease expires and it runs again (claimed ahead and not
started: without counting an attempt). What is owed is an :class:`OwedSettle` each
(and the starts), written by :meth:`Outbox.write_pending` as a lock session begins
(:meth:`.access.QueueAccess.locked`); the deliveries of a claim are made here
(:meth:`Outbox.deliver`).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import NamedTuple, Optional

from ..base import Delivery
from .files import param_id
from .store import Claimed, SettleOp, SweepStore

#: While this minion's tasks average less than this many seconds, a claim takes up to
#: AHEAD_CLAIMS more params, handed to the next tasks without a lock session each.
AHEAD_TASK_SECONDS = 0.02
AHEAD_CLAIMS = 7

class OwedSettle(NamedTuple):
    """A settle not written yet: ``op`` for claim ``seq`` of param ``param_index``;
    ``result``: an ack's line of results.jsonl (:func:`.results.result_line`)."""

    op: SettleOp
    param_index: int
    seq: int
    reason: str = ""
    result: Optional[bytes] = None


class Owed(NamedTuple):
    """What one :meth:`Outbox.write_pending` took: the starts (claims ahead handed out),
    and the settles in their order."""

    starts: list[tuple[int, int]]
    settles: list[OwedSettle]


class Outbox:
    """Settles and starts not written yet, params claimed ahead, and the deliveries
    handed out (their number, and how long tasks take), of minion ``minion``.
    Thread-safe."""

    def __init__(self, minion: str) -> None:
        self.minion = minion
        #: Guards ``starts``, ``settles`` and ``ahead``.
        self._lock = threading.Lock()
        self.starts: list[tuple[int, int]] = []
        self.settles: list[OwedSettle] = []
        self.ahead: collections.deque[Delivery] = collections.deque()
        self._out_lock = threading.Lock()
        #: Deliveries handed out and not settled yet; when each left.
        self.out = 0
        self._out_at: dict[tuple[int, int], float] = {}
        #: The recent task duration (a moving average).
        self._task_seconds: Optional[float] = None
        #: Set at every settle: a take waiting for a param wakes up.
        self.settled = threading.Event()

    # -- handing out -------------------------------------------------------------------
    def take_ahead(self, max_count: int) -> list[Delivery]:
        """Up to ``max_count`` params claimed ahead, now handed out (a ``start`` each)."""
        with self._lock:
            out = [self.ahead.popleft() for _ in range(min(max_count, len(self.ahead)))]
            self.starts.extend(d.handle for d in out)
        return self.hand_out(out)

    def ahead_wanted(self) -> int:
        """How many params a claim should take ahead (none while tasks are long)."""
        fast = self._task_seconds is not None and self._task_seconds < AHEAD_TASK_SECONDS
        return AHEAD_CLAIMS if fast else 0

    def keep_ahead(self, deliveries: list[Delivery]) -> None:
        with self._lock:
            self.ahead.extend(deliveries)

    def held_ahead(self) -> list[Delivery]:
        with self._lock:
            return [*self.ahead]

    def deliver(self, claimed: list[Claimed]) -> list[Delivery]:
        """The deliveries of the params a claim took: those claimed ahead (not started)
        are kept for the next takes, the others handed out now."""
        deliveries = [
            Delivery(
                param=json.loads(c.text),
                id=param_id(c.text),
                attempt=c.attempt,
                handle=(c.index, c.seq),
            )
            for c in claimed
        ]
        self.keep_ahead([d for d, c in zip(deliveries, claimed) if not c.started])
        return self.hand_out([d for d, c in zip(deliveries, claimed) if c.started])

    def hand_out(self, deliveries: list[Delivery]) -> list[Delivery]:
        now = time.monotonic()
        with self._out_lock:
            self.out += len(deliveries)
            for delivery in deliveries:
                self._out_at[delivery.handle] = now
        return deliveries

    # -- owing -------------------------------------------------------------------------
    def owes(self) -> bool:
        """Whether anything waits to be written."""
        return bool(self.settles or self.starts)

    def settle(self, op: SettleOp, delivery: Delivery, reason: str = "",
               result: Optional[bytes] = None) -> None:
        """Owe ``op`` for ``delivery``, written by the next :meth:`write_pending`;
        ``result``: an ack's line of results.jsonl."""
        index, seq = delivery.handle
        with self._lock:
            self.settles.append(OwedSettle(op, index, seq, reason, result))
        with self._out_lock:
            self.out = max(0, self.out - 1)
            out_at = self._out_at.pop((index, seq), None)
            if out_at is not None:
                took = time.monotonic() - out_at
                average = self._task_seconds
                self._task_seconds = took if average is None else 0.8 * average + 0.2 * took
        self.settled.set()

    def give_back(self, owed: Owed) -> None:
        """Owe ``owed`` again, first (it may not have been recorded)."""
        with self._lock:
            self.starts[:0] = owed.starts
            self.settles[:0] = owed.settles

    def release(self, claims: list[tuple[int, int]]) -> None:
        """Owe a ``release`` of these claims (made but not to be run)."""
        with self._lock:
            self.settles.extend(OwedSettle("release", index, seq) for index, seq in claims)

    def release_ahead(self) -> None:
        """Give back the params claimed ahead and never handed out (no attempt counts)."""
        with self._lock:
            self.settles.extend(OwedSettle("release", *d.handle) for d in self.ahead)
            self.ahead.clear()

    # -- writing -----------------------------------------------------------------------
    def write_pending(self, store: SweepStore) -> Owed:
        """Write what is owed, starts first, then the acks' results, then the settles in
        order (lock held); what was owed. What could not be written stays owed for the
        next session."""
        if not (self.settles or self.starts):
            return NOTHING
        with self._lock:
            owed = Owed(self.starts, self.settles)
            self.starts, self.settles = [], []
        starts, settles = owed
        minion = self.minion
        written = 0
        try:
            if starts:
                store.start(starts, minion)
                starts = []
            stored: set[int] = set()
            if any(s.result is not None for s in settles):
                stored = store.store_results([(s.param_index, s.result) for s in settles
                                              if s.op == "ack"])
            for op, index, seq, reason, _ in settles:
                store.settle(op, index, minion, seq, reason, op == "ack" and index in stored)
                written += 1
        except BaseException:
            self.give_back(Owed(starts, settles[written:]))
            raise
        return owed


#: What :meth:`Outbox.write_pending` took when nothing was owed.
NOTHING = Owed([], [])
