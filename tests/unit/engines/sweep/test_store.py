"""The sweep engine through its Python API: queue semantics, leases, recovery, files."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from minionize.config import Settings
from minionize.engines import load_engine
from minionize.engines.sweep.engine import SweepEngine, param_id
from minionize.engines.sweep.store import SweepStore
from minionize.errors import EngineError
from tests.conftest import drain
from tests.services import wait_for


def engine(path: Path, **options: object) -> SweepEngine:
    e = SweepEngine(str(path), **options)  # type: ignore[arg-type]
    e.create()
    e.open()
    return e


def test_a_minion_never_creates_a_missing_queue(tmp_path: Path) -> None:
    from minionize.errors import EngineError

    missing = SweepEngine(str(tmp_path / "typo"))
    with pytest.raises(EngineError, match="EXECO_PERSISTENCE_DIR=.*no sweep queue there"):
        missing.open()
    with pytest.raises(EngineError, match="no sweep queue there"):
        missing.status()
    assert not (tmp_path / "typo").exists()


def journal(path: Path) -> Path:
    return sorted(path.glob("journal.*.jsonl"), key=lambda p: int(p.name.split(".")[1]))[-1]


def test_fill_take_ack_in_order_and_status(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    assert e.fill(range(5)) == (5, 0)
    assert e.status() == {"todo": 5, "in_flight": 0, "expired": 0, "done": 0, "dead": 0, "total": 5}
    first = e.take(2, 0.0)
    assert [d.param for d in first] == [0, 1]
    assert [d.attempt for d in first] == [1, 1]
    assert e.status()["in_flight"] == 2
    for d in first:
        e.ack(d)
    assert drain(e) == [2, 3, 4]
    assert e.status()["done"] == 5 and e.exhausted()
    assert [r["param"] for r in e.list("done")] == [0, 1, 2, 3, 4]


def test_fill_dedupes_on_canonical_json_including_done_params(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    assert e.fill([{"b": 1, "a": 2}, "x", 1, 1.5, [1, 2]]) == (5, 0)
    drain(e)
    assert e.fill([{"a": 2, "b": 1}, "x", "1", 1, [1, 2], None]) == (2, 4)
    assert drain(e) == ["1", None]
    # Another process's fill is seen by this one's dedupe too.
    assert engine(tmp_path / "q").fill(["new"]) == (1, 0)
    assert e.fill(["new", "newer"]) == (1, 1)


def test_delivery_id_is_a_stable_hash_of_the_param(tmp_path: Path) -> None:
    e = engine(tmp_path / "q", max_attempts=5)
    e.fill([{"x": 1, "y": "a"}])
    d = e.take(1, 0.0)[0]
    assert d.id == param_id(b'{"x":1,"y":"a"}') and len(d.id) == 12
    e.retry(d, "boom")
    again = e.take(1, 0.0)[0]
    assert again.id == d.id and again.attempt == 2


def test_retry_counts_attempts_release_does_not(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill(["p"])
    d = e.take(1, 0.0)[0]
    e.release(d)
    d = e.take(1, 0.0)[0]
    assert d.attempt == 1
    e.retry(d, "exit 1")
    d = e.take(1, 0.0)[0]
    assert d.attempt == 2


def test_dead_letters_are_listed_with_reason_and_can_be_requeued(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill(["a", "b"])
    a, b = e.take(2, 0.0)
    e.dead_letter(a, "exit code 3: no such file")
    e.ack(b)
    assert e.status()["dead"] == 1 and e.exhausted()
    [record] = e.list("dead")
    assert record["param"] == "a" and record["reason"] == "exit code 3: no such file"
    assert record["attempts"] == 1
    assert e.requeue_dead() == 1
    d = e.take(1, 0.0)[0]
    assert d.param == "a" and d.attempt == 1
    e.ack(d)
    assert e.status() == {"todo": 0, "in_flight": 0, "expired": 0, "done": 2, "dead": 0, "total": 2}
    assert list(e.list("todo")) == []
    with pytest.raises(EngineError):
        list(e.list("expired"))


def test_processes_see_each_others_claims_and_acks(tmp_path: Path) -> None:
    a, b = engine(tmp_path / "q"), engine(tmp_path / "q")
    a.fill(range(4))
    da = a.take(1, 0.0)[0]
    db = b.take(1, 0.0)[0]
    assert (da.param, db.param) == (0, 1)
    b.ack(db)
    # A settle is written at its process's next lock session (normally the next take).
    assert list(b.peek(10)) == [2, 3]
    assert list(b.peek(10)) == [2, 3]  # peek consumes nothing
    assert a.status()["done"] == 1 and a.status()["in_flight"] == 1


def test_a_pending_settle_is_written_at_close(tmp_path: Path) -> None:
    a = engine(tmp_path / "q")
    a.fill(["x", "y"])
    [d] = a.take(1, 0.0)
    a.ack(d)
    a.close()
    other = engine(tmp_path / "q")
    assert other.status()["done"] == 1 and other.status()["todo"] == 1


def test_expired_lease_returns_the_param_and_counts_an_attempt(tmp_path: Path) -> None:
    crashed = engine(tmp_path / "q", lease=0.2)
    crashed.fill(["p"])
    lost = crashed.take(1, 0.0)[0]
    other = engine(tmp_path / "q", lease=30)
    assert other.take(1, 0.0) == []
    assert other.status()["in_flight"] == 1
    wait_for(lambda: other.status()["expired"] == 1, 5, "the lease to expire")
    again = other.take(1, 0.0)[0]
    assert again.param == "p" and again.attempt == 2
    # The first holder's late failure is ignored (its attempt was counted at expiry) ...
    crashed.retry(lost, "late")
    crashed.status()  # writes the pending retry
    assert other.status()["in_flight"] == 1
    # ... and a late success still counts, once.
    crashed.ack(lost)
    crashed.status()
    other.ack(again)
    assert other.status()["done"] == 1 and [r["param"] for r in other.list("done")] == ["p"]


def test_expiry_reaching_max_attempts_dead_letters(tmp_path: Path) -> None:
    e = engine(tmp_path / "q", lease=0.05, max_attempts=2)
    e.fill(["p"])
    e.take(1, 0.0)
    time.sleep(0.1)
    d = e.take(1, 0.0)[0]
    assert d.attempt == 2
    time.sleep(0.1)
    assert e.reset_expired() == 1
    [record] = e.list("dead")
    assert "lease expired 2 time(s)" in record["reason"] and e.owner.minion in record["reason"]


def test_extend_keeps_the_lease(tmp_path: Path) -> None:
    e = engine(tmp_path / "q", lease=30)
    assert e.lease_renewal_interval() == pytest.approx(10)
    e.fill(["p"])
    d = e.take(1, 0.0)[0]
    other = SweepStore(str(tmp_path / "q"))
    with other.locked():
        [claimed_until] = [lease.expiry for lease in other.state.leases.values()]
    e.extend([d])
    # Another process, at the instant the claim's lease would have ended, keeps it.
    with other.locked():
        assert other.expire(claimed_until, max_attempts=3) == 0
        [lease] = other.state.leases.values()
        assert lease.expiry > claimed_until
    e.ack(d)


def test_exhausted_with_wait_waits_for_other_minions_leases(tmp_path: Path) -> None:
    holder = engine(tmp_path / "q", lease=30)
    holder.fill(["p", "q"])
    held = holder.take(2, 0.0)
    plain = engine(tmp_path / "q")
    waiting = engine(tmp_path / "q", wait=True)
    assert plain.exhausted()
    assert not waiting.exhausted()
    started = time.monotonic()
    assert waiting.take(1, 0.2) == []  # polls until the timeout while params are in flight
    assert time.monotonic() - started >= 0.15
    holder.retry(held[0], "failed")
    holder.flush()
    assert not waiting.exhausted()
    d = waiting.take(1, 0.0)[0]
    assert d.param == "p" and d.attempt == 2
    waiting.ack(d)
    holder.ack(held[1])
    holder.flush()
    assert waiting.exhausted()


def test_take_returns_at_once_when_nothing_can_come_back(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    started = time.monotonic()
    assert e.take(4, 1.0) == []
    assert time.monotonic() - started < 0.5
    assert e.exhausted()


def test_take_wakes_when_its_own_retry_puts_a_param_back(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill(["p"])
    d = e.take(1, 0.0)[0]
    threading.Timer(0.1, e.retry, (d, "failed")).start()
    again = e.take(1, 10.0)  # returns once the retry lands (0.1 s), however loaded the machine
    assert [x.attempt for x in again] == [2]


def test_truncated_last_record_is_dropped_and_acked_params_kept(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill(range(10))
    for d in e.take(6, 0.0):
        e.ack(d)
    e.flush()
    with open(journal(tmp_path / "q"), "ab") as f:
        f.write(b'{"o":"ack","i":7,"w":"dead')  # a writer killed mid-record
    fresh = engine(tmp_path / "q")
    assert fresh.status()["done"] == 6
    assert journal(tmp_path / "q").read_bytes().endswith(b"\n")
    assert sorted(drain(fresh)) == [6, 7, 8, 9]
    fresh.flush()
    assert engine(tmp_path / "q").status()["done"] == 10


def test_a_crashed_fills_unrecorded_params_are_recovered_never_cut(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill(["a"])
    with open(tmp_path / "q" / "params.jsonl", "ab") as f:
        f.write(b'"orphan"\n"half')  # written, but no journal record points at it
    size = (tmp_path / "q" / "params.jsonl").stat().st_size
    fresh = engine(tmp_path / "q")
    assert fresh.status()["total"] == 3  # "half" is kept, as a dead letter
    assert fresh.fill(["b", "orphan"]) == (1, 1)
    assert (tmp_path / "q" / "params.jsonl").stat().st_size > size
    assert drain(engine(tmp_path / "q")) == ["a", "orphan", "b"]
    [dead] = fresh.list("dead")
    assert "interrupted fill" in dead["reason"]


def test_compaction_keeps_few_files_and_every_view_consistent(tmp_path: Path) -> None:
    q = tmp_path / "q"
    busy = engine(q, lease=30)
    busy.store.replica.compaction.threshold(2000)
    idle = engine(q)
    busy.fill(range(300))
    held = busy.take(3, 0.0)
    busy.dead_letter(held[0], "bad")
    for _ in range(200):
        for d in busy.take(1, 0.0):
            busy.ack(d)
    busy.flush()
    names = sorted(p.name for p in q.iterdir())
    assert "snapshot.json" in names and len(names) <= 5, names
    # A process that slept through several compactions reloads the snapshot.
    expected = {"todo": 97, "in_flight": 2, "expired": 0, "done": 200, "dead": 1, "total": 300}
    assert idle.status() == expected
    assert engine(q).status() == expected
    assert [r["reason"] for r in idle.list("dead")] == ["bad"]
    busy.ack(held[1])
    busy.flush()
    assert drain(idle) == list(range(203, 300))
    idle.flush()
    assert engine(q).status()["done"] == 298


def test_compaction_commit_point_survives_a_crash_before_the_rename(tmp_path: Path) -> None:
    q = tmp_path / "q"
    e = engine(q)
    e.fill(range(5))
    e.ack(e.take(1, 0.0)[0])
    e.flush()
    # Simulate a compactor killed after its "next" record, before renaming the snapshot.
    with open(journal(q), "ab") as f:
        f.write(b'{"o":"next","g":1}\n')
    size = (q / "params.jsonl").stat().st_size
    (q / "journal.1.jsonl").write_bytes(b'{"o":"head","g":1,"n":5,"s":%d,"e":0}\n' % size)
    other = engine(q)
    other.ack(other.take(1, 0.0)[0])
    other.flush()
    assert (q / "journal.1.jsonl").stat().st_size > 0
    assert engine(q).status()["done"] == 2 and e.status()["done"] == 2


def test_files_stay_few_for_many_params(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill(range(200_000))
    for _ in range(50):
        for d in e.take(100, 0.0):
            e.ack(d)
    assert len(list((tmp_path / "q").iterdir())) <= 5


def test_params_are_stored_as_json_never_pickle(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill([{"x": [1, 2]}, "é"])
    lines = (tmp_path / "q" / "params.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"x": [1, 2]}, "é"]
    with pytest.raises(EngineError, match="cannot be stored as JSON"):
        e.fill([object()])


def test_concurrent_settles_from_threads(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill(range(400))
    deliveries = []
    while len(deliveries) < 400:
        deliveries += e.take(50, 0.0)
    threads = [threading.Thread(target=lambda ds=deliveries[k::8]: [e.ack(d) for d in ds])
               for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    e.flush()
    assert engine(tmp_path / "q").status()["done"] == 400


def test_a_filelock_on_the_lock_file_excludes_minions(tmp_path: Path) -> None:
    from filelock import FileLock

    e = engine(tmp_path / "q")
    e.fill(["p"])
    taken: list[object] = []
    with FileLock(str(tmp_path / "q" / "queue.lock")):
        worker = threading.Thread(target=lambda: taken.extend(e.take(1, 0.0)))
        worker.start()
        worker.join(0.3)
        assert worker.is_alive() and taken == []
    worker.join(5)
    assert [d.param for d in taken] == ["p"]


def test_settings_select_the_engine_and_its_directory(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"MINION_ENGINE": "execo", "EXECO_PERSISTENCE_DIR": str(tmp_path / "d"),
         "MINION_LEASE": "12", "MINION_WAIT": "1", "MINION_MAX_ATTEMPTS": "5"}
    )
    e = load_engine(settings)
    assert isinstance(e, SweepEngine)
    assert (e.directory, e.lease, e.wait, e.max_attempts) == (str(tmp_path / "d"), 12.0, True, 5)
    assert e.describe() == f"sweep queue in {tmp_path / 'd'}"
    assert e.lease_renewal_interval() == pytest.approx(4.0)


def test_lease_owner_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    e = engine(tmp_path / "q")
    e.fill(["p"])
    e.take(1, 0.0)
    store = SweepStore(str(tmp_path / "q"))
    with store.locked():
        [lease] = store.state.leases.values()
    assert (lease.host, lease.pid, lease.job) == (os.uname().nodename, os.getpid(), "4242")
    assert lease.minion == e.owner.minion


def _warm_up(e: SweepEngine) -> None:
    """One quick task, so that the engine knows its tasks are short."""
    [d] = e.take(1, 0.0)
    e.ack(d)


def test_short_tasks_claim_ahead_in_one_session(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill(range(20))
    _warm_up(e)
    [d] = e.take(1, 0.0)
    # One claim took the next param for this task and 7 more ahead.
    assert e.status()["in_flight"] == 8
    handed = [d] + [e.take(1, 0.0)[0] for _ in range(7)]
    assert [x.param for x in handed] == list(range(1, 9))
    for x in handed:
        e.ack(x)
    e.flush()
    assert engine(tmp_path / "q").status()["done"] == 9


def test_long_tasks_do_not_claim_ahead(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill(range(5))
    [d] = e.take(1, 0.0)
    time.sleep(0.05)
    e.ack(d)
    e.take(1, 0.0)
    assert e.status()["in_flight"] == 1


def test_params_claimed_ahead_come_back_without_an_attempt_when_the_minion_dies(
    tmp_path: Path,
) -> None:
    crashed = engine(tmp_path / "q", lease=0.3)
    crashed.fill(range(10))
    _warm_up(crashed)
    [running] = crashed.take(1, 0.0)  # param 1 runs; 2..8 are claimed ahead
    crashed.flush()
    # The process dies here: no close, no more heartbeats.
    other = engine(tmp_path / "q", lease=30)
    wait_for(lambda: other.status()["expired"] == 8, 5, "the leases to expire")
    attempts = {d.param: d.attempt for d in other.take(10, 0.0)}
    assert attempts[running.param] == 2  # it ran: the attempt counts
    assert all(attempts[p] == 1 for p in range(2, 10))  # claimed ahead, never ran


def test_close_gives_back_params_claimed_ahead(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill(range(10))
    _warm_up(e)
    [d] = e.take(1, 0.0)
    e.ack(d)
    e.close()
    fresh = engine(tmp_path / "q")
    assert fresh.status() == {"todo": 8, "in_flight": 0, "expired": 0, "done": 2, "dead": 0,
                              "total": 10}
    assert {x.attempt for x in fresh.take(10, 0.0)} == {1}


def test_a_snapshot_keeps_params_claimed_ahead_unstarted(tmp_path: Path) -> None:
    q = tmp_path / "q"
    crashed = engine(q, lease=0.3)
    crashed.store.replica.compaction.threshold(200)
    crashed.fill(range(30))
    _warm_up(crashed)
    crashed.take(1, 0.0)
    crashed.flush()
    names = {p.name for p in q.iterdir()}
    assert "snapshot.json" in names, names
    other = engine(q, lease=30)  # reads the snapshot
    wait_for(lambda: other.status()["expired"] == 8, 5, "the leases to expire")
    attempts = sorted(d.attempt for d in other.take(30, 0.0))
    assert attempts.count(2) == 1 and attempts.count(1) == len(attempts) - 1
