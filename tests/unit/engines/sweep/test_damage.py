"""A damaged sweep queue is an error naming the file, never an empty queue; params are
never destroyed; ``repair`` rebuilds what can be proven. Also the lock's lease."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from minionize.engines.sweep.engine import SweepEngine
from minionize.errors import EngineError
from tests.conftest import drain, stopped_holder


def engine(path: Path, **options: object) -> SweepEngine:
    e = SweepEngine(str(path), **options)  # type: ignore[arg-type]
    e.create()
    e.open()
    return e


def compacted(q: Path, size: int = 300) -> SweepEngine:
    e = engine(q)
    e.store.replica.compaction.threshold(2000)
    e.fill(range(size))
    for _ in range(100):
        for d in e.take(1, 0.0):
            e.ack(d)
    e.flush()
    assert (q / "snapshot.json").exists()
    return e


def test_list_counts_the_attempts_that_ran(tmp_path: Path) -> None:
    e = engine(tmp_path / "q", max_attempts=2)
    e.fill(["once", "twice", "dead"])
    once, twice, dead = e.take(3, 0.0)
    e.ack(once)
    e.retry(twice, "exit 1")
    e.retry(dead, "exit 1")
    for d in e.take(2, 0.0):
        if d.param == "twice":
            e.ack(d)
        else:
            e.dead_letter(d, "exit 1")
    e.flush()
    done = {r["param"]: r["attempts"] for r in e.list("done")}
    assert done == {"once": 1, "twice": 2}
    [row] = e.list("dead")
    assert sorted(row) == ["attempts", "id", "param", "reason"] and row["attempts"] == 2


@pytest.mark.parametrize("damage", ["remove", "truncate"])
def test_a_lost_journal_is_an_error_and_fill_never_shrinks_params(tmp_path: Path, damage: str) -> None:
    q = tmp_path / "q"
    engine(q).fill(range(50))
    size = (q / "params.jsonl").stat().st_size
    if damage == "remove":
        (q / "journal.0.jsonl").unlink()
    else:
        (q / "journal.0.jsonl").write_bytes(b"")
    with pytest.raises(EngineError, match="journal.0.jsonl"):
        SweepEngine(str(q)).status()
    with pytest.raises(EngineError, match="journal.0.jsonl.*repair"):
        SweepEngine(str(q)).fill([5])
    assert (q / "params.jsonl").stat().st_size == size


def test_a_lost_snapshot_of_a_compacted_queue_is_an_error(tmp_path: Path) -> None:
    q = tmp_path / "q"
    compacted(q)
    size = (q / "params.jsonl").stat().st_size
    (q / "snapshot.json").unlink()
    with pytest.raises(EngineError, match="snapshot.json"):
        SweepEngine(str(q)).status()
    with pytest.raises(EngineError, match="snapshot.json"):
        SweepEngine(str(q)).fill([7, 8])
    assert (q / "params.jsonl").stat().st_size == size


def test_a_snapshot_with_a_missing_key_is_one_error_naming_it(tmp_path: Path) -> None:
    q = tmp_path / "q"
    compacted(q)
    doc = json.loads((q / "snapshot.json").read_text())
    del doc["state"]
    (q / "snapshot.json").write_text(json.dumps(doc))
    with pytest.raises(EngineError, match=r"snapshot.json.*state"):
        SweepEngine(str(q)).status()


def test_a_journal_cut_inside_a_fill_record_loses_no_param(tmp_path: Path) -> None:
    q = tmp_path / "q"
    e = engine(q)
    e.fill(range(100))
    e.fill(range(100, 200))
    data = (q / "journal.0.jsonl").read_bytes()
    (q / "journal.0.jsonl").write_bytes(data[:-5])  # the second add record, torn
    assert SweepEngine(str(q)).status()["total"] == 200
    assert sorted(drain(engine(q))) == list(range(200))  # type: ignore[type-var]


def test_garbage_in_the_middle_of_the_journal_is_an_error(tmp_path: Path) -> None:
    q = tmp_path / "q"
    e = engine(q)
    e.fill(range(3))
    with open(q / "journal.0.jsonl", "ab") as f:
        f.write(b'\x00\x00garbage\n{"o":"requeue"}\n')  # not a torn last record
    with pytest.raises(EngineError, match="journal.0.jsonl"):
        SweepEngine(str(q)).status()


def test_a_journal_that_shrinks_under_running_minions_stops_them(tmp_path: Path) -> None:
    q = tmp_path / "q"
    e = engine(q)
    e.fill(range(30))
    for d in e.take(5, 0.0):
        e.ack(d)
    e.flush()
    (q / "journal.0.jsonl").write_bytes(b"")
    with pytest.raises(EngineError, match="journal.0.jsonl"):
        e.take(1, 0.0)


def test_repair_rebuilds_from_what_is_left(tmp_path: Path) -> None:
    q = tmp_path / "q"
    e = engine(q)
    e.fill(range(20))
    for d in e.take(5, 0.0):
        e.ack(d)
    e.take(2, 0.0)  # in flight: not proven done
    e.flush()
    lines = (q / "journal.0.jsonl").read_bytes().splitlines(keepends=True)
    (q / "journal.0.jsonl").write_bytes(b"".join(lines[2:]))  # the head and add are lost
    with pytest.raises(EngineError):
        SweepEngine(str(q)).status()
    report = SweepEngine(str(q)).repair()
    assert any("20 params" in line for line in report), report
    status = SweepEngine(str(q)).status()
    assert status == {"todo": 15, "in_flight": 0, "expired": 0, "done": 5, "dead": 0, "total": 20}
    assert sorted(drain(engine(q))) == list(range(5, 20))  # type: ignore[type-var]


def test_repair_after_a_lost_journal_makes_every_param_todo(tmp_path: Path) -> None:
    q = tmp_path / "q"
    compacted(q, 300)
    (q / "snapshot.json").unlink()
    report = SweepEngine(str(q)).repair()
    assert report
    status = SweepEngine(str(q)).status()
    assert status["total"] == 300 and status["todo"] + status["done"] == 300


def test_repair_of_a_sound_queue_changes_nothing(tmp_path: Path) -> None:
    q = tmp_path / "q"
    e = engine(q)
    e.fill(range(4))
    e.ack(e.take(1, 0.0)[0])
    e.flush()
    before = e.status()
    assert any("nothing to repair" in line for line in SweepEngine(str(q)).repair())
    assert SweepEngine(str(q)).status() == before


HOLDER = """
import sys, time
from minionize.engines.sweep.engine import SweepEngine
e = SweepEngine(sys.argv[1])
e.open()
with e._locked() as store:
    print("held", flush=True)
    sys.stdin.readline()
    store.claim(1, e.owner, time.time() + 60)
print("wrote", flush=True)
"""


def test_a_stopped_lock_holder_is_broken_after_the_lock_lease_and_fenced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    q = tmp_path / "q"
    engine(q).fill(range(3))
    with stopped_holder(HOLDER, str(q)) as holder:
        other = SweepEngine(str(q), lock_lease=1.0)
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, "minionize.sweep"):
            assert drain(other) == [0, 1, 2]
        assert time.monotonic() - start < 10
        assert f"pid {holder.process.pid}" in caplog.text
    assert "wrote" not in holder.out and "lock was broken" in holder.err  # its claim was refused
    status = SweepEngine(str(q)).status()
    assert status == {"todo": 0, "in_flight": 0, "expired": 0, "done": 3, "dead": 0, "total": 3}


def test_a_snapshot_renamed_without_its_commit_record_is_refused(tmp_path: Path) -> None:
    q = tmp_path / "q"
    e = compacted(q)
    doc = json.loads((q / "snapshot.json").read_text())
    generation = doc["generation"]
    # What a compactor whose lock was broken could leave: its snapshot and journal, but
    # its commit record went to a journal that was replaced.
    doc["generation"] = generation + 1
    (q / "snapshot.json").write_text(json.dumps(doc))
    head = {"o": "head", "g": generation + 1, "n": doc["params"], "s": doc["params_size"], "e": 0}
    (q / f"journal.{generation + 1}.jsonl").write_text(json.dumps(head) + "\n")
    with open(q / f"journal.{generation}.jsonl", "a") as f:
        f.write('{"o":"requeue"}\n')
    with pytest.raises(EngineError, match="snapshot.json.*never committed"):
        SweepEngine(str(q)).status()
    assert e.status()["total"] == 300  # a running process goes on in its journal


def test_the_lock_lease_is_a_setting(tmp_path: Path) -> None:
    from minionize.config import Settings
    from minionize.engines import load_engine

    def lease(value: str) -> float:
        settings = Settings.from_env({"EXECO_PERSISTENCE_DIR": str(tmp_path),
                                      "MINION_SWEEP_LOCK_LEASE": value})
        engine = load_engine(settings)
        assert isinstance(engine, SweepEngine)
        return float(engine.store.session.lock_lease or 0)

    assert lease("") == 90 and lease("5") == 5 and lease("0.1") == 1  # at least 1 s
    assert lease("none") == float("inf")  # never broken


STALE_FILLER = """
import sys
from minionize.engines.sweep.engine import SweepEngine
e = SweepEngine(sys.argv[1])
e.open()
with e._locked() as store:
    print("held", flush=True)
    sys.stdin.readline()
    store._add_chunk([b'"stale"'])
print("wrote", flush=True)
"""


def test_a_stopped_filler_cannot_write_params_after_its_lock_was_broken(tmp_path: Path) -> None:
    q = tmp_path / "q"
    engine(q).fill(["a"])
    with stopped_holder(STALE_FILLER, str(q)) as holder:
        SweepEngine(str(q), lock_lease=1.0).fill(["b", "c"])
    assert "wrote" not in holder.out and "LockLost" in holder.err
    assert (q / "params.jsonl").read_bytes() == b'"a"\n"b"\n"c"\n'
    assert SweepEngine(str(q)).status()["total"] == 3


def test_a_fill_stopped_by_a_full_disk_leaves_the_queue_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from minionize.engines.sweep import params_file

    q = tmp_path / "q"
    e = engine(q)
    e.fill(range(10))
    real = params_file.write_all

    def disk_full_halfway(fd: int, data: bytes, offset: int) -> None:
        real(fd, data[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(params_file, "write_all", disk_full_halfway)
    with pytest.raises(OSError, match="No space left"):
        e.fill(range(10, 1000))
    monkeypatch.undo()
    assert SweepEngine(str(q)).status()["total"] == 10
    assert e.status()["total"] == 10
    assert e.fill(range(5, 15)) == (5, 5)  # filling again is safe
    assert sorted(drain(engine(q))) == list(range(15))  # type: ignore[type-var]
