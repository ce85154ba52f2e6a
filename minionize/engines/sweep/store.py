"""A sweep queue as one process sees it: its operations, each a journal record.

A :class:`SweepStore` is one process's view of a queue directory. Every public method
takes the directory's lock, reads what other processes appended since its last visit,
does its work, appends its own records, and lets the lock go. It holds its parts:

* a :class:`~.replica.Replica`: this process's copy of the queue (the state machine of
  :mod:`.state`; ``params.jsonl``, the journal, the snapshot and ``results.jsonl`` of
  :mod:`.params_file`, :mod:`.journal`, :mod:`.files` and :mod:`.results`), caught up
  with what others wrote, and the params an interrupted fill left behind;
* a :class:`~.session.LockSession`: the lock of :mod:`.lock` around each operation
  (take it, catch up, fence after a break, compact, let go);
* :mod:`.repair`: ``minion-queue repair``;
* here: the operations, each written as a journal record and applied exactly as
  other processes will apply it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal, Optional

from .repair import repair
from .replica import Replica
from .session import LockSession
from .state import DEAD, DONE, Owner, QueueState, claim_record, expire_record, gone_record

#: Params encoded and deduplicated per lock holding while filling.
FILL_CHUNK = 50_000
#: The journal's words for the four settles of a claim.
SettleOp = Literal["ack", "retry", "release", "dead"]
#: Longest dead-letter reason kept (the rest is in the minion's logs).
MAX_REASON = 2000


@dataclass
class Claimed:
    """A param this process just claimed."""

    index: int
    seq: int
    attempt: int
    text: bytes
    started: bool = True


class SweepStore:
    """One process's view of a sweep queue directory: its operations, each a journal
    record written under the lock (methods marked "lock held" run inside
    :meth:`locked`; the others take it). ``durable_settles``: fsync every ack and dead
    letter; the other options are the :class:`~.session.LockSession`'s."""

    def __init__(self, directory: str, *, durable_settles: bool = False, **options: Any) -> None:
        self.directory = directory
        self.replica = Replica(directory)
        self.session = LockSession(self.replica, **options)
        self.durable_settles = durable_settles
        #: The next sequence number of this process's claims.
        self._seq = 0

    @property
    def state(self) -> QueueState:
        """The queue's state, up to date while the lock is held."""
        return self.replica.state

    def locked(self) -> _Locked:
        """``with store.locked():`` holds the lock with an up-to-date state."""
        return _Locked(self)

    def close(self) -> None:
        with self.session.thread_lock:
            self.replica.params.close()

    def param_text(self, index: int) -> bytes:
        """The canonical JSON text of param ``index`` (lock held)."""
        return self.replica.params.text(index)

    def read_param(self, index: int) -> bytes:
        """Param ``index``'s text without the file lock (params never change)."""
        with self.session.thread_lock:
            return self.replica.params.text(index)

    # -- claims and settles (lock held) --------------------------------------------------
    def claim(self, max_count: int, owner: Owner, expiry: float, ahead: int = 0) -> list[Claimed]:
        """Claim up to ``max_count`` todo params for tasks, and up to ``ahead`` more
        that are not started yet."""
        replica = self.replica
        state = replica.state
        picks = state.pick(max_count + ahead)
        if not picks:
            return []
        first = self._seq
        self._seq += len(picks)
        try:
            replica.write(claim_record(picks, max_count, owner, expiry, first))
        except BaseException:
            state.cursor = 0  # rescan: the picks are still todo
            raise
        text = replica.params.text
        return [
            Claimed(index, first + k, state.attempts.get(index, 0) + 1, text(index), k < max_count)
            for k, index in enumerate(picks)
        ]

    def start(self, items: list[tuple[int, int]], minion: str) -> None:
        """Mark params claimed ahead as handed to tasks."""
        holds = self.replica.state.leases.holds
        mine = [[i, q] for i, q in items if holds(i, minion, q)]
        if mine:
            self.replica.write({"o": "start", "w": minion, "l": mine})

    def store_results(self, acks: Sequence[tuple[int, Optional[bytes]]]) -> set[int]:
        """Write the results of these acks (param index, :func:`.results.result_line`
        or None), in order, in one write; the params whose result was written. Only the
        ack that makes its param done stores one: a late ack of a param done meanwhile
        never replaces the result of the ack that counted. Call before their records."""
        status = self.replica.state.status
        acked: set[int] = set()
        stored: set[int] = set()
        lines = []
        for index, line in acks:
            if status[index] == DONE or index in acked:
                continue
            acked.add(index)
            if line is not None:
                lines.append(line)
                stored.add(index)
        if lines:
            self.replica.results_file.append(b"".join(lines), self.session.fence_check,
                                             self.durable_settles)
        return stored

    def settle(self, op: SettleOp, index: int, minion: str, seq: int, reason: str = "",
               result: bool = False) -> None:
        """Record ``ack``, ``retry``, ``release`` or ``dead`` for one claim (``result``:
        an ack whose result :meth:`store_results` wrote)."""
        record: dict[str, Any] = {"o": op, "i": index, "w": minion, "q": seq}
        if reason:
            record["why"] = reason[:MAX_REASON]
        if result:
            record["r"] = 1
        self.replica.write(record, durable=self.durable_settles and op in ("ack", "dead"))

    def extend(self, items: list[tuple[int, int]], minion: str, expiry: float) -> None:
        """Extend the leases still held by these claims until ``expiry``."""
        holds = self.replica.state.leases.holds
        mine = [[i, q] for i, q in items if holds(i, minion, q)]
        if mine:
            self.replica.write({"o": "extend", "w": minion, "e": expiry, "l": mine})

    def expire(self, now: float, max_attempts: int, gone: bool = False) -> int:
        """Put back (or dead-letter) every param whose lease ended before ``now``;
        ``gone``: and those held by processes of this host that ended (a scan of the
        leases: not at every claim). How many."""
        count = 0
        for ending in (expire_record, gone_record):
            if ending is gone_record and not gone:
                break
            record = ending(self.replica.state, now, max_attempts)
            if record is not None:
                self.replica.write(record)
                count += len(record["l"])
        return count

    def records(self, status: int) -> Iterator[tuple[int, int, str]]:
        """(index, attempts, reason) of every param with ``status``."""
        state = self.replica.state
        for index in state.indices(status):
            yield index, state.attempts.get(index, 0), state.reasons.get(index, "")

    # -- filling and administration ----------------------------------------------------
    def add(self, texts: Iterable[bytes]) -> tuple[int, int]:
        """Add params given as canonical JSON texts; skip those already present."""
        added = skipped = 0
        iterator = iter(texts)
        while True:
            chunk = list(islice(iterator, FILL_CHUNK))
            if not chunk:
                return added, skipped
            with self.locked():
                fresh = self._add_chunk(chunk)
            added += fresh
            skipped += len(chunk) - fresh

    def _add_chunk(self, chunk: list[bytes]) -> int:
        replica = self.replica
        params = replica.params
        if params.file_size() > params.size:
            replica.recover_tail(self.session.fence_check)
        dedupe = params.index()
        new: list[bytes] = []
        n = replica.state.n
        for text in chunk:
            if text not in dedupe:
                dedupe[text] = n + len(new)
                new.append(text)
        if not new:
            return 0
        try:
            size = params.append(new, self.session.fence_check)
            record = {"o": "add", "n": n + len(new), "s": size}
            replica.journal.append(record, durable=True)
        except BaseException:
            for text in new:
                del dedupe[text]
            raise
        replica.apply(record, new)
        return len(new)

    def requeue_dead(self) -> int:
        count = self.replica.state.count[DEAD]
        if count:
            self.replica.write({"o": "requeue"}, durable=True)
        return count

    def requeue_some(self, indices: list[int]) -> int:
        """Make the dead letters ``indices`` todo again, with fresh attempts (lock held)."""
        status = self.replica.state.status
        chosen = sorted({i for i in indices if status[i] == DEAD})
        if chosen:
            self.replica.write({"o": "requeue_some", "l": chosen}, durable=True)
        return len(chosen)

    def reset(self) -> int:
        """Make every param todo again, with fresh attempts (lock held); how many."""
        n = self.replica.state.n
        if n:
            self.replica.write({"o": "reset"}, durable=True)
        return n

    def adopt(self, texts: list[bytes], done: list[bytes], source: str) -> None:
        """Import params from another tool's queue (lock held, queue empty)."""
        self._add_chunk(texts + done)
        dedupe = self.replica.params.index()
        indices = sorted({dedupe[text] for text in done})
        self.replica.write({"o": "adopt", "from": source, "done": indices}, durable=True)

    def repair(self) -> list[str]:
        """Rebuild a consistent queue from what is left; lines saying what was done
        (see :func:`minionize.engines.sweep.repair.repair`)."""
        return repair(self.session)


class _Locked:
    def __init__(self, store: SweepStore) -> None:
        self.store = store

    def __enter__(self) -> SweepStore:
        self.store.session.begin()
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.session.end()

