"""The sweep queue's journal: ``journal.<g>.jsonl``, one JSON record per line.

Every journal starts with a ``head`` record that says which state it continues (checked
against the snapshot when it is read); then come the events, appended at a known offset
under the lock. A torn last record (its writer died) is dropped; anything else that
does not read is :class:`~.files.Damaged`. A ``next`` record ends a journal: it
commits the snapshot of the next generation (see :meth:`.compaction.Compaction.run`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any, Optional

from .files import (
    SNAPSHOT_TMP_PREFIX,
    TMP_PREFIX,
    Damaged,
    pread_all,
    record_line,
    replace,
    snapshot_path,
    write_all,
    write_new,
)
from .params_file import ParamsFile

log = logging.getLogger("minionize.sweep")


def head_line(generation: int, n: int, size: int, epoch: int) -> bytes:
    """The first record of journal ``generation``: the state it continues."""
    return record_line({"o": "head", "g": generation, "n": n, "s": size, "e": epoch})


class Journal:
    """``journal.<g>.jsonl``: which one this process is in, how far it has read, and
    the descriptor it holds during a lock session."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.fd: Optional[int] = None
        self.at(0, heads=False)
        #: Whether this session appended anything (a long session re-checks its fence).
        self.wrote = False
        #: Set when a torn last record was dropped.
        self.dropped_torn = False

    def at(self, generation: int, heads: bool) -> None:
        """Start at the beginning of journal ``generation``. ``heads``: whether journals
        start with a ``head`` record (those of an older minionize did not)."""
        self.generation, self.offset, self.heads = generation, 0, heads

    def path(self, generation: Optional[int] = None) -> str:
        g = self.generation if generation is None else generation
        return os.path.join(self.directory, f"journal.{g}.jsonl")

    def generations(self) -> list[int]:
        found = []
        for name in os.listdir(self.directory):
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "journal" and parts[2] == "jsonl" and parts[1].isdigit():
                found.append(int(parts[1]))
        return sorted(found)

    def open(self) -> Optional[int]:
        """A descriptor of the current journal (opened now: close-to-open), or None."""
        try:
            return os.open(self.path(), os.O_RDWR)
        except FileNotFoundError:
            return None

    def create(self, generation: int, head: bytes) -> None:
        """Create journal ``generation`` holding ``head``. O_EXCL: a journal is never
        truncated; one left by a compaction that crashed before its commit record
        (nobody points at it) is replaced."""
        path = self.path(generation)
        try:
            write_new(path, head, exclusive=True)
        except FileExistsError:
            os.unlink(path)  # uncommitted: no ``next`` record leads to it
            write_new(path, head, exclusive=True)

    def records(self, fd: int) -> Optional[Iterator[tuple[int, dict[str, Any]]]]:
        """The records appended since ``offset`` with the byte each starts at (``offset``
        moves past each as it is given), or None if there is nothing new."""
        size = os.fstat(fd).st_size
        if size < self.offset:
            raise Damaged(f"{self.path()} shrank from {self.offset} to {size} bytes while in use")
        if size == self.offset:
            return None
        data = pread_all(fd, size - self.offset, self.offset)
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # Only a writer that died mid-record leaves a last line without its newline
            # (we hold the lock, nobody is writing): drop it. Its operation never
            # returned, so nothing acknowledged is lost; a fill's params are recovered.
            log.warning(
                "%s: dropping a truncated journal record (%d bytes) left by a crash",
                self.directory, len(data) - end,
            )
            os.ftruncate(fd, self.offset + end)
            self.dropped_torn = True
        return self._parse(data[:end])

    def _parse(self, data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
        for line in data.split(b"\n")[:-1]:
            position = self.offset
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise Damaged(
                    f"{self.path()}: an unreadable record at byte {position}: {line!r:.100}"
                )
            self.offset = position + len(line) + 1
            yield position, record

    def check_head(self, record: Optional[dict[str, Any]], fd: int, n: int, params: ParamsFile,
                   epoch: int) -> None:
        """The first record of a journal (None: the journal is empty) must be its head,
        agreeing with the state it continues; queues made before heads existed start
        with an ``add`` (generation 0) or anything (a later one)."""
        path = self.path()
        if record is not None and record.get("o") == "head":
            got = (record.get("g"), record.get("n"), record.get("s"))
            if got != (self.generation, n, params.size):
                raise Damaged(
                    f"{path} does not continue {snapshot_path(self.directory)}: its head "
                    f"says generation {got[0]}, {got[1]} params in {got[2]} bytes; the "
                    f"snapshot says generation {self.generation}, {n} params in "
                    f"{params.size} bytes"
                )
            self.heads = True
            return
        if self.heads:
            raise Damaged(f"{path} lost its first record (its head): it was truncated or replaced")
        if self.generation > 0:
            return  # a compacted queue of an older minionize
        if record is None:
            if params.file_size():
                raise Damaged(f"{path} is empty, but {params.path} holds params")
            self.heads = True
            write_all(fd, head_line(0, n, params.size, epoch), 0)
            os.fsync(fd)
            return
        if record.get("o") not in ("add", "adopt"):
            raise Damaged(f"{path} lost its first records (it starts with {record.get('o')!r})")

    def missing(self, snapshot: Optional[dict[str, Any]], params: ParamsFile) -> Damaged:
        """The error for a current journal that is not there."""
        others = self.generations()
        if snapshot is None and others:
            return Damaged(
                f"{snapshot_path(self.directory)} is missing, but {self.path(others[-1])} "
                "exists (a compacted queue starts from its snapshot)"
            )
        size = params.file_size()
        if size:
            return Damaged(f"{self.path()} is missing, but {params.path} holds {size} bytes of params")
        return Damaged(f"{self.path()} is missing, but {snapshot_path(self.directory)} points at it")

    def append(self, record: dict[str, Any], durable: bool = False) -> None:
        assert self.fd is not None
        line = record_line(record)
        self.wrote = True
        write_all(self.fd, line, self.offset)
        if durable:
            os.fsync(self.fd)
        self.offset += len(line)

    def append_break(self, record: dict[str, Any]) -> None:
        """Replace the journal by a copy ending with the ``break`` ``record``: a stopped
        holder's descriptor now writes to a file nobody reads."""
        assert self.fd is not None
        data = pread_all(self.fd, self.offset, 0) + record_line(record)
        replace(self.directory, self.path(), data)
        self.close()
        self.fd = os.open(self.path(), os.O_RDWR)
        self.offset = len(data)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def remove_old(self) -> None:
        """Remove journals older than the snapshot's predecessor (unreachable; a process
        that still points at one finds it gone and reloads the snapshot) and temporary
        files (leftovers of crashed compactions: compaction runs under the lock)."""
        keep = {self.path(), self.path(self.generation - 1)}
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.startswith((SNAPSHOT_TMP_PREFIX, TMP_PREFIX)) or (
                name.startswith("journal.") and name.endswith(".jsonl") and path not in keep
            ):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
