"""The sweep engine: a queue of params in a directory every minion can reach.

The default engine (``MINION_ENGINE=sweep``, or ``execo``, the original name). The
directory is ``EXECO_PERSISTENCE_DIR`` (default ``sweeps``), on local disk or on a
shared filesystem (NFS, Lustre, GPFS). There is no server: minions coordinate through
the files alone. See ``docs/sweep-queue.md`` for the user's view.

How it works
------------
``params.jsonl`` holds every param once, as canonical JSON (one per line, never a
pickle). ``journal.<g>.jsonl`` is an append-only log of events (add, claim, ack, retry,
release, dead letter, lease extension, lease expiry, ...); ``snapshot.json`` is the state
the journal started from. Each process keeps the whole state in memory and, on every
operation, reads only the records appended since its last visit: claim and ack cost the
same with a thousand params or a million. When the journal outgrows the snapshot, the
process holding the lock writes a new snapshot and starts a new journal (compaction);
so the directory holds a handful of files whatever the number of params.

Why each step is safe on NFS
----------------------------
* **Lock first.** Every operation takes an advisory lock on ``queue.lock``
  (``flock``, which Linux's NFS client turns into an NFS/NLM byte-range lock shared by
  every client). Nothing is read or written without it, so there is exactly one writer
  at a time, on every host. The lock has a lease against stopped or hung holders, and
  a fence so that what they write after a break is ignored: see
  :mod:`minionize.engines._sweep_lock`.
* **Files that disagree are an error** (:class:`~._sweep_store.Damaged`), never an
  empty queue: every journal starts with a ``head`` record checked against the
  snapshot; a snapshot counts only if committed; ``params.jsonl`` is never cut.
* **Then open, then read** (close-to-open consistency). NFS clients cache file data;
  the guarantee they give is that ``open()`` revalidates the file against the server
  and sees everything written by a client that has ``close()``-d it. So the journal and
  the params file are (re)opened *after* the lock is taken, read, and closed *before*
  the lock is released. A process never trusts a descriptor opened in an earlier
  critical section for data written by others.
* **Appends at a known offset, under the lock.** ``O_APPEND`` is not atomic across NFS
  clients; it is not needed either: the lock holder has just read the journal to its
  end, so it writes at that offset with ``pwrite``. Records are single lines of JSON.
* **Close flushes.** ``close()`` sends the written pages to the server before the lock
  is released, so the next holder's ``open()`` sees them.
* **Rename to replace.** A snapshot is written to a temporary file, fsync-ed, then
  ``rename``-d over ``snapshot.json``: readers see the old or the new one, never half.
  Compaction's commit point is a ``next`` record appended (and fsync-ed) to the old
  journal, so a crash at any step leaves a readable queue.
* **Torn records.** Only a writer that died mid-write leaves a last line without its
  newline; the next lock holder truncates it. That operation had not returned, so no
  acknowledged param is lost (its lease expires and it is redone).
* **fsync where durability needs it** (measured here: 0.2 to 0.6 ms each): params and
  their ``add`` record (losing them would lose work), snapshots before their rename,
  the ``next`` record, and requeues. Acks and dead letters are not fsync-ed by default:
  a process crash cannot lose them (the kernel or the NFS server already has them after
  ``close()``); a power cut of the host can, and that param is then run again (at least
  once, never lost). ``MINION_SWEEP_FSYNC=1`` fsyncs them too.
* **No SQLite, no mmap**: both rely on locking and page coherence that NFS does not give.
* **Clocks.** Lease expiry compares wall clocks of different hosts: keep them in sync
  (NTP) and the lease much longer than their skew.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Optional

from ..errors import EngineError
from ..identity import MinionInfo
from ._sweep_lock import DEFAULT_LEASE, MIN_LEASE, LockLost
from ._sweep_store import DEAD, DONE, FLIGHT, TODO, Owner, SweepStore, canonical
from .base import Delivery, Engine, Param

if TYPE_CHECKING:
    from ..config import Settings

DEFAULT_DIRECTORY = "sweeps"
#: How often an empty ``take`` looks again while params are in flight.
POLL_INTERVAL = 0.05
#: While this minion's tasks average less than this many seconds, a claim takes up to
#: AHEAD_CLAIMS more params, handed to the next tasks without a lock session each.
AHEAD_TASK_SECONDS = 0.02
AHEAD_CLAIMS = 7


def param_id(text: bytes) -> str:
    """A short stable id of a param: a hash of its canonical JSON (12 hex digits)."""
    return hashlib.blake2b(text, digest_size=6).hexdigest()


class SweepEngine(Engine):
    """A finite queue of params in a shared directory, with leases.

    ``directory``: the queue (made by :meth:`create`, which ``minion-queue fill``
    calls). ``lease``: seconds a claim is kept without a heartbeat. ``max_attempts``:
    an expired lease counts an attempt and dead-letters the param when it reaches
    this. ``wait``: on a drained queue, stay while other minions hold leases
    (``MINION_WAIT``). ``durable_settles``: fsync every ack and dead letter
    (``MINION_SWEEP_FSYNC``). ``lock_lease``: seconds without any change after which a
    waiter breaks the queue lock of a stopped or hung holder (``MINION_SWEEP_LOCK_LEASE``).
    """

    name = "sweep"

    def __init__(
        self,
        directory: str = DEFAULT_DIRECTORY,
        *,
        lease: float = 300.0,
        max_attempts: int = 3,
        wait: bool = False,
        durable_settles: bool = False,
        minion: Optional[MinionInfo] = None,
        lock_lease: float = DEFAULT_LEASE,
    ) -> None:
        self.directory = directory
        self.lease = lease
        self.max_attempts = max_attempts
        self.wait = wait
        info = minion or MinionInfo.current()
        self.owner = Owner(info.minion_id, info.host, info.pid, info.job_label)
        identity = {"minion": info.minion_id, "host": info.host, "pid": info.pid, "job": info.job_label}
        self.store = SweepStore(
            directory, durable_settles=durable_settles, lock_lease=max(MIN_LEASE, lock_lease),
            identity=identity,
        )
        self._mine = 0  # deliveries handed out and not settled yet
        self._mine_lock = threading.Lock()
        #: Settles (and starts) not written yet: they ride on this process's next lock
        #: session. Guarded, with ``_ahead``, by ``_pending_lock``.
        self._pending: list[tuple[str, int, int, str]] = []
        self._pending_lock = threading.Lock()
        #: Params claimed ahead, not handed to a task yet.
        self._ahead: collections.deque[Delivery] = collections.deque()
        #: When each handed-out claim left, and the recent task duration (moving average).
        self._out_at: dict[tuple[int, int], float] = {}
        self._task_seconds: Optional[float] = None
        self._settled = threading.Event()
        self._opened = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SweepEngine:
        env = settings.env
        engine = cls(
            env.str("EXECO_PERSISTENCE_DIR", DEFAULT_DIRECTORY) or DEFAULT_DIRECTORY,
            lease=settings.lease,
            max_attempts=settings.max_attempts,
            wait=settings.wait,
            durable_settles=env.bool("MINION_SWEEP_FSYNC"),
            # none: never break the lock of a stopped holder (wait for it, as before).
            lock_lease=env.seconds("MINION_SWEEP_LOCK_LEASE", DEFAULT_LEASE) or float("inf"),
        )
        # For tests only: hold the lock this long in every session, so that a test can
        # catch a minion holding it (SLURM suspends a whole job, not one instant).
        engine.store.hold_lock = env.seconds("MINION_SWEEP_TEST_HOLD_LOCK", 0.0) or 0.0
        return engine

    # -- taking ----------------------------------------------------------------------
    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        """Claim up to ``max_count`` params. When none is todo but some are in flight
        (they may come back), look again every 50 ms until ``timeout``.

        Short tasks (under ``AHEAD_TASK_SECONDS`` on average) make the claim take up to
        ``AHEAD_CLAIMS`` more params, marked as not started: the next takes hand them out
        with a ``start`` record that rides on the next lock session. Claimed-ahead
        params are extended with the running ones and released at close; if this
        process dies, their leases expire without counting an attempt (they never ran).
        """
        with self._pending_lock:
            if self._ahead:
                out = [self._ahead.popleft() for _ in range(min(max_count, len(self._ahead)))]
                self._pending.extend(("start", *d.handle, "") for d in out)
                return self._hand_out(out)
        fast = self._task_seconds is not None and self._task_seconds < AHEAD_TASK_SECONDS
        ahead = AHEAD_CLAIMS if fast else 0
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            self._settled.clear()
            claimed = []
            try:
                with self._locked() as store:
                    now = time.time()
                    store.expire(now, self.max_attempts)
                    claimed = store.claim(max_count, self.owner, now + self.lease, ahead)
                    others_in_flight = store.count[FLIGHT] > 0
            except LockLost:
                # Stopped while holding the lock, and fenced out: these claims may not
                # be recorded, so they are not run (and given back if they were).
                with self._pending_lock:
                    self._pending.extend(("release", c.index, c.seq, "") for c in claimed)
                continue
            if claimed:
                deliveries = [
                    Delivery(
                        param=json.loads(c.text),
                        id=param_id(c.text),
                        attempt=c.attempt,
                        handle=(c.index, c.seq),
                    )
                    for c in claimed
                ]
                with self._pending_lock:
                    self._ahead.extend(d for d, c in zip(deliveries, claimed) if not c.started)
                return self._hand_out([d for d, c in zip(deliveries, claimed) if c.started])
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not (self._mine or (self.wait and others_in_flight)):
                return []
            self._settled.wait(min(POLL_INTERVAL, remaining))

    def _hand_out(self, deliveries: list[Delivery]) -> list[Delivery]:
        now = time.monotonic()
        with self._mine_lock:
            self._mine += len(deliveries)
            for delivery in deliveries:
                self._out_at[delivery.handle] = now
        return deliveries

    def exhausted(self) -> bool:
        """Nothing todo; with ``wait``, nothing in flight either (expired leases are
        put back first, so a crashed peer's params are taken, not waited for)."""
        if self._ahead:
            return False
        try:
            with self._locked() as store:
                store.expire(time.time(), self.max_attempts)
                if store.count[TODO]:
                    return False
                return not (self.wait and store.count[FLIGHT])
        except LockLost:
            return False  # stopped in the session: look again

    def peek(self, limit: int) -> list[Param]:
        with self._locked() as store:
            texts = [store.param_text(index) for index in store.peek(limit)]
        return [json.loads(text) for text in texts]

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery) -> None:
        self._settle("ack", delivery)

    def retry(self, delivery: Delivery, reason: str) -> None:
        self._settle("retry", delivery, reason)

    def release(self, delivery: Delivery) -> None:
        self._settle("release", delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._settle("dead", delivery, reason or "failed")

    def _settle(self, op: str, delivery: Delivery, reason: str = "") -> None:
        """Record the settle at this process's next lock session.

        A worker that settles a param takes its next one at once, so the record is
        written microseconds later, under the same lock as that claim: one lock session
        per task instead of two (measured: about 80 us of CPU per task less, with a
        process per task). Every other session writes what is pending too, and the
        loop calls :meth:`flush` every 0.1 s. A process killed in between loses the
        record, never the param: its lease expires and it runs again.
        """
        index, seq = delivery.handle
        with self._pending_lock:
            self._pending.append((op, index, seq, reason))
        with self._mine_lock:
            self._mine = max(0, self._mine - 1)
            out_at = self._out_at.pop((index, seq), None)
            if out_at is not None:
                took = time.monotonic() - out_at
                average = self._task_seconds
                self._task_seconds = took if average is None else 0.8 * average + 0.2 * took
        self._settled.set()

    def _write_pending(self, store: SweepStore) -> list[tuple[str, int, int, str]]:
        """Write the pending starts, then settles, in order (lock held); what was
        pending. What could not be written stays pending for the next session."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        starts = [(index, seq) for op, index, seq, _ in pending if op == "start"]
        settles = [item for item in pending if item[0] != "start"]
        written = 0
        try:
            if starts:
                store.start(starts, self.owner.minion)
                starts = []
            for op, index, seq, reason in settles:
                store.settle(op, index, self.owner.minion, seq, reason)
                written += 1
        except BaseException:
            with self._pending_lock:
                self._pending[:0] = [("start", i, q, "") for i, q in starts] + settles[written:]
            raise
        return pending

    # -- leases ----------------------------------------------------------------------
    def lease_renewal_interval(self) -> Optional[float]:
        return self.lease / 3.0

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        with self._pending_lock:
            deliveries = [*deliveries, *self._ahead]
        if not deliveries:
            return
        items = [(int(d.handle[0]), int(d.handle[1])) for d in deliveries]
        for _ in range(2):  # once more if stopped in the session (extending is idempotent)
            try:
                with self._locked() as store:
                    store.extend(items, self.owner.minion, time.time() + self.lease)
                return
            except LockLost:
                continue

    def flush(self) -> None:
        if self._pending:
            try:
                with self._locked():
                    pass  # the session writes the pending settles
            except LockLost:
                pass  # they are pending again: the next session writes them

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        """Read the queue, and adopt an execo queue found there on first use.

        A minion never creates the directory: a mistyped ``EXECO_PERSISTENCE_DIR`` is an
        error (exit 2), not an empty queue that ends the run at once. ``create`` (called
        by ``minion-queue fill``) does.
        """
        if self._opened:
            return
        self._require_directory()
        with self._locked() as store:
            if store.n == 0 and store.generation == 0:
                self._adopt_execo(store)
        self._opened = True

    def _adopt_execo(self, store: SweepStore) -> None:
        from ._execo_import import is_execo_directory, read_execo_directory

        if not is_execo_directory(self.directory):
            return
        todo, done = read_execo_directory(self.directory)
        store.adopt([canonical(p) for p in todo], [canonical(p) for p in done], "execo")

    def close(self) -> None:
        with self._pending_lock:
            # Claimed ahead and never handed out: back to the queue, no attempt counted.
            self._pending.extend(("release", *d.handle, "") for d in self._ahead)
            self._ahead.clear()
        try:
            self.flush()
        finally:
            self.store.close()

    def describe(self) -> str:
        return f"sweep queue in {self.directory}"

    # -- administration --------------------------------------------------------------
    def _require_directory(self) -> None:
        if not os.path.isdir(self.directory):
            raise EngineError(
                f"EXECO_PERSISTENCE_DIR={self.directory!r}: no sweep queue there (no such "
                "directory): fill one with `minion-queue fill ...`, or fix the path"
            )

    def create(self) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise EngineError(
                f"cannot create the sweep queue directory {self.directory!r} ({exc}): "
                "set EXECO_PERSISTENCE_DIR to a writable directory"
            ) from None

    def fill(self, params: Iterable[Param]) -> tuple[int, int]:
        self.create()
        self.open()
        return self.store.add(canonical(p) for p in params)

    def status(self) -> dict[str, Any]:
        self._require_directory()
        with self._locked() as store:
            in_flight, expired = store.lease_counts(time.time())
            return {
                "todo": store.count[TODO],
                "in_flight": in_flight,
                "expired": expired,
                "done": store.count[DONE],
                "dead": store.count[DEAD],
                "total": store.n,
            }

    def requeue_dead(self) -> int:
        self._require_directory()
        with self._locked() as store:
            return store.requeue_dead()

    def reset_expired(self) -> int:
        self._require_directory()
        with self._locked() as store:
            return store.expire(time.time(), self.max_attempts)

    @contextmanager
    def _locked(self) -> Iterator[SweepStore]:
        """The store, locked and up to date; I/O errors become EngineError. If the lock
        was broken while this process was stopped in the session, the settles it wrote
        may be lost: they stay pending (settling twice is harmless)."""
        written: list[tuple[str, int, int, str]] = []
        try:
            with self.store.locked() as store:
                if self._pending:
                    written = self._write_pending(store)
                yield store
        except LockLost:
            with self._pending_lock:
                self._pending[:0] = written
            raise
        except OSError as exc:
            raise EngineError(f"sweep queue in {self.directory}: {exc}") from exc

    def repair(self) -> list[str]:
        """Rebuild a damaged queue from what is left; lines saying what was done."""
        self._require_directory()
        try:
            return self.store.repair()
        except OSError as exc:
            raise EngineError(f"sweep queue in {self.directory}: {exc}") from exc

    def list(self, kind: str) -> Iterator[dict[str, Any]]:
        """``done`` or ``dead`` params, in queue order: id, param, attempts (the number
        of attempts that ran, as in the log names ``<id>.<attempt>.*``) and, for dead
        letters, the reason."""
        statuses = {"done": DONE, "dead": DEAD}
        self._require_directory()
        if kind not in statuses:
            raise EngineError(f"cannot list {kind!r}: use done or dead")
        with self._locked() as store:
            rows = [*store.records(statuses[kind])]
        ran = 1 if kind == "done" else 0  # the success is an attempt too
        for index, attempts, reason in rows:
            text = self.store.read_param(index)
            try:
                param = json.loads(text)
            except ValueError:  # a torn line of params.jsonl, kept as a dead letter
                param = text.decode("utf-8", "replace")
            record: dict[str, Any] = {"id": param_id(text), "param": param, "attempts": attempts + ran}
            if kind == "dead":
                record["reason"] = reason
            yield record
