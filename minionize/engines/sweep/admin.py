"""The sweep queue's administration: what ``minion-queue`` does with it.

Opening, filling, counting, listing, reading results, requeueing dead letters, putting
back expired leases and repairing: :class:`SweepAdmin` works on the same store, through
the same lock sessions (:class:`~.access.QueueAccess`), as the
:class:`~.engine.SweepEngine` that holds it and hands it these verbs; the engine itself
takes, settles and renews leases.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ...errors import EngineError
from ...params import Param
from ..base import Admin
from .access import QueueAccess, os_error
from .files import canonical, param_id
from .leases import held_text, holder_line
from .results import LostResults, lost
from .state import DEAD, DONE, FLIGHT, TODO
from .store import SweepStore


class SweepAdmin(Admin):
    """Administration of the sweep queue in ``directory`` through ``access`` (its store,
    and the lock sessions of the engine that holds this); ``max_attempts``: the
    engine's."""

    def __init__(self, directory: str, access: QueueAccess, max_attempts: int) -> None:
        super().__init__("sweep")
        self.directory = directory
        self.access = access
        self.store = access.store
        self.max_attempts = max_attempts
        self._opened = False

    # -- opening -----------------------------------------------------------------------
    def open(self) -> None:
        """Read the queue, and adopt an execo queue found there on first use.

        A minion never creates the directory: a mistyped ``EXECO_PERSISTENCE_DIR`` is an
        error (exit 2), not an empty queue that ends the run at once. ``create`` (called
        by ``minion-queue fill``) does.
        """
        if self._opened:
            return
        self._require_directory()
        with self.access.locked() as store:
            if store.state.n == 0 and store.replica.journal.generation == 0:
                self._adopt_execo(store)
        self._opened = True

    def _adopt_execo(self, store: SweepStore) -> None:
        from .execo_import import is_execo_directory, read_execo_directory

        if not is_execo_directory(self.directory):
            return
        todo, done = read_execo_directory(self.directory)
        store.adopt([canonical(p) for p in todo], [canonical(p) for p in done], "execo")

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
        with self.access.locked() as store:
            store.expire(0.0, self.max_attempts, gone=True)  # ended holders: not in flight
            in_flight, expired = store.state.leases.counts(time.time())
            return {
                "todo": store.state.count[TODO],
                "in_flight": in_flight,
                "expired": expired,
                "done": store.state.count[DONE],
                "dead": store.state.count[DEAD],
                "total": store.state.n,
            }

    def requeue_dead(self) -> int:
        self._require_directory()
        with self.access.locked() as store:
            return store.requeue_dead()

    def reset_expired(self) -> int:
        self._require_directory()
        with self.access.locked() as store:
            return store.expire(time.time(), self.max_attempts, gone=True)

    def holders(self) -> list[str]:
        """Who holds the params in flight, a line each: how many, and when they come
        back at the latest (the end of the holder's last lease)."""
        self._require_directory()
        with self.access.locked() as store:
            rows = store.state.leases.holders()
        now = time.time()
        return [holder_line(row, now) for row in rows]

    def repair(self) -> list[str]:
        """Rebuild a damaged queue from what is left; lines saying what was done."""
        self._require_directory()
        try:
            return self.store.repair()
        except OSError as exc:
            raise os_error(self.directory, exc) from exc

    def list(self, kind: str) -> Iterator[dict[str, Any]]:
        """``todo``, ``in-flight``, ``done`` or ``dead`` params, in queue order: id, param,
        attempts (the number of attempts that ran, as in the log names
        ``<id>.<attempt>.*``; in flight: the one running); for dead letters the reason;
        in flight, the holder (minion, host, pid, job) and ``lease_end`` (wall clock)."""
        statuses = {"todo": TODO, "in-flight": FLIGHT, "done": DONE, "dead": DEAD}
        self._require_directory()
        if kind not in statuses:
            raise EngineError(f"cannot list {kind!r}: use todo, in-flight, done or dead")
        with self.access.locked() as store:
            rows = [*store.records(statuses[kind])]
            leases = {i: store.state.leases.get(i) for i, _, _ in rows} if kind == "in-flight" else {}
        ran = 0 if kind in ("todo", "dead") else 1  # the success (the running one) too
        for index, attempts, reason in rows:
            text = self.store.read_param(index)
            record: dict[str, Any] = {"id": param_id(text), "param": _param(text),
                                      "attempts": attempts + ran}
            if kind == "dead":
                record["reason"] = reason
            lease = leases.get(index)
            if lease is not None:
                record.update(minion=lease.minion, host=lease.host, pid=lease.pid,
                              job=lease.job, lease_end=lease.expiry)
            yield record

    def held_text(self, record: dict[str, Any]) -> str:
        """Who holds a param of ``list("in-flight")``, and until when, as text."""
        return held_text(record, time.time())

    def requeue_dead_ids(self, ids: Iterable[str]) -> int:
        """Make the dead letters of these ids todo again; EngineError naming the ids
        that are no dead letter (nothing is requeued then)."""
        wanted = set(ids)
        self._require_directory()
        with self.access.locked() as store:
            found = {}
            for index in store.state.indices(DEAD):
                key = param_id(store.param_text(index))
                if key in wanted:
                    found[key] = index
            unknown = sorted(wanted - set(found))
            if unknown:
                raise EngineError(
                    f"sweep queue in {self.directory}: no dead letter has the id {', '.join(unknown)}: "
                    "`minion-queue list dead` lists them with their ids"
                )
            return store.requeue_some(list(found.values()))

    def reset(self) -> int:
        """Make every param todo again, with fresh attempts; how many."""
        self._require_directory()
        with self.access.locked() as store:
            return store.reset()

    def results(self) -> Iterator[dict[str, Any]]:
        """Done params in queue order, with what their task returned (None: nothing).

        Under the lock: which params are done and which have a result, and
        ``results.jsonl`` opened. Then, lock let go (a consumer may print slowly): where
        each param's last line is, and the lines read one at a time. Complete lines never
        change, so offsets found after the lock stay valid. A result the journal says
        was stored and the file lacks is :class:`~.results.LostResults`, raised
        before any row.
        """
        self._require_directory()
        with self.access.locked() as store:
            status = bytes(store.state.status)
            stored = store.state.results.copy()
            lines = store.replica.results_file.open()
        try:
            starts, lengths = lines.index(len(status))
            missing = lost(stored, status, DONE, starts)
            if missing:
                raise LostResults(lines.path, len(missing), len(stored), lines.missing)
            index = status.find(DONE)
            while index >= 0:
                text = self.store.read_param(index)
                result = None
                if index in stored:
                    result = lines.result(index, starts[index], lengths[index])
                yield {"id": param_id(text), "param": _param(text), "result": result}
                index = status.find(DONE, index + 1)
        finally:
            lines.close()


def _param(text: bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:  # a torn line of params.jsonl, kept as a dead letter
        return text.decode("utf-8", "replace")
