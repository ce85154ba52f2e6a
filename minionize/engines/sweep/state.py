"""The sweep queue's state machine: what the journal's records do, with no file in sight.

Every process replays the same records in the same order and reaches the same state:
so applying a record uses no clock and no setting, only the record. Decisions that do
depend on the clock or the settings (which leases ended, which param a claim takes) are
made by the lock holder and written as records (:func:`claim_record`,
:func:`expire_record`); the files are :mod:`.files`'s business.

``status`` is a bytearray with one byte per param (``t`` todo, ``f`` in flight, ``d``
done, ``x`` dead), so the next todo param is found with ``bytearray.find`` from a
cursor, and counts are kept as records are applied. Leases, attempts and dead-letter
reasons live in dicts holding only the params that have one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import Any, Callable, Optional

from .leases import Lease, Leases
from .leases import Owner as Owner  # where the store and the engine import it from
from .results import ResultBits

TODO = ord("t")
FLIGHT = ord("f")
DONE = ord("d")
DEAD = ord("x")
TODO_BYTE = b"t"


class BadRecord(ValueError):
    """A record or a snapshot that cannot be applied (malformed)."""


class Statuses:
    """The params' statuses, a byte each, with their counts, and which todo param comes
    next: those at or after ``cursor`` are found by a scan; those put back before it are
    remembered in ``returned`` (lazily: an entry may be stale when popped)."""

    def __init__(self) -> None:
        self.n = 0
        self.status = bytearray()
        self.count = {TODO: 0, FLIGHT: 0, DONE: 0, DEAD: 0}
        self.cursor = 0
        self.returned: deque[int] = deque()

    def move(self, index: int, status: int) -> None:
        """Give param ``index`` a new status (its lease, if any, is the caller's)."""
        count = self.count
        count[self.status[index]] -= 1
        count[status] += 1
        self.status[index] = status

    def _put_back(self, index: int) -> None:
        self.move(index, TODO)
        if index < self.cursor:
            self.returned.append(index)

    def pick(self, max_count: int) -> list[int]:
        """Todo params to claim next, in queue order; moves the cursor past them."""
        picks: list[int] = []
        status = self.status
        while len(picks) < max_count:
            index = status.find(TODO, self.cursor)
            if index < 0:
                self.cursor = self.n
                break
            picks.append(index)
            self.cursor = index + 1
        while len(picks) < max_count and self.returned:
            index = self.returned.popleft()
            if status[index] == TODO and index not in picks:
                picks.append(index)
        return picks

    def peek(self, limit: int) -> list[int]:
        """Todo params that :meth:`pick` would return, without moving anything."""
        return list(islice(self.todo_order(), limit))

    def todo_order(self) -> Iterator[int]:
        """Every todo param in the order :meth:`pick` would return them, found lazily in
        a copy of the statuses made now (later records change nothing of it)."""
        return _todo_order(bytes(self.status), self.cursor, list(self.returned))

    def indices(self, status: int) -> list[int]:
        """Every param with ``status``, in queue order."""
        found: list[int] = []
        start = 0
        while True:
            index = self.status.find(status, start)
            if index < 0:
                return found
            found.append(index)
            start = index + 1


def _todo_order(status: bytes, cursor: int, returned: list[int]) -> Iterator[int]:
    """The todo params at or after ``cursor``, then those put back before it."""
    start = cursor
    while True:
        index = status.find(TODO, start)
        if index < 0:
            break
        yield index
        start = index + 1
    seen: set[int] = set()
    for index in returned:
        # One at or after the cursor (a rescan moved it back) was found above.
        if index < cursor and status[index] == TODO and index not in seen:
            seen.add(index)
            yield index


class QueueState(Statuses):
    """The params' statuses, attempts, leases and dead-letter reasons of one queue."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: dict[int, int] = {}
        self.leases = Leases()
        self.reasons: dict[int, str] = {}
        #: The done params whose ack stored a result (in results.jsonl).
        self.results = ResultBits()
        self.imported_from: Optional[str] = None
        #: The lock epoch the queue is at (``head`` and ``break`` records raise it).
        self.lock_epoch = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "add": self._add, "claim": self._claim, "ack": self._ack, "retry": self._retry,
            "release": self._release, "dead": self._dead, "extend": self._extend,
            "start": self._start, "expire": self._expire, "requeue": self._requeue,
            "adopt": self._adopt, "head": self._head, "break": self._break,
            "void": self._void, "reset": self._reset, "requeue_some": self._requeue_some,
        }

    # -- applying records (identical in every process: no clock, no settings) ---------
    def apply(self, record: dict[str, Any]) -> bool:
        """Apply one journal record; False if its kind is unknown (skipped). A malformed
        record raises :class:`BadRecord`."""
        handler = self._handlers.get(record.get("o", ""))
        if handler is None:
            return False
        try:
            handler(record)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise BadRecord(
                f"a malformed record {record!r:.200} ({type(exc).__name__}: {exc})"
            ) from None
        return True

    def _head(self, record: dict[str, Any]) -> None:
        # Checked where it is read (it must be the first record); here only the epoch.
        self.lock_epoch = max(self.lock_epoch, int(record.get("e", 0)))

    def _break(self, record: dict[str, Any]) -> None:
        self.lock_epoch = max(self.lock_epoch, int(record["e"]))

    def _void(self, record: dict[str, Any]) -> None:
        # Lines of params.jsonl left by an interrupted fill that are not params.
        for index in record["l"]:
            if self.status[index] == TODO:
                self.move(index, DEAD)
                self.reasons[index] = str(record.get("why", "unreadable line in params.jsonl"))

    def _add(self, record: dict[str, Any]) -> None:
        new_n = int(record["n"])
        if new_n > self.n:
            self.status.extend(TODO_BYTE * (new_n - self.n))
            self.count[TODO] += new_n - self.n
            self.n = new_n

    def _claim(self, record: dict[str, Any]) -> None:
        minion, expiry = str(record["w"]), float(record["e"])
        host, pid, job = str(record.get("h", "")), int(record.get("p", 0)), str(record.get("j", ""))
        start = int(record.get("t", 0))  # absent from the claims of an older minionize
        status = self.status
        for entry in record["l"]:
            index, seq = entry[0], entry[1]
            if status[index] != TODO:
                continue
            self.move(index, FLIGHT)
            # [index, seq] is a claim for a task; [index, seq, 0] a claim ahead.
            started = len(entry) < 3 or bool(entry[2])
            self.leases.put(index, Lease(minion, seq, expiry, host, pid, job, started, start))

    def _ack(self, record: dict[str, Any]) -> None:
        # A success is a success, even from a minion whose lease expired meanwhile.
        index = int(record["i"])
        status = self.status[index]
        if status == DONE:
            return
        if status == FLIGHT:
            self.leases.drop(index)
        elif status == DEAD:
            self.reasons.pop(index, None)
        self.move(index, DONE)
        if record.get("r"):
            self.results.add(index)

    def _retry(self, record: dict[str, Any]) -> None:
        index = int(record["i"])
        if self.leases.take(index, str(record["w"]), int(record["q"])) is None:
            return  # the lease expired and was counted already
        self.attempts[index] = self.attempts.get(index, 0) + 1
        self._put_back(index)

    def _release(self, record: dict[str, Any]) -> None:
        index = int(record["i"])
        if self.leases.take(index, str(record["w"]), int(record["q"])) is not None:
            self._put_back(index)

    def _dead(self, record: dict[str, Any]) -> None:
        index = int(record["i"])
        if self.leases.take(index, str(record["w"]), int(record["q"])) is None:
            return
        self.attempts[index] = self.attempts.get(index, 0) + 1
        self.move(index, DEAD)
        self.reasons[index] = str(record.get("why", ""))

    def _extend(self, record: dict[str, Any]) -> None:
        minion, expiry = str(record["w"]), float(record["e"])
        for index, seq in record["l"]:
            lease = self.leases.get(index)
            if lease is not None and lease.minion == minion and lease.seq == seq:
                lease.expiry = expiry
                self.leases.put(index, lease)

    def _start(self, record: dict[str, Any]) -> None:
        minion = str(record["w"])
        for index, seq in record["l"]:
            lease = self.leases.get(index)
            if lease is not None and lease.minion == minion and lease.seq == seq:
                lease.started = True

    def _expire(self, record: dict[str, Any]) -> None:
        # "g": the holders ended (processes of the writer's host that are gone).
        ended = "lease ended (its minion ended)" if record.get("g") else "lease expired"
        for index, minion, seq, dead in record["l"]:
            lease = self.leases.take(index, minion, seq)
            if lease is None:
                continue
            if not lease.started:
                self._put_back(index)  # claimed ahead, never run: no attempt
                continue
            attempts = self.attempts.get(index, 0) + 1
            self.attempts[index] = attempts
            if dead:
                self.move(index, DEAD)
                self.reasons[index] = (
                    f"{ended} {attempts} time(s); last held by {lease.describe()}"
                )
            else:
                self._put_back(index)

    def _requeue(self, record: dict[str, Any]) -> None:
        for index in self.indices(DEAD):
            self.attempts.pop(index, None)
            self.reasons.pop(index, None)
            self._put_back(index)

    def _requeue_some(self, record: dict[str, Any]) -> None:
        # Chosen dead letters (a kind of its own: an older minionize skips it, where it
        # would take a "requeue" for every dead letter).
        for index in record["l"]:
            if self.status[index] == DEAD:
                self.attempts.pop(index, None)
                self.reasons.pop(index, None)
                self._put_back(index)

    def _reset(self, record: dict[str, Any]) -> None:
        # Every param todo, with fresh attempts; a late ack of a param in flight still
        # counts (as after an expiry).
        n = self.n
        self.status = bytearray(TODO_BYTE * n)
        self.count = {TODO: n, FLIGHT: 0, DONE: 0, DEAD: 0}
        self.cursor = 0
        self.returned.clear()
        self.leases = Leases()
        self.attempts.clear()
        self.reasons.clear()
        self.results = ResultBits()

    def _adopt(self, record: dict[str, Any]) -> None:
        self.imported_from = str(record.get("from", "execo"))
        for index in record.get("done", []):
            status = self.status[index]
            if status == FLIGHT:
                self.leases.drop(index)
            if status != DONE:
                self.move(index, DONE)


# -- decisions the lock holder writes as records -------------------------------------
def claim_record(
    picks: list[int], tasks: int, owner: Owner, expiry: float, first_seq: int
) -> dict[str, Any]:
    """The record claiming ``picks``: the first ``tasks`` for tasks now, the others
    ahead (not started: their expiry counts no attempt)."""
    return {
        "o": "claim",
        "w": owner.minion,
        "h": owner.host,
        "p": owner.pid,
        "j": owner.job,
        "t": owner.start,
        "e": expiry,
        "l": [
            [index, first_seq + k] if k < tasks else [index, first_seq + k, 0]
            for k, index in enumerate(picks)
        ],
    }


def expire_record(state: QueueState, now: float, max_attempts: int) -> Optional[dict[str, Any]]:
    """The record putting back (or dead-lettering, at ``max_attempts``) every param whose
    lease ended at or before ``now``; None if there is none."""
    return _ending(state, state.leases.ended(now), max_attempts)


def gone_record(state: QueueState, now: float, max_attempts: int) -> Optional[dict[str, Any]]:
    """:func:`expire_record` for the leases whose holder is a process of this host that
    ended (:meth:`Leases.held_by_gone`): they end now, as if expired."""
    record = _ending(state, state.leases.held_by_gone(), max_attempts)
    if record is not None:
        record["g"] = 1
    return record


def _ending(state: QueueState, leases: list[tuple[int, Lease]], max_attempts: int
            ) -> Optional[dict[str, Any]]:
    entries = []
    for index, lease in leases:
        dead = lease.started and state.attempts.get(index, 0) + 1 >= max_attempts
        entries.append([index, lease.minion, lease.seq, 1 if dead else 0])
    return {"o": "expire", "l": entries} if entries else None


# -- the state in a snapshot ----------------------------------------------------------
def to_snapshot(state: QueueState) -> dict[str, Any]:
    """The state as the JSON-ready keys of a snapshot."""
    return {
        "params": state.n,
        "imported_from": state.imported_from,
        "lock_epoch": state.lock_epoch,
        "state": state.status.decode("ascii"),
        "attempts": sorted(state.attempts.items()),
        "dead": sorted(state.reasons.items()),
        "results": state.results.to_text(),
        "leases": [
            [i, le.minion, le.seq, le.expiry, le.host, le.pid, le.job, int(le.started), le.start]
            for i, le in state.leases.items()
        ],
    }


def from_snapshot(doc: dict[str, Any]) -> QueueState:
    """The state a snapshot holds; :class:`BadRecord` if it does not hold one."""
    try:
        state = QueueState()
        state.status = bytearray(doc["state"], "ascii")
        state.n = len(state.status)
        if state.n != int(doc["params"]):
            raise BadRecord("'params' and 'state' disagree")
        for status in state.count:
            state.count[status] = state.status.count(status)
        if sum(state.count.values()) != state.n:
            raise BadRecord("'state' holds unknown statuses")
        state.attempts = {int(i): int(a) for i, a in doc["attempts"]}
        state.reasons = {int(i): str(r) for i, r in doc["dead"]}
        state.results = ResultBits.from_text(str(doc.get("results", "")))
        state.leases = Leases({  # older snapshots lack the last fields: started, start
            index: Lease(minion, seq, expiry, host, pid, job,
                         bool(rest[0]) if rest else True, int(rest[1]) if len(rest) > 1 else 0)
            for index, minion, seq, expiry, host, pid, job, *rest in doc["leases"]
        })
        state.imported_from = doc.get("imported_from")
        state.lock_epoch = int(doc.get("lock_epoch", 0))
    except BadRecord:
        raise
    except (KeyError, TypeError, ValueError, IndexError, UnicodeError) as exc:
        raise BadRecord(f"unreadable contents ({type(exc).__name__}: {exc})") from None
    return state
