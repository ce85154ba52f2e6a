"""Compacting a sweep queue's journal: when, and the snapshot it is compacted into.

When the journal outgrows :data:`COMPACT_MIN_BYTES` (or the last snapshot, if that is
larger), the lock holder writes the state as snapshot <g+1> and moves every process to
journal <g+1> (see :meth:`Compaction.run` for the commit point).
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from .files import fsync_directory, snapshot_bytes, snapshot_path, snapshot_tmp_path, write_new
from .journal import Journal, head_line
from .params_file import ParamsFile
from .state import QueueState, to_snapshot

log = logging.getLogger("minionize.sweep")

#: Compact when the journal outgrows this, or the last snapshot if that is larger: the
#: replay at open then stays within about twice the cost of reading a snapshot.
COMPACT_MIN_BYTES = 1 << 20

#: Raises if this process's lock was broken (:meth:`.session.LockSession.fence_check`).
Fence = Callable[[], None]


class Compaction:
    """When ``journal`` is due for compaction, and compacting it."""

    def __init__(self, journal: Journal, min_bytes: int = COMPACT_MIN_BYTES) -> None:
        self.journal = journal
        self.directory = journal.directory
        self._min_bytes = self._at = min_bytes

    def threshold(self, size: int) -> None:
        """Compact once the journal outgrows ``size`` bytes (tests make it small)."""
        self._min_bytes = self._at = size

    def restart(self, snapshot_size: int) -> None:
        """A snapshot of ``snapshot_size`` bytes was loaded (0: none)."""
        self._at = max(self._min_bytes, snapshot_size)

    def due(self) -> bool:
        """Whether the journal, open in this session, has outgrown the snapshot."""
        return self.journal.fd is not None and self.journal.offset > self._at

    def run(self, state: QueueState, params: ParamsFile, fence: Fence) -> None:
        """Write the state as snapshot <g+1>, then move every process to journal <g+1>.

        The commit point is the ``next`` record appended to journal <g>: whoever reads
        it knows its state equals snapshot <g+1> and continues in journal <g+1>, whether
        or not the rename below happened before a crash.
        """
        journal = self.journal
        assert journal.fd is not None
        new = journal.generation + 1
        data = snapshot_bytes(to_snapshot(state), new, params.size)
        tmp = snapshot_tmp_path(self.directory)
        try:
            write_new(tmp, data)
            journal.create(new, head_line(new, state.n, params.size, state.lock_epoch))
            fence()
            journal.append({"o": "next", "g": new}, durable=True)
        except OSError as exc:
            log.warning("%s: could not compact the journal (%s); will retry later", self.directory, exc)
            self._at = journal.offset * 2
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        # Committed: from here on every reader follows the ``next`` record.
        journal.close()
        journal.at(new, heads=True)
        self._at = max(self._min_bytes, len(data))
        try:
            fence()
            os.replace(tmp, snapshot_path(self.directory))
            fsync_directory(self.directory)
            journal.remove_old()
        except OSError as exc:
            log.warning("%s: compaction left old files behind (%s)", self.directory, exc)
        journal.fd = os.open(journal.path(), os.O_RDWR)
        journal.offset = os.fstat(journal.fd).st_size  # its head record
