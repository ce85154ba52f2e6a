"""The sweep engine: a queue of params in a directory every minion can reach.

The default engine (``MINION_ENGINE=sweep``, or ``execo``, the original name). The
directory is ``EXECO_PERSISTENCE_DIR`` (default ``sweeps``), on local disk or on a
shared filesystem (NFS, Lustre, GPFS). There is no server: minions coordinate through
the files alone. See ``docs/sweep-queue.md`` for the user's view.

The engine holds its parts: a :class:`~.store.SweepStore` (the queue's files and this
process's copy of them), an :class:`~.outbox.Outbox` (what this minion owes the queue
between two lock sessions), the :class:`~.access.QueueAccess` through which every lock
session goes (what is owed written first), and a :class:`~.admin.SweepAdmin` over the
same store and sessions, which it hands ``minion-queue``'s verbs.

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

``results.jsonl`` holds what function tasks returned (:attr:`SweepEngine.keeps_results`):
one line per result, appended in one write per lock session before the ack records,
by the ack that makes its param done only. The ack record says ``"r": 1`` and the state
(snapshot included) keeps a bit per param that has a result, so that a lost or cut file
is an error, never "no results"; the values stay out of the journal and the snapshot,
which every minion reads at open. See :mod:`.results`.

Why each step is safe on NFS
----------------------------
* **Lock first.** Every operation takes an advisory lock on ``queue.lock``
  (``flock``, which Linux's NFS client turns into an NFS/NLM byte-range lock shared by
  every client). Nothing is read or written without it, so there is exactly one writer
  at a time, on every host. The lock has a lease against stopped or hung holders, and
  a fence so that what they write after a break is ignored: see
  :mod:`minionize.engines.sweep.lock`.
* **Files that disagree are an error** (:class:`~.files.Damaged`), never an
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
  ``results.jsonl`` is opened after the lock is taken too, and written with ``pwrite``
  at the end its ``fstat`` gives (after the open: close-to-open), then closed.
* **Close flushes.** ``close()`` sends the written pages to the server before the lock
  is released, so the next holder's ``open()`` sees them.
* **Rename to replace.** A snapshot is written to a temporary file, fsync-ed, then
  ``rename``-d over ``snapshot.json``: readers see the old or the new one, never half.
  Compaction's commit point is a ``next`` record appended (and fsync-ed) to the old
  journal, so a crash at any step leaves a readable queue.
* **Torn records.** Only a writer that died mid-write leaves a last line without its
  newline; the next lock holder truncates it. That operation had not returned, so no
  acknowledged param is lost (its lease expires and it is redone). The same for a torn
  last line of ``results.jsonl``: readers skip it, the next writer cuts it.
* **fsync where durability needs it** (measured here: 0.2 to 0.6 ms each): params and
  their ``add`` record (losing them would lose work), snapshots before their rename,
  the ``next`` record, and requeues. Acks and dead letters are not fsync-ed by default:
  a process crash cannot lose them (the kernel or the NFS server already has them after
  ``close()``); a power cut of the host can, and that param is then run again (at least
  once, never lost). ``MINION_SWEEP_FSYNC=1`` fsyncs them too, and the results they
  store, before their records.
* **No SQLite, no mmap**: both rely on locking and page coherence that NFS does not give.
* **Clocks.** Lease expiry compares wall clocks of different hosts: keep them in sync
  (NTP) and the lease much longer than their skew.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from itertools import islice
from typing import TYPE_CHECKING, Any, Optional

from ...identity import MinionInfo
from ...owners import process_start
from ...params import Param
from ..base import Delivery, Engine
from .access import QueueAccess
from .admin import SweepAdmin
from .files import Damaged
from .files import param_id as param_id  # tests and callers import it from here
from .lock import DEFAULT_LEASE, MIN_LEASE, LockLost
from .outbox import Outbox
from .results import result_line
from .state import Owner
from .store import SweepStore
from .taker import Taker

if TYPE_CHECKING:
    from ...config import Settings

DEFAULT_DIRECTORY = "sweeps"


def _decoded(texts: Iterator[bytes], path: str) -> Iterator[Param]:
    for text in texts:
        try:
            yield json.loads(text)
        except ValueError as exc:
            raise Damaged(f"{path} holds a todo param that is not JSON ({exc})") from None


class SweepEngine(Engine):
    """A finite queue of params in a shared directory, with leases.

    ``directory``: the queue (made by :meth:`create`, which ``minion-queue fill``
    calls). ``lease``: seconds a claim is kept without a heartbeat. ``max_attempts``:
    an expired lease counts an attempt and dead-letters the param when it reaches
    this. ``wait``: on a drained queue, stay while other minions hold leases
    (``MINION_WAIT``). ``durable_settles``: fsync every ack and dead letter
    (``MINION_SWEEP_FSYNC``). ``lock_lease``: seconds without any change after which a
    waiter breaks the queue lock of a stopped or hung holder (``MINION_SWEEP_LOCK_LEASE``).
    ``hold_lock``: seconds to hold the lock in every session (tests only).
    """

    name = "sweep"
    keeps_results = True

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
        hold_lock: float = 0.0,
    ) -> None:
        self.directory = directory
        self.lease = lease
        self.max_attempts = max_attempts
        self.wait = wait
        info = minion or MinionInfo.current()
        self.owner = Owner(info.minion_id, info.host, info.pid, info.job_label,
                           process_start(info.pid))
        identity = {"minion": info.minion_id, "host": info.host, "pid": info.pid, "job": info.job_label}
        self.store = SweepStore(
            directory, durable_settles=durable_settles, lock_lease=max(MIN_LEASE, lock_lease),
            identity=identity, hold_lock=hold_lock,
        )
        #: Settles not written yet, params claimed ahead, deliveries handed out.
        self._outbox = Outbox(self.owner.minion)
        self._access = QueueAccess(self.store, self._outbox)
        self._taker = Taker(self._access, self._outbox, self.owner, lease=lease,
                            max_attempts=max_attempts, wait=wait)
        self._admin = SweepAdmin(directory, self._access, max_attempts)
        #: Claim params ahead while tasks are short (a queue whose params are batches
        #: already, like a pool's chunks, turns it off: one minion would hold them all).
        self.claim_ahead = True

    @classmethod
    def from_settings(cls, settings: Settings) -> SweepEngine:
        env = settings.env
        return cls(
            env.str("EXECO_PERSISTENCE_DIR", DEFAULT_DIRECTORY) or DEFAULT_DIRECTORY,
            lease=settings.lease,
            max_attempts=settings.max_attempts,
            wait=settings.wait,
            durable_settles=env.bool("MINION_SWEEP_FSYNC"),
            # none: never break the lock of a stopped holder (wait for it, as before).
            lock_lease=env.seconds("MINION_SWEEP_LOCK_LEASE", DEFAULT_LEASE) or float("inf"),
            # For tests only: hold the lock this long in every session, so that a test
            # can catch a minion holding it (SLURM suspends a whole job, not one instant).
            hold_lock=env.seconds("MINION_SWEEP_TEST_HOLD_LOCK", 0.0) or 0.0,
        )

    # -- taking ----------------------------------------------------------------------
    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        return self._taker.take(max_count, timeout, self.claim_ahead)

    def exhausted(self) -> bool:
        return self._taker.exhausted()

    def peek(self, limit: int) -> Iterator[Param]:
        """The todo params in the order :meth:`take` would hand them out, as of now,
        decoded as they are asked for: a million of them start at once (``DRY=1``)."""
        with self._locked() as store:
            params = store.replica.params
            texts = params.texts(islice(store.state.todo_order(), limit))
        return _decoded(texts, params.path)

    # -- settling: owed, and written by the next lock session (see :mod:`.access`) ----
    def ack(self, delivery: Delivery, result: Optional[str] = None) -> None:
        # The line is made here, in the task's thread, not under the lock.
        line = None if result is None else result_line(int(delivery.handle[0]), result)
        self._outbox.settle("ack", delivery, result=line)

    def retry(self, delivery: Delivery, reason: str) -> None:
        self._outbox.settle("retry", delivery, reason)

    def release(self, delivery: Delivery) -> None:
        self._outbox.settle("release", delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._outbox.settle("dead", delivery, reason or "failed")

    # -- leases ----------------------------------------------------------------------
    def lease_renewal_interval(self) -> Optional[float]:
        return self.lease / 3.0

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        deliveries = [*deliveries, *self._outbox.held_ahead()]
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
        if self._outbox.owes():
            try:
                with self._locked():
                    pass  # the session writes the pending settles
            except LockLost:
                pass  # they are pending again: the next session writes them

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        self._admin.open()

    def close(self) -> None:
        self._outbox.release_ahead()
        try:
            self.flush()
        finally:
            self.store.close()

    def describe(self) -> str:
        return f"sweep queue in {self.directory}"

    def _locked(self) -> AbstractContextManager[SweepStore]:
        """The store, locked and up to date, what is owed written first."""
        return self._access.locked()

    # -- administration: the admin's ------------------------------------------------
    def administration(self) -> SweepAdmin:
        return self._admin

    def create(self) -> None:
        self._admin.create()

    def holders(self) -> list[str]:
        return self._admin.holders()

    def held_text(self, record: dict[str, Any]) -> str:
        return self._admin.held_text(record)

    def requeue_dead_ids(self, ids: Iterable[str]) -> int:
        return self._admin.requeue_dead_ids(ids)

    def reset(self) -> int:
        return self._admin.reset()

    def repair(self) -> list[str]:
        return self._admin.repair()
