"""The file engine's administration (``minion-queue`` with ``MINION_ENGINE=file``): what
the journals beside the file say of its lines.

A line is *done* when ``.done`` makes a rerun skip it; *dead* when it is not done and
``.failed`` holds a dead letter of its text (a rerun retries it); *todo* otherwise.
Requeueing a dead letter takes its records out of ``.failed`` (a rewrite, by rename,
under the file's lock: never while a minion reads the file). :class:`FileAdmin` holds
these verbs for :class:`~minionize.engines.file.engine.FileEngine`, which hands them over.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, Optional

from ...errors import EngineError, UnsupportedOperation
from ...params import Param
from ..base import Admin
from .journal import (
    done_attempts,
    done_lines,
    journal_records,
    line_param,
    numbered_lines,
    read_done,
    result_rows,
    separator,
)
from .lock import ReaderLock

#: The kinds of params ``minion-queue list`` shows.
KINDS = ("todo", "done", "dead")


class FileAdmin(Admin):
    """The administration of the file ``path`` (None: standard input, which has no
    journals), its params read with ``decoder``, its records ending with NUL when
    ``null``; ``name`` begins the ids of its lines. Needs no open engine: a minion may
    be reading the file."""

    def __init__(self, path: Optional[str], *, decoder: str, null: bool, name: str) -> None:
        super().__init__("file")
        self.path = path
        self.decoder = decoder
        self.null = null
        self.name = name

    def results(self) -> Iterator[dict[str, Any]]:
        """The lines ``.done`` makes a rerun skip, in line order, with their results
        (``.results``; see the engine module's docstring). Raises UnsupportedOperation
        at once for standard input."""
        if self.path is None:
            raise UnsupportedOperation(
                "the file engine keeps no results when it reads standard input: give the "
                "params in a file (FILE_PATH, --file), beside which <FILE_PATH>.results keeps them"
            )
        try:
            done = done_lines(self.path, separator(self.null), self.null)
        except OSError as exc:
            raise EngineError(f"cannot read file {self.path}: {exc.strerror}") from None
        if done.lost:
            stored = f"{self.path}.results"
            what = (f"is missing: the results of {done.lost} done lines are lost"
                    if done.missing else f"lacks the results of {done.lost} done lines (it "
                    "was cut, replaced or damaged): they are lost")
            raise EngineError(
                f"{stored} {what}; run the minion on "
                f"{self.path} again, which runs those lines again to compute them (or "
                "restore the file from a backup)"
            )
        return result_rows(self.path, done.lines, self._param, self.name)

    def status(self) -> dict[str, Any]:
        """Lines todo, done (``.done``), dead (``.failed``, not done since) and in all."""
        return status(self._path("report a status"), separator(self.null), self.null)

    def list(self, kind: str) -> Iterator[dict[str, Any]]:
        path = self._path(f"list {kind} params")
        return rows(path, separator(self.null), self.null, kind, self.name, self._param)

    def requeue_dead(self) -> int:
        return requeue(self._path("requeue dead letters"), None)

    def requeue_dead_ids(self, ids: Sequence[str]) -> int:
        return requeue(self._path("requeue dead letters"), ids)

    def _path(self, what: str) -> str:
        if self.path is None:
            raise UnsupportedOperation(
                f"the file engine cannot {what} of standard input: it keeps no journal "
                "there (give the params in a file: FILE_PATH)"
            )
        return self.path

    def _param(self, line: str) -> Param:
        return line_param(line, self.decoder)[0]


def read_failed(path: str) -> dict[str, dict[str, Any]]:
    """The last dead-letter record of each line text in ``<path>.failed`` (a torn or
    unreadable record is skipped)."""
    found: dict[str, dict[str, Any]] = {}
    for record in journal_records(path + ".failed"):
        if isinstance(record, dict) and isinstance(record.get("line"), str):
            found[record["line"]] = record
    return found


def classify(path: str, separator: bytes, null: bool
             ) -> Iterator[tuple[str, int, str, Optional[dict[str, Any]]]]:
    """(kind, line number, text, its dead-letter record) of every line of ``path``."""
    skip = read_done(path)[0]
    failed = read_failed(path)
    try:
        for number, line in numbered_lines(path, separator, null):
            if skip[line] > 0:
                skip[line] -= 1
                yield "done", number, line, None
            elif line in failed:
                yield "dead", number, line, failed[line]
            else:
                yield "todo", number, line, None
    except OSError as exc:
        raise EngineError(f"cannot read {path}: {exc.strerror}") from None


def status(path: str, separator: bytes, null: bool) -> dict[str, Optional[int]]:
    """The counters of every engine; in flight and expired are not known (no leases:
    what a minion runs now is in no file)."""
    counts = {kind: 0 for kind in KINDS}
    for kind, *_ in classify(path, separator, null):
        counts[kind] += 1
    return {**counts, "in_flight": None, "expired": None, "total": sum(counts.values())}


def rows(path: str, separator: bytes, null: bool, kind: str, name: str,
         param_of: Callable[[str], Param]) -> Iterator[dict[str, Any]]:
    """The rows of ``minion-queue list KIND``: id, param, attempts (dead letters: the
    reason too). A dead letter's id is its record's; a line's otherwise
    ``<file name>-<line number>``."""
    if kind not in KINDS:
        raise EngineError(f"cannot list {kind!r} params of a file: use todo, done or dead")
    seen: set[str] = set()
    attempts = done_attempts(path) if kind == "done" else {}
    for found, number, line, record in classify(path, separator, null):
        if found != kind:
            continue
        if record is not None:
            if line in seen:
                continue  # one row per dead letter's text, as .failed keeps one
            seen.add(line)
            yield {"id": str(record.get("id", "")), "param": record.get("param", line),
                   "attempts": record.get("attempts", 1), "reason": record.get("reason", "")}
            continue
        tried = attempts.get(line)
        yield {"id": f"{name}-{number}", "param": param_of(line),
               "attempts": (tried.pop(0) if tried else 1) if kind == "done" else 0}


def requeue(path: str, ids: Optional[Iterable[str]]) -> int:
    """Take the dead letters of ``ids`` (None: all) out of ``.failed``, so that they
    count as todo; how many. EngineError naming ids that are no dead letter."""
    lock = ReaderLock(path)
    lock.acquire()  # ConfigError naming the minion that reads the file
    try:
        failed = read_failed(path)
        by_id = {str(record.get("id")): line for line, record in failed.items()}
        if ids is None:
            chosen = set(failed)
        else:
            wanted = set(ids)
            unknown = sorted(wanted - set(by_id))
            if unknown:
                raise EngineError(
                    f"file {path}: no dead letter has the id {', '.join(unknown)}: "
                    "`minion-queue list dead` lists them with their ids"
                )
            chosen = {by_id[key] for key in wanted}
        if chosen:
            _rewrite_failed(path, chosen)
        return len(chosen)
    finally:
        lock.release()


def _rewrite_failed(path: str, drop: set[str]) -> None:
    """``.failed`` without the records of the texts ``drop``, replaced by a rename."""
    journal, tmp = path + ".failed", path + ".failed.tmp"
    try:
        with open(journal, "rb") as source, open(tmp, "wb") as out:
            for raw in source:
                try:
                    record = json.loads(raw.decode("utf-8", "surrogateescape"))
                except (ValueError, RecursionError):
                    record = None
                if isinstance(record, dict) and record.get("line") in drop:
                    continue
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, journal)
    except OSError as exc:
        raise EngineError(f"cannot rewrite {journal}: {exc.strerror}") from None
