"""A local pool's queue of chunks, written into its run directory's sweep queue
(``RUNDIR/queue``) when the run directory is kept (an error ended the pool), so that
``minion-queue --queue-dir RUNDIR/queue list dead`` (and ``list todo``) show what the
in-memory queue (:class:`~.broker.Broker`) held, as they do for a SLURM pool.

The sweep queue is told the chunks' story through its engine's own verbs: each chunk
added, then taken and retried once per failed attempt (with the reason the last one
failed), a dead letter's last attempt dead-lettered; a chunk not done yet is left todo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engines.base import Delivery
from ..engines.sweep.engine import SweepEngine
from .broker import Broker


@dataclass
class _Story:
    """What became of one chunk: ``attempts`` failed, then dead (or left todo)."""

    reason: str
    attempts: int
    dead: bool
    told: int = 0


def write_kept_queue(broker: Broker, directory: str, lease: float, max_attempts: int) -> None:
    """The broker's dead letters and the chunks it still held, into the sweep queue in
    ``directory`` (made with the run directory)."""
    stories: dict[tuple[int, int], _Story] = {}
    failed: list[dict[str, Any]] = []
    fresh: list[dict[str, Any]] = []
    for row in broker.dead_letters():
        stories[_key(row["param"])] = _Story(row["reason"], max(1, row["attempts"]), True)
        failed.append(row["param"])
    for row in broker.left():
        if row["attempts"]:
            stories[_key(row["param"])] = _Story(row["reason"], row["attempts"], False)
            failed.append(row["param"])
        else:
            fresh.append(row["param"])
    if not failed and not fresh:
        return
    engine = SweepEngine(directory, lease=lease, max_attempts=max_attempts)
    engine.claim_ahead = False
    engine.open()
    try:
        if failed:
            engine.fill(failed)
            _tell(engine, stories)
        if fresh:
            engine.fill(fresh)
    finally:
        engine.close()


def _tell(engine: SweepEngine, stories: dict[tuple[int, int], _Story]) -> None:
    """Take the chunks again and again, each attempt failed with its reason, until each
    is dead or has had its attempts (then held, and released at the end: todo)."""
    held: list[Delivery] = []
    while True:
        taken = engine.take(len(stories), 0.0)
        if not taken:
            break
        for delivery in taken:
            story = stories[_key(delivery.param)]
            if story.told == story.attempts:
                held.append(delivery)
                continue
            story.told += 1
            if story.dead and story.told == story.attempts:
                engine.dead_letter(delivery, story.reason)
            else:
                engine.retry(delivery, story.reason)
    for delivery in held:
        engine.release(delivery)


def _key(param: Any) -> tuple[int, int]:
    return (int(param["call"]), int(param["chunk"]))
