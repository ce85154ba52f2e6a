"""``minion-queue repair``: rebuild a damaged sweep queue from what is left."""

from __future__ import annotations

import json
import os
from collections import deque

from ..errors import EngineError
from ._sweep_store import DEAD, DONE, SNAPSHOT_NAME, TODO, Damaged, SweepStore


def repair(store: SweepStore) -> list[str]:
    """Rebuild a consistent queue from what is left, and say what was done.

    Every line of params.jsonl is a param (an unreadable one a dead letter); a param
    is done or dead only where a readable snapshot or journal record proves it;
    params in flight become todo (their leases cannot be proven). The result is
    written as a new snapshot and journal generation; the old journals are removed.
    """
    with store._thread_lock:
        lock = store._acquire()
        try:
            try:
                store._loaded = False
                store._sync()
                store._check_epoch()
                recovered = store._recover_params_tail() if store._check_tail else []
                return recovered or ["the queue is consistent: nothing to repair"]
            except Damaged as exc:
                problem = str(exc).split(": the sweep queue is damaged")[0]
            finally:
                store._close_journal()
            return [f"found: {problem}", *_rebuild(store, max(store.lock_epoch, lock.epoch or 0))]
        finally:
            store._wrote = False
            lock.release()


def _rebuild(store: SweepStore, lock_epoch: int) -> list[str]:
    report: list[str] = []
    store.dedupe = None
    try:
        doc = store._read_snapshot()
        store._adopt_snapshot(doc)
        if doc is not None:
            report.append(f"{store.path(SNAPSHOT_NAME)}: read (generation {store.generation})")
    except EngineError as exc:
        store._adopt_snapshot(None)
        doc = None
        report.append(f"{store.path(SNAPSHOT_NAME)}: ignored ({exc})")
    start = store.generation if doc is not None else 0
    report += store._recover_params_tail(write=False)
    generations = [g for g in store._journal_generations() if g >= start]
    for generation in generations:
        report.append(_replay_tolerantly(store, generation))
    in_flight = list(store.leases)
    for index in in_flight:
        del store.leases[index]
        store._move(index, TODO)
    store.heap, store.returned, store.cursor = [], deque(), 0
    if in_flight:
        report.append(f"{len(in_flight)} params in flight made todo (their leases are not proven)")
    new = max([store.generation, *generations]) + 1
    store.lock_epoch = lock_epoch
    store.generation = new
    store._create_journal(new)
    store._replace(store.path(SNAPSHOT_NAME), store._snapshot_bytes(new))
    store._remove_old_files()
    for generation in generations:  # kept by _remove_old_files (g - 1), not needed
        if generation < new:
            try:
                os.unlink(store.journal_path(generation))
            except FileNotFoundError:
                pass
    store._loaded = False
    report.append(
        f"rebuilt: {store.n} params: {store.count[DONE]} done, {store.count[DEAD]} dead "
        f"letters, {store.count[TODO]} todo (snapshot generation {new})"
    )
    return report


def _replay_tolerantly(store: SweepStore, generation: int) -> str:
    """Apply the readable records of one journal, skipping damaged ones."""
    path = store.journal_path(generation)
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
            if record.get("o") == "add" and int(record["n"]) > store.n:
                raise ValueError("params missing from params.jsonl")
            store._apply(record)
            applied += 1
        except (ValueError, AttributeError, TypeError, KeyError, IndexError, EngineError):
            skipped += 1
    return f"{path}: {applied} records applied, {skipped} unreadable or inapplicable skipped"
