"""A local pool's in-memory queue written into its kept run directory's sweep queue: dead
letters with their attempts and reason, chunks not done left todo with theirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from minionize.engines.sweep.engine import SweepEngine
from minionize.pool.broker import Broker
from minionize.pool.keptqueue import write_kept_queue


def _param(chunk: int) -> dict[str, Any]:
    return {"call": 0, "chunk": chunk, "start": 2 * chunk, "batch": 0, "offset": 20 * chunk,
            "size": 20, "star": False}


def _take(broker: Broker, minion: str = "w0.1") -> tuple[int, int]:
    answers: list[Any] = []
    broker.take(minion, answers.append)
    (answer,) = answers
    return (answer[1]["call"], answer[1]["chunk"])


def _listed(directory: Path, kind: str) -> list[tuple[int, int, str]]:
    engine = SweepEngine(str(directory))
    return [(row["param"]["chunk"], row["attempts"], row.get("reason", ""))
            for row in engine.administration().list(kind)]


def test_the_queue_as_it_ended_is_what_minion_queue_lists(tmp_path: Path) -> None:
    broker = Broker(60.0, 3, lambda: None)
    broker.fill([_param(chunk) for chunk in range(5)])
    for _ in range(2):
        assert _take(broker) == (0, 0)
        broker.settle("retry", (0, 0), "killed by SIGSEGV")
    assert _take(broker) == (0, 0)
    broker.settle("dead", (0, 0), "killed by SIGSEGV")  # its third attempt: a dead letter
    assert _take(broker) == (0, 1)
    broker.settle("ack", (0, 1))
    assert _take(broker) == (0, 2)
    broker.settle("retry", (0, 2), "exit code 3")  # todo again, one attempt failed
    assert _take(broker, "w1.2") == (0, 2)
    broker.start((0, 2))  # its minion handed it to its function process
    broker.reclaim("w1.2", "worker w1 lost: killed by SIGKILL")  # its second
    assert _take(broker) == (0, 2)  # in flight when the pool ended
    assert _take(broker) == (0, 3)  # in flight, never failed

    directory = tmp_path / "queue"
    SweepEngine(str(directory)).create()
    write_kept_queue(broker, str(directory), 60.0, 3)

    assert _listed(directory, "dead") == [(0, 3, "killed by SIGSEGV")]
    assert sorted(_listed(directory, "todo")) == [(2, 2, ""), (3, 0, ""), (4, 0, "")]
    assert _listed(directory, "in-flight") == [] and _listed(directory, "done") == []


def test_an_empty_queue_writes_nothing(tmp_path: Path) -> None:
    broker = Broker(60.0, 3, lambda: None)
    broker.fill([_param(0)])
    _take(broker)
    broker.settle("ack", (0, 0))
    directory = tmp_path / "queue"
    SweepEngine(str(directory)).create()
    before = sorted(p.name for p in directory.iterdir())
    write_kept_queue(broker, str(directory), 60.0, 3)
    assert sorted(p.name for p in directory.iterdir()) == before
