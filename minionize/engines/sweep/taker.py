"""How a sweep minion takes params: claims under the lock, and when the queue is over.

:class:`Taker` claims params for :meth:`.engine.SweepEngine.take`, ahead of the tasks
while they are short (:class:`~.outbox.Outbox`), puts back expired leases and those of
holders of this host that ended first, waits while params in flight may come back, and
says whether the queue is exhausted (with ``--wait``, what it waits for).
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from ..base import Delivery
from .access import QueueAccess
from .leases import holder_line
from .lock import LockLost
from .outbox import Outbox
from .state import FLIGHT, TODO, Owner
from .store import SweepStore

#: How often an empty ``take`` looks again while params are in flight.
POLL_INTERVAL = 0.05
#: How often a minion looks for leases held by processes of this host that ended (a
#: scan of the leases; at open and at the first claim too).
GONE_CHECK_EVERY = 2.0
#: How often a minion waiting for others' params (``--wait``) says what it waits for.
WAIT_SAY_EVERY = 60.0

log = logging.getLogger("minionize.sweep")


class Every:
    """Says when ``seconds`` have passed since it last said so (the first time: now)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: Optional[float] = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.seconds:
            return False
        self._last = now
        return True


def say_waiting(store: SweepStore, mine: str) -> None:
    """Say which params minion ``mine`` waits for, and whose (lock held)."""
    rows = [row for row in store.state.leases.holders() if row["minion"] != mine]
    if rows:
        log.warning(
            "%s: waiting for %d params in flight (--wait): %s", store.directory,
            sum(row["params"] for row in rows),
            "; ".join(holder_line(row, time.time()) for row in rows),
        )


class Taker:
    """Takes params for minion ``owner`` through ``access``: leases of ``lease``
    seconds; ``max_attempts`` and ``wait`` as :class:`~.engine.SweepEngine`'s."""

    def __init__(self, access: QueueAccess, outbox: Outbox, owner: Owner, *, lease: float,
                 max_attempts: int, wait: bool) -> None:
        self._access, self._outbox, self.owner = access, outbox, owner
        self.lease, self.max_attempts, self.wait = lease, max_attempts, wait
        self._gone_check = Every(GONE_CHECK_EVERY)
        self._wait_note = Every(WAIT_SAY_EVERY)

    def take(self, max_count: int, timeout: float, claim_ahead: bool = True) -> list[Delivery]:
        """Claim up to ``max_count`` params. When none is todo but some are in flight
        (they may come back), look again every 50 ms until ``timeout``.

        Short tasks (under ``outbox.AHEAD_TASK_SECONDS`` on average) and ``claim_ahead``
        make a claim take
        up to ``AHEAD_CLAIMS`` more, marked as not started: the next takes hand them out
        with a ``start`` record that rides on the next lock session. Claimed-ahead
        params are extended with the running ones and released at close; if this
        process dies, their leases expire without counting an attempt (they never ran).
        """
        outbox = self._outbox
        if outbox.ahead:
            out = outbox.take_ahead(max_count)
            if out:
                return out
        ahead = outbox.ahead_wanted() if claim_ahead else 0
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            outbox.settled.clear()
            claimed = []
            try:
                with self._access.locked() as store:
                    now = time.time()
                    # A holder of this host that ended (a killed run) cannot come back:
                    # its params are todo again at once (looked for at the first claim).
                    store.expire(now, self.max_attempts, self._gone_check.due())
                    claimed = store.claim(max_count, self.owner, now + self.lease, ahead)
                    others_in_flight = store.state.count[FLIGHT] > 0
            except LockLost:
                # Stopped while holding the lock, and fenced out: these claims may not
                # be recorded, so they are not run (and given back if they were).
                outbox.release([(c.index, c.seq) for c in claimed])
                continue
            if claimed:
                return outbox.deliver(claimed)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not (outbox.out or (self.wait and others_in_flight)):
                return []
            outbox.settled.wait(min(POLL_INTERVAL, remaining))

    def exhausted(self) -> bool:
        """Nothing todo; with ``wait``, nothing in flight either (expired leases are
        put back first, so a crashed peer's params are taken, not waited for)."""
        if self._outbox.ahead:
            return False
        try:
            with self._access.locked() as store:
                store.expire(time.time(), self.max_attempts, self._gone_check.due())
                if store.state.count[TODO]:
                    return False
                if not (self.wait and store.state.count[FLIGHT]):
                    return True
                if self._wait_note.due():
                    say_waiting(store, self.owner.minion)
                return False
        except LockLost:
            return False  # stopped in the session: look again
