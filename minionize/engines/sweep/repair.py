"""Rebuilding a sweep queue: ``minion-queue repair``, and the params an interrupted fill
left in ``params.jsonl`` beyond what the journal records."""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from typing import TYPE_CHECKING

from ...errors import EngineError
from .files import Damaged, canonical, read_snapshot, replace, snapshot_bytes, snapshot_path
from .leases import Leases
from .results import drop_lines, lost
from .state import DEAD, DONE, TODO, to_snapshot

if TYPE_CHECKING:
    from .session import Session
    from .store import SweepStore

log = logging.getLogger("minionize.sweep")


def recover_tail(store: Session, write: bool = True) -> list[str]:
    """Lines of params.jsonl beyond what the journal records (a fill killed between
    its params and its record, or a journal cut short): valid new params become
    todo, other lines dead letters; params.jsonl is never cut. ``write``: record
    it in the journal (else only in memory, for :func:`repair`). Lock held."""
    store._check_tail = False
    params = store.params
    found = params.read_tail(store._fence_check if write else None)
    if found is None:
        return []
    lines, size = found
    dedupe = params.index()
    n = store.state.n
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
    # A duplicate line keeps pointing at the first copy of its text.
    kept = {line: dedupe[line] for line in lines if line in dedupe}
    kept.update(firsts)
    record = {"o": "add", "n": n + len(lines), "s": size}
    void = {"o": "void", "l": bad, "why": "not a param: a line of params.jsonl left by an "
            "interrupted fill (unreadable, or a duplicate)"}
    if write:
        store.journal.append(record, durable=True)
    store._apply(record, lines)
    dedupe.update(kept)
    if bad:
        (store._write if write else store._apply)(void)
    found_text = (
        f"params {n} to {store.state.n - 1}: {len(lines) - len(bad)} todo, {len(bad)} "
        "unreadable or duplicate lines as dead letters"
    )
    if not write:
        return [f"{params.path}: read {found_text}"]
    log.warning(
        "%s held %d params beyond what the journal records (an interrupted fill, or a "
        "journal cut short): added %s", params.path, len(lines), found_text,
    )
    return [f"{params.path}: added {found_text} (beyond what the journal recorded)"]


def repair(store: SweepStore) -> list[str]:
    """Rebuild a consistent queue from what is left, and say what was done.

    Every line of params.jsonl is a param (an unreadable one a dead letter); a param
    is done or dead only where a readable snapshot or journal record proves it;
    params in flight become todo (their leases cannot be proven). The result is
    written as a new snapshot and journal generation; the old journals are removed.
    Results in results.jsonl are kept; a done param whose stored result the file lacks
    becomes todo (its task runs again), in a new generation too, the leases of a queue
    otherwise consistent kept.
    """
    with store._thread_lock:
        lock = store._acquire()
        try:
            try:
                store._loaded = False
                store._sync()
                store._check_epoch()
                recovered = recover_tail(store) if store._check_tail else []
                lost_count, results = _check_results(store)
                if not lost_count:
                    return (recovered or ["the queue is consistent: nothing to repair"]) + results
            except Damaged as exc:
                problem = str(exc).split(": the sweep queue is damaged")[0]
                lost_count = 0
            finally:
                store.journal.close()
            epoch = max(store.state.lock_epoch, lock.epoch or 0)
            if lost_count:
                generations = store.journal.generations()
                return [*recovered, *results, *_new_generation(store, epoch, generations)]
            return [f"found: {problem}", *_rebuild(store, epoch)]
        finally:
            store.journal.wrote = False
            lock.release()


def _check_results(store: SweepStore) -> tuple[int, list[str]]:
    """Make todo the done params whose stored result results.jsonl lacks or holds
    damaged (those lines dropped from the file): how many, and what was found (the
    state in memory; the caller writes a new generation if any)."""
    state = store.state
    status = bytes(state.status)
    lines = store.results_file.open()
    try:
        starts, lengths = lines.index(state.n)
        lost_ones = lost(state.results, status, DONE, starts)
        stored = (i for i in state.results if i < len(status) and status[i] == DONE)
        damaged = lines.damaged(stored, starts, lengths)
        line_starts = {lines.line_starts[i] for i in damaged}
    finally:
        lines.close()
    if damaged:
        drop_lines(lines.path, store.directory, line_starts)
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


def _rebuild(store: SweepStore, lock_epoch: int) -> list[str]:
    report: list[str] = []
    journal = store.journal
    store.params.dedupe = None
    try:
        doc = read_snapshot(store.directory)
        store._load(doc)
        if doc is not None:
            report.append(f"{snapshot_path(store.directory)}: read (generation {journal.generation})")
    except EngineError as exc:
        store._load(None)
        doc = None
        report.append(f"{snapshot_path(store.directory)}: ignored ({exc})")
    start = journal.generation if doc is not None else 0
    report += recover_tail(store, write=False)
    generations = [g for g in journal.generations() if g >= start]
    for generation in generations:
        report.append(_replay_tolerantly(store, generation))
    state = store.state
    in_flight = list(state.leases)
    for index in in_flight:
        state.move(index, TODO)
    state.leases, state.returned, state.cursor = Leases(), deque(), 0
    if in_flight:
        report.append(f"{len(in_flight)} params in flight made todo (their leases are not proven)")
    report += _check_results(store)[1]
    return report + _new_generation(store, lock_epoch, generations)


def _new_generation(store: SweepStore, lock_epoch: int, generations: list[int]) -> list[str]:
    """Write the state as a new snapshot and journal generation; remove the old ones
    (every process then reloads the snapshot)."""
    journal, state = store.journal, store.state
    new = max([journal.generation, *generations]) + 1
    state.lock_epoch = lock_epoch
    journal.generation = new
    journal.create(new, store._head(new))
    replace(store.directory, snapshot_path(store.directory),
            snapshot_bytes(to_snapshot(state), new, store.params.size))
    journal.remove_old()
    for generation in generations:  # kept by remove_old (g - 1), not needed
        if generation < new:
            try:
                os.unlink(journal.path(generation))
            except FileNotFoundError:
                pass
    store._loaded = False
    return [
        f"rebuilt: {state.n} params: {state.count[DONE]} done, {state.count[DEAD]} dead "
        f"letters, {state.count[TODO]} todo (snapshot generation {new})"
    ]


def _replay_tolerantly(store: SweepStore, generation: int) -> str:
    """Apply the readable records of one journal, skipping damaged ones."""
    path = store.journal.path(generation)
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
            if record.get("o") == "add" and int(record["n"]) > store.state.n:
                raise ValueError("params missing from params.jsonl")
            store._apply(record)
            applied += 1
        except (ValueError, AttributeError, TypeError, KeyError, IndexError, EngineError):
            skipped += 1
    return f"{path}: {applied} records applied, {skipped} unreadable or inapplicable skipped"
