"""Attacks on a sweep queue's results (``results.jsonl``): minions killed, several at
once, torn and lost files, late acks, a full disk, a stopped writer whose lock is broken.
A result the queue said it stored is never lost silently, and never given twice."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from minionize.engines.sweep.engine import SweepEngine
from minionize.errors import EngineError
from tests.conftest import resize_disk, sh, small_disk, stopped_holder, user_environment
from tests.services import wait_for

#: A function task: records each run in $RUNS, naps $NAP seconds, returns param * 2.
DOUBLE = """
import os, sys, time
import minionize

@minionize.task
def double(param):
    time.sleep(float(os.environ.get("NAP", "0")))
    with open(os.environ["RUNS"], "a") as f:
        f.write(f"{param}\\n")
    return param * 2

sys.exit(double.run())
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "double.py").write_text(DOUBLE)
    return {**user_environment(), "RUNS": str(tmp_path / "runs.txt")}


def queue(args: str, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess[str]:
    """``minion-queue ARGS``, which must exit with ``code``."""
    out = sh(f"minion-queue {args}", env, timeout=120)
    assert out.returncode == code, (out.stdout, out.stderr)
    return out


def results(env: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in queue("results --json", env).stdout.splitlines()]


def double(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The function minion, in its own session (SIGKILL reaches its worker too)."""
    return subprocess.Popen([sys.executable, "double.py"], env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def run_doubled(tmp_path: Path, env: dict[str, str], params: str) -> Path:
    """Fill ``params``, run a function minion until they are done; results.jsonl."""
    queue(f"fill {params}", env)
    minion = double(env)
    assert minion.wait(60) == 0, minion.stderr.read() if minion.stderr else ""
    return tmp_path / "sweeps" / "results.jsonl"


def doubled(first: int, last: int) -> list[tuple[int, int]]:
    return [(p, 2 * p) for p in range(first, last + 1)]


def pairs(rows: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [(row["param"], row["result"]) for row in rows]


def engine(path: Path, **options: Any) -> SweepEngine:
    e = SweepEngine(str(path), **options)
    e.create()
    e.open()
    return e


def test_three_minions_store_every_result_once_in_queue_order(tmp_path: Path, env: dict[str, str]) -> None:
    queue("fill 0..199", env)
    minions = [double(env) for _ in range(3)]
    for m in minions:
        assert m.wait(120) == 0, m.stderr.read() if m.stderr else ""
    assert pairs(results(env)) == doubled(0, 199)
    lines = (tmp_path / "sweeps" / "results.jsonl").read_bytes().splitlines()
    assert len(lines) == 200  # one line per result: each ran once, none written twice


def test_a_minion_killed_mid_run_loses_no_stored_result_and_duplicates_none(
    tmp_path: Path, env: dict[str, str]
) -> None:
    queue("fill 0..299", env)
    fast = {**env, "NAP": "0.005", "MINION_LEASE": "2"}
    killed = double(fast)
    stored = tmp_path / "sweeps" / "results.jsonl"
    wait_for(lambda: stored.exists() and stored.stat().st_size > 1000, 60, "results stored")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    before = results(env)
    assert 0 < len(before) < 300  # killed mid-run
    assert pairs(before) == [(r["param"], 2 * r["param"]) for r in before]
    # The next minion waits for the dead one's leases to expire and runs those params.
    assert double({**fast, "MINION_WAIT": "1"}).wait(120) == 0
    after = results(env)
    assert pairs(after) == doubled(0, 299)
    assert all(row in after for row in before)  # what was stored stays, as it was


def test_a_torn_last_line_is_skipped_then_cut_by_the_next_writer(
    tmp_path: Path, env: dict[str, str]
) -> None:
    stored = run_doubled(tmp_path, env, "0..4")
    with open(stored, "ab") as f:
        f.write(b'{"i":3,"r":12345')  # a writer killed in the middle of its line
    assert pairs(results(env)) == doubled(0, 4)
    run_doubled(tmp_path, env, "5..9")
    lines = stored.read_bytes().split(b"\n")
    assert lines.pop() == b"" and len(lines) == 10
    assert all(json.loads(line)["r"] == 2 * json.loads(line)["i"] for line in lines)
    assert pairs(results(env)) == doubled(0, 9)


def test_results_lost_are_an_error_naming_the_file_and_repair_runs_those_params_again(
    tmp_path: Path, env: dict[str, str]
) -> None:
    stored = run_doubled(tmp_path, env, "0..9")
    text = stored.read_bytes()
    stored.write_bytes(text[: text.index(b'{"i":6,')])  # cut short: 4 lost
    out = queue("results", env, code=2)
    assert out.stdout == "" and len(out.stderr.splitlines()) == 1
    assert "results.jsonl lacks 4 of the 10 results stored" in out.stderr
    assert "minion-queue repair" in out.stderr
    stored.unlink()
    out = queue("results --json", env, code=2)
    assert "results.jsonl is missing: the results of 10 done params are lost" in out.stderr
    assert queue("status --json", env).stdout  # the rest of the queue reads
    stored.write_bytes(text[: text.index(b'{"i":6,')])
    out = queue("repair", env)
    assert "6 result(s) kept, 4 lost; their params made todo" in out.stdout, out.stdout
    assert json.loads(queue("status --json", env).stdout)["todo"] == 4
    assert pairs(results(env)) == doubled(0, 5)
    assert double(env).wait(60) == 0
    assert pairs(results(env)) == doubled(0, 9)
    assert "10 result(s), all kept" in queue("repair", env).stdout


def test_a_late_ack_after_its_lease_was_lost_never_replaces_the_result_that_counted(
    tmp_path: Path,
) -> None:
    q = tmp_path / "q"
    late, owner = engine(q, lease=0.3), engine(q, lease=30)
    late.fill(["finished first", "acked late first"])
    taken = late.take(2, 0.0)
    wait_for(lambda: owner.status()["expired"] == 2, 10, "the late minion's leases to expire")
    mine = {d.param: d for d in owner.take(2, 0.0)}
    assert {d.attempt for d in mine.values()} == {2}
    # The owner finishes first: the late ack changes nothing.
    owner.ack(mine["finished first"], '"owner"')
    owner.flush()
    late.ack(taken[0], '"late"')
    # The late ack comes first: it makes the param done, with its result; the owner's
    # ack, later, changes nothing either (a done param gets no more result lines).
    late.ack(taken[1], '"late"')
    late.flush()
    owner.ack(mine["acked late first"], '"owner"')
    owner.flush()
    assert pairs(list(owner.results())) == [("finished first", "owner"), ("acked late first", "late")]
    assert len((q / "results.jsonl").read_bytes().splitlines()) == 2


def test_a_full_disk_when_writing_results_leaves_the_param_not_done_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minionize.engines.sweep import results as _sweep_results

    q = tmp_path / "q"
    e = engine(q, lease=0.5)
    e.fill(["a", "b"])
    (a,) = e.take(1, 0.0)
    e.ack(a, '"first"')
    e.flush()
    (b,) = e.take(1, 0.0)
    real = _sweep_results.write_all

    def disk_full_halfway(fd: int, data: bytes, offset: int) -> None:
        real(fd, data[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_sweep_results, "write_all", disk_full_halfway)
    e.ack(b, '"second"' * 1000)
    with pytest.raises(EngineError, match="cannot write: No space left"):
        e.flush()
    monkeypatch.undo()
    # Nothing recorded, nothing torn: b is still in flight, its ack still owed.
    other = engine(q)
    assert other.status()["done"] == 1 and other.status()["in_flight"] == 1
    assert pairs(list(other.results())) == [("a", "first")]
    # This minion dies with its ack owed: b comes back when its lease expires.
    wait_for(lambda: other.status()["expired"] == 1, 10, "b's lease to expire")
    (again,) = other.take(1, 0.0)
    assert (again.param, again.attempt) == ("b", 2)
    other.ack(again, '"second again"')
    other.flush()
    assert pairs(list(other.results())) == [("a", "first"), ("b", "second again")]


def test_a_full_disk_that_frees_up_lets_the_owed_ack_store_its_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minionize.engines.sweep import results as _sweep_results

    q = tmp_path / "q"
    e = engine(q)
    e.fill(["a"])
    (a,) = e.take(1, 0.0)

    def full(fd: int, data: bytes, offset: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_sweep_results, "write_all", full)
    e.ack(a, '{"x": 1}')
    with pytest.raises(EngineError, match="No space left"):
        e.flush()
    monkeypatch.undo()
    e.flush()
    assert pairs(list(engine(q).results())) == [("a", {"x": 1})]


def test_a_minion_on_a_full_disk_stops_and_its_param_comes_back(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "big.py").write_text(
        "import sys, minionize\n"
        "@minionize.task\n"
        "def big(param):\n"
        "    return 'x' * param\n"
        "sys.exit(big.run())\n"
    )
    # Without root, the tests above fail the write instead.
    with small_disk(tmp_path / "small-disk", "256k") as disk:
        local = {**env, "EXECO_PERSISTENCE_DIR": str(disk / "sweeps"), "MINION_LEASE": "1"}
        queue("fill 10 400000 20", local)
        out = sh("python big.py", local)
        assert out.returncode != 0 and "cannot write: No space left on device" in out.stderr
        status = json.loads(queue("status --json", local).stdout)
        assert status["done"] <= 1 and status["total"] == 3  # 400000 is not done
        assert all(len(r["result"]) == r["param"] for r in results(local))
        resize_disk(disk, "64m")
        done = sh("python big.py", {**local, "MINION_WAIT": "1"})
        assert done.returncode == 0, done.stderr
        assert [(r["param"], len(r["result"])) for r in results(local)] == [
            (10, 10), (400000, 400000), (20, 20)]


STALE_WRITER = """
import os, sys
from minionize.engines.sweep.results import result_line
from minionize.engines.sweep.engine import SweepEngine
e = SweepEngine(sys.argv[1])
e.open()
with e._locked() as store:
    # Where ResultsFile.append is after its fence check: the file open, its end known.
    fd = os.open(store.replica.results_file.path, os.O_RDWR | os.O_CREAT)
    end = os.fstat(fd).st_size
    print("held", flush=True)
    sys.stdin.readline()
    os.pwrite(fd, result_line(0, '"stale"') * 100, end)
    os.close(fd)
"""


def test_a_writer_stopped_after_its_check_writes_to_a_file_nobody_reads(tmp_path: Path) -> None:
    q = tmp_path / "q"
    engine(q).fill(range(5))
    with stopped_holder(STALE_WRITER, str(q)):
        other = engine(q, lock_lease=1.0)  # breaks the stopped writer's lock after 1 s
        started = time.monotonic()
        for d in other.take(5, 0.0):
            other.ack(d, json.dumps(d.param * 10))
        other.flush()
        assert time.monotonic() - started < 10
    assert pairs(list(engine(q).results())) == [(p, p * 10) for p in range(5)]


def test_repair_of_a_damaged_journal_keeps_the_results_that_are_there(
    tmp_path: Path, env: dict[str, str]
) -> None:
    run_doubled(tmp_path, env, "0..9")
    journal = tmp_path / "sweeps" / "journal.0.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[2:]))  # its head and add record are lost
    queue("results", env, code=2)
    out = queue("repair", env)
    assert "sweeps/results.jsonl: 10 result(s), all kept" in out.stdout, out.stdout
    assert pairs(results(env)) == doubled(0, 9)


@pytest.mark.parametrize("damage", [b"\xff\xfe", b"[1,", b"1 2"], ids=["not-utf8", "torn", "not-json"])
def test_a_damaged_line_is_one_error_naming_it_and_repair_drops_it_and_reruns_its_param(
    tmp_path: Path, env: dict[str, str], damage: bytes
) -> None:
    stored = run_doubled(tmp_path, env, "0..5")
    text = stored.read_bytes()
    start = text.index(b'{"i":3,"r":') + len(b'{"i":3,"r":')
    stored.write_bytes(text[:start] + damage + text[text.index(b"}\n", start):])
    for args in ("results", "results --json"):
        out = queue(args, env, code=2)
        assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
        assert "results.jsonl" in out.stderr and "line 4" in out.stderr, out.stderr
        assert "minion-queue repair" in out.stderr
    out = queue("repair", env)
    assert "all kept" not in out.stdout, out.stdout
    assert "1 damaged" in out.stdout and "made todo" in out.stdout, out.stdout
    assert damage not in stored.read_bytes()
    assert json.loads(queue("status --json", env).stdout)["todo"] == 1
    assert double(env).wait(60) == 0
    assert pairs(results(env)) == doubled(0, 5)
    assert "6 result(s), all kept" in queue("repair", env).stdout


def test_a_lone_surrogate_in_a_result_is_listed_escaped(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "double.py").write_text(DOUBLE.replace("return param * 2", "return '\\ud800'"))
    run_doubled(tmp_path, env, "1")
    out = queue("results", env)
    assert out.stdout == '1\t"\\ud800"\n' and out.stderr == ""
    assert results(env)[0]["result"] == "\ud800"
