"""Rebuilding a sweep queue: ``minion-queue repair``.

It holds the lock through the :class:`~.session.LockSession` and rebuilds the
:class:`~.replica.Replica` from what the files hold; the params an interrupted fill left
are the replica's own business (:meth:`~.replica.Replica.recover_tail`)."""

from __future__ import annotations

import json
import os
from collections import deque

from ...errors import EngineError
from .files import Damaged, read_snapshot, replace, snapshot_bytes, snapshot_path
from .leases import Leases
from .replica import Replica
from .results import drop_lines, lost
from .session import LockSession
from .state import DEAD, DONE, TODO, to_snapshot


def repair(session: LockSession) -> list[str]:
    """Rebuild a consistent queue from what is left, and say what was done.

    Every line of params.jsonl is a param (an unreadable one a dead letter); a param
    is done or dead only where a readable snapshot or journal record proves it;
    params in flight become todo (their leases cannot be proven). The result is
    written as a new snapshot and journal generation; the old journals are removed.
    Results in results.jsonl are kept; a done param whose stored result the file lacks
    becomes todo (its task runs again), in a new generation too, the leases of a queue
    otherwise consistent kept.
    """
    replica = session.replica
    with session.held() as lock:
        try:
            recovered = session.reload()
            lost_count, results = _check_results(replica)
            if not lost_count:
                return (recovered or ["the queue is consistent: nothing to repair"]) + results
        except Damaged as exc:
            problem = str(exc).split(": the sweep queue is damaged")[0]
            lost_count = 0
        finally:
            replica.journal.close()
        epoch = max(replica.state.lock_epoch, lock.epoch or 0)
        if lost_count:
            generations = replica.journal.generations()
            return [*recovered, *results, *_new_generation(replica, epoch, generations)]
        return [f"found: {problem}", *_rebuild(replica, epoch)]


def _check_results(replica: Replica) -> tuple[int, list[str]]:
    """Make todo the done params whose stored result results.jsonl lacks or holds
    damaged (those lines dropped from the file): how many, and what was found (the
    state in memory; the caller writes a new generation if any)."""
    state = replica.state
    status = bytes(state.status)
    lines = replica.results_file.open()
    try:
        starts, lengths = lines.index(state.n)
        lost_ones = lost(state.results, status, DONE, starts)
        stored = (i for i in state.results if i < len(status) and status[i] == DONE)
        damaged = lines.damaged(stored, starts, lengths)
        line_starts = {lines.line_starts[i] for i in damaged}
    finally:
        lines.close()
    if damaged:
        drop_lines(lines.path, replica.directory, line_starts)
    if not lost_ones and not damaged:
        kept = len(state.results)
        return 0, [f"{lines.path}: {kept} result(s), all kept"] if kept else []
    for index in (*lost_ones, *damaged):
        state.move(index, TODO)
        state.results.discard(index)
        state.attempts.pop(index, None)
    state.returned, state.cursor = deque(), 0
    report = []
    if lost_ones:
        report.append(
            f"found: {lines.path} {'is missing' if lines.missing else 'was cut or replaced'}: "
            f"{len(state.results) + len(damaged)} result(s) kept, {len(lost_ones)} lost; "
            "their params made todo (their tasks run again)"
        )
    if damaged:
        report.append(
            f"found: {lines.path}: {len(damaged)} damaged line(s) (not UTF-8 or not JSON) "
            f"dropped, {len(state.results)} result(s) kept; their params made todo (their "
            "tasks run again)"
        )
    return len(lost_ones) + len(damaged), report


def _rebuild(replica: Replica, lock_epoch: int) -> list[str]:
    report: list[str] = []
    journal = replica.journal
    replica.params.drop_index()
    try:
        doc = read_snapshot(replica.directory)
        replica.load(doc)
        if doc is not None:
            report.append(f"{snapshot_path(replica.directory)}: read (generation {journal.generation})")
    except EngineError as exc:
        replica.load(None)
        doc = None
        report.append(f"{snapshot_path(replica.directory)}: ignored ({exc})")
    start = journal.generation if doc is not None else 0
    report += replica.recover_tail(None, write=False)
    generations = [g for g in journal.generations() if g >= start]
    for generation in generations:
        report.append(_replay_tolerantly(replica, generation))
    state = replica.state
    in_flight = list(state.leases)
    for index in in_flight:
        state.move(index, TODO)
    state.leases, state.returned, state.cursor = Leases(), deque(), 0
    if in_flight:
        report.append(f"{len(in_flight)} params in flight made todo (their leases are not proven)")
    report += _check_results(replica)[1]
    return report + _new_generation(replica, lock_epoch, generations)


def _new_generation(replica: Replica, lock_epoch: int, generations: list[int]) -> list[str]:
    """Write the state as a new snapshot and journal generation; remove the old ones
    (every process then reloads the snapshot)."""
    journal, state = replica.journal, replica.state
    new = max([journal.generation, *generations]) + 1
    state.lock_epoch = lock_epoch
    journal.at(new, heads=True)
    journal.create(new, replica.head(new))
    replace(replica.directory, snapshot_path(replica.directory),
            snapshot_bytes(to_snapshot(state), new, replica.params.size))
    journal.remove_old()
    for generation in generations:  # kept by remove_old (g - 1), not needed
        if generation < new:
            try:
                os.unlink(journal.path(generation))
            except FileNotFoundError:
                pass
    replica.forget()
    return [
        f"rebuilt: {state.n} params: {state.count[DONE]} done, {state.count[DEAD]} dead "
        f"letters, {state.count[TODO]} todo (snapshot generation {new})"
    ]


def _replay_tolerantly(replica: Replica, generation: int) -> str:
    """Apply the readable records of one journal, skipping damaged ones."""
    path = replica.journal.path(generation)
    with open(path, "rb") as f:
        data = f.read()
    applied = skipped = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if record.get("o") in ("head", "next"):
                continue
            if record.get("o") == "add" and int(record["n"]) > replica.state.n:
                raise ValueError("params missing from params.jsonl")
            replica.apply(record)
            applied += 1
        except (ValueError, AttributeError, TypeError, KeyError, IndexError, EngineError):
            skipped += 1
    return f"{path}: {applied} records applied, {skipped} unreadable or inapplicable skipped"
