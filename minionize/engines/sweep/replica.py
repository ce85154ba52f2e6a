"""This process's copy of a sweep queue, caught up with the files it reads.

A :class:`Replica` holds the state of :mod:`.state` and the files of :mod:`.params_file`,
:mod:`.journal` and :mod:`.results`. Under the lock (held by :mod:`.session`), it
applies the records other processes appended since its last visit, appends its own,
adds the params an interrupted fill left in ``params.jsonl`` beyond what the journal
records, and compacts the journal into a snapshot once it has grown (:mod:`.compaction`). What needs the
lock's fence takes it as ``fence``, a callable that raises if the lock was broken.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

from ...errors import EngineError
from .compaction import COMPACT_MIN_BYTES, Compaction, Fence
from .files import Damaged, canonical, check_committed, read_snapshot, snapshot_path
from .journal import Journal, head_line
from .params_file import ParamsFile
from .results import ResultsFile
from .state import BadRecord, QueueState, from_snapshot

log = logging.getLogger("minionize.sweep")



class Replica:
    """This process's copy of a queue: the state, and where it is in the files."""

    def __init__(self, directory: str, compact_min_bytes: int = COMPACT_MIN_BYTES) -> None:
        self.directory = directory
        self.state = QueueState()
        self.params = ParamsFile(directory)
        self.journal = Journal(directory)
        self.results_file = ResultsFile(directory)
        self.compaction = Compaction(self.journal, compact_min_bytes)
        #: Set when a torn record was dropped or the queue was loaded: params.jsonl may
        #: hold params of an interrupted fill beyond what the journal records.
        self._tail_due = False
        self._loaded = False

    def load(self, doc: Optional[dict[str, Any]]) -> None:
        """Start from snapshot ``doc`` (None: from an empty queue)."""
        self._loaded = False
        keep_dedupe = self.params.dedupe is not None
        self.compaction.restart(0)
        if doc is None:
            self.state = QueueState()
            self.params.reset()
            self.journal.at(0, heads=False)
        else:
            try:
                self.state = from_snapshot(doc)
            except BadRecord as exc:
                raise Damaged(f"{snapshot_path(self.directory)}: {exc}") from None
            self.params.reset(keep_dedupe)
            self.params.load(self.state.n, int(doc["params_size"]))
            generation = int(doc["generation"])
            self.journal.at(generation, heads=bool(doc.get("heads", False)))
            self.compaction.restart(int(doc.get("size", 0)))
            check_committed(self.journal.path(generation - 1), self.directory, generation)
        self._loaded = True
        self._tail_due = True

    def forget(self) -> None:
        """Reload from the files at the next :meth:`sync` (what is in memory may hold
        writes that were fenced out, or a state a repair replaced)."""
        self._loaded = False

    def sync(self) -> None:
        """Apply every record appended since this process's last visit (lock held)."""
        if not self._loaded:
            self.load(read_snapshot(self.directory))
        journal = self.journal
        while True:
            fd = self._open_journal()
            if journal.offset and os.fstat(fd).st_size == journal.offset:
                journal.fd = fd  # nothing new: the common case
                return
            try:
                moved_to = self._read_journal(fd)
            except BaseException:
                os.close(fd)
                raise
            if moved_to is None:
                journal.fd = fd
                return
            os.close(fd)
            journal.generation, journal.offset = moved_to, 0

    def _open_journal(self) -> int:
        journal = self.journal
        fd = journal.open()
        if fd is not None:
            return fd
        doc = read_snapshot(self.directory)
        if doc is not None and int(doc["generation"]) > journal.generation:
            # Compacted twice since this process last looked: start from the snapshot.
            self.load(doc)
            return self._open_journal()
        fresh = not self.params.file_size() and not journal.generations()
        if doc is None and journal.generation == 0 and self.state.n == 0 and fresh:
            journal.heads = True
            journal.create(0, self.head(0))
            return os.open(journal.path(), os.O_RDWR)
        raise journal.missing(doc, self.params)

    def _read_journal(self, fd: int) -> Optional[int]:
        """Apply the records of journal ``fd`` from where this process stopped; the
        generation a ``next`` record moves to, if one is found."""
        journal, state = self.journal, self.state
        try:
            records = journal.records(fd)
            if records is None:
                if journal.offset == 0:  # an empty journal
                    journal.check_head(None, fd, state.n, self.params, state.lock_epoch)
                    journal.offset = os.fstat(fd).st_size
                return None
            for position, record in records:
                if position == 0:
                    journal.check_head(record, fd, state.n, self.params, state.lock_epoch)
                if record.get("o") == "next":
                    return int(record["g"])
                self.apply(record)
            return None
        except Damaged:
            self._loaded = False  # what was applied so far is not a state to keep
            raise
        finally:
            if journal.dropped_torn:
                journal.dropped_torn = False
                self._tail_due = True

    def apply(self, record: dict[str, Any], lines: Optional[list[bytes]] = None) -> None:
        """Apply ``record`` (``lines``: an ``add`` record's params, if known)."""
        try:
            if record.get("o") == "add":
                self.params.grow(int(record["n"]), int(record["s"]), lines)
            known = self.state.apply(record)
        except (KeyError, TypeError, ValueError) as exc:
            why = exc if isinstance(exc, BadRecord) else (
                f"a malformed record {record!r:.200} ({type(exc).__name__}: {exc})"
            )
            raise Damaged(f"{self.journal.path()}: {why}") from None
        if not known:
            log.warning("%s: skipping an unknown journal record %.200r", self.directory, record)

    def write(self, record: dict[str, Any], durable: bool = False) -> None:
        """Append ``record`` and apply it here, exactly as other processes will."""
        self.journal.append(record, durable)
        self.apply(record)

    def head(self, generation: int) -> bytes:
        """The ``head`` record of journal ``generation``, continuing this state."""
        return head_line(generation, self.state.n, self.params.size, self.state.lock_epoch)

    # -- an interrupted fill -----------------------------------------------------------
    def check_tail(self, fence: Fence) -> list[str]:
        """:meth:`recover_tail`, if a torn record was dropped or the queue was loaded
        since the last look."""
        return self.recover_tail(fence) if self._tail_due else []

    def recover_tail(self, fence: Optional[Fence], write: bool = True) -> list[str]:
        """Lines of params.jsonl beyond what the journal records (a fill killed between
        its params and its record, or a journal cut short): valid new params become
        todo, other lines dead letters; params.jsonl is never cut. ``write``: record
        it in the journal (else only in memory, for a repair). Lock held."""
        self._tail_due = False
        params = self.params
        found = params.read_tail(fence if write else None)
        if found is None:
            return []
        lines, size = found
        dedupe = params.index()
        n = self.state.n
        kept, bad = _sort_tail(lines, dedupe, n)
        record = {"o": "add", "n": n + len(lines), "s": size}
        void = {"o": "void", "l": bad, "why": "not a param: a line of params.jsonl left by "
                "an interrupted fill (unreadable, or a duplicate)"}
        if write:
            self.journal.append(record, durable=True)
        self.apply(record, lines)
        dedupe.update(kept)
        if bad:
            (self.write if write else self.apply)(void)
        found_text = (
            f"params {n} to {self.state.n - 1}: {len(lines) - len(bad)} todo, {len(bad)} "
            "unreadable or duplicate lines as dead letters"
        )
        if not write:
            return [f"{params.path}: read {found_text}"]
        log.warning(
            "%s held %d params beyond what the journal records (an interrupted fill, or a "
            "journal cut short): added %s", params.path, len(lines), found_text,
        )
        return [f"{params.path}: added {found_text} (beyond what the journal recorded)"]

    # -- compaction --------------------------------------------------------------------
    def compact(self, fence: Fence) -> None:
        """Write the state as the next snapshot and move to the next journal (see
        :meth:`.compaction.Compaction.run`); lock held, the journal open."""
        self.compaction.run(self.state, self.params, fence)


def _sort_tail(lines: list[bytes], dedupe: dict[bytes, int], n: int
               ) -> tuple[dict[bytes, int], list[int]]:
    """The params of ``lines`` (after the ``n`` known) to index, and the indices of the
    lines that are no param (unreadable, or a duplicate: it keeps pointing at the first
    copy of its text)."""
    bad: list[int] = []
    firsts: dict[bytes, int] = {}
    for k, line in enumerate(lines):
        try:
            good = canonical(json.loads(line)) == line
        except (ValueError, EngineError, RecursionError):
            good = False
        if good and line not in dedupe and line not in firsts:
            firsts[line] = n + k
        else:
            bad.append(n + k)
    kept = {line: dedupe[line] for line in lines if line in dedupe}
    kept.update(firsts)
    return kept, bad
