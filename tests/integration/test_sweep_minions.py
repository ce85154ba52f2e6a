"""Real ``minionize`` processes on one sweep queue: draining, crashes, leases, recovery,
and adopting execo's directories."""

from __future__ import annotations

import collections
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import queue_status, start_minion
from tests.services import script, wait_for

#: Appends the param to $RUNS (one line per run, O_APPEND), then sleeps $NAP seconds.
RECORDER = ["sh", "-c", 'echo "$1" >> "$RUNS"; sleep "${NAP:-0}"', "sh"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("MINION_", "EXECO_", "FILE_", "REPORTER_", "DRY"))}
    clean["RUNS"] = str(tmp_path / "runs.txt")
    return clean


def queue(*args: str, env: dict[str, str]) -> str:
    """``minion-queue ARGS``; its stdout."""
    out = subprocess.run([script("minion-queue"), *args], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def runs(tmp_path: Path) -> collections.Counter[str]:
    path = tmp_path / "runs.txt"
    lines = path.read_text().split() if path.exists() else []
    return collections.Counter(lines)


def done_params(env: dict[str, str]) -> list[Any]:
    out = queue("list", "done", "--json", env=env)
    return [json.loads(line)["param"] for line in out.splitlines()]


def test_sixteen_minions_drain_ten_thousand_params(tmp_path: Path, env: dict[str, str]) -> None:
    queue("fill", "0..9999", env=env)
    minions = [start_minion(env, tmp_path, "echo", keep_stdout=True) for _ in range(16)]
    assert [m.finish(240)[0] for m in minions] == [0] * 16
    outputs = [m.out() for m in minions]
    printed = collections.Counter(line for out in outputs for line in out.split())
    assert printed == collections.Counter(str(i) for i in range(10_000))  # each ran once
    assert sum(1 for out in outputs if out) > 1  # the work was shared
    status = queue_status(env)
    assert (status["done"], status["todo"], status["in_flight"], status["dead"]) == (10_000, 0, 0, 0)
    done = done_params(env)
    assert sorted(done) == list(range(10_000))  # each param done exactly once
    assert len(list((tmp_path / "sweeps").iterdir())) <= 5


def test_repeated_sigkill_loses_nothing_and_only_in_flight_params_rerun(
    tmp_path: Path, env: dict[str, str]
) -> None:
    total, kills = 400, 0
    queue("fill", f"1..{total}", env=env)
    env = {**env, "MINION_LEASE": "1", "NAP": "0.03"}
    rng = random.Random(7)
    minions = [start_minion(env, tmp_path, *RECORDER) for _ in range(4)]
    deadline = time.monotonic() + 60
    while kills < 8 and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.1, 0.4))
        victim = minions.pop(rng.randrange(len(minions)))
        if victim.process.poll() is None:
            victim.kill_group()  # the minion and its task, like a lost node
            kills += 1
        victim.process.wait(10)
        minions.append(start_minion(env, tmp_path, *RECORDER))
    for m in minions:
        assert m.finish(120)[0] == 0
    # A rerun waits for the killed minions' leases and finishes their params.
    finisher = start_minion(env, tmp_path, "--wait", *RECORDER)
    assert finisher.finish(120)[0] == 0
    status = queue_status(env)
    assert (status["done"], status["todo"], status["in_flight"], status["dead"]) == (total, 0, 0, 0)
    ran = runs(tmp_path)
    assert set(ran) == {str(i) for i in range(1, total + 1)}  # nothing lost
    twice = [param for param, count in ran.items() if count > 1]
    assert kills >= 4 and len(twice) <= kills  # one param in flight per killed minion
    assert sorted(done_params(env)) == list(range(1, total + 1))


def hung(minion: Any) -> None:
    """Stop ``minion`` and its tasks (SIGSTOP): alive, but renewing no lease, as on a
    node that hangs (a holder that ended on this host would lose its leases at once)."""
    os.killpg(minion.pid, signal.SIGSTOP)


def test_wait_finishes_a_hung_peers_param(tmp_path: Path, env: dict[str, str]) -> None:
    queue("fill", "slow", "a", "b", env=env)
    env = {**env, "MINION_LEASE": "1.5", "MINION_SWEEP_LOCK_LEASE": "2"}
    peer = start_minion(env, tmp_path, "sh", "-c", 'echo "$1" >> "$RUNS"; sleep 60', "sh")
    try:
        wait_for(lambda: runs(tmp_path)["slow"] == 1, 20, "the first minion to start 'slow'")
        hung(peer)
        # Without --wait, a minion leaves the hung peer's param (its lease still runs).
        plain = start_minion(env, tmp_path, *RECORDER)
        assert plain.finish(60)[0] == 0
        assert runs(tmp_path) == {"slow": 1, "a": 1, "b": 1}
        assert queue_status(env)["done"] == 2
        # With --wait it stays until the lease expires, then runs it (attempt 2).
        started = time.monotonic()
        waiting = start_minion(env, tmp_path, "--wait", *RECORDER)
        assert waiting.finish(60)[0] == 0
        assert runs(tmp_path)["slow"] == 2
        status = queue_status(env)
        assert (status["done"], status["in_flight"], status["expired"]) == (3, 0, 0)
        assert time.monotonic() - started < 30
    finally:
        peer.kill_group()


def test_a_killed_peers_param_is_run_by_the_next_minion_of_its_host_at_once(
    tmp_path: Path, env: dict[str, str]
) -> None:
    queue("fill", "slow", "a", env=env)
    crashed = start_minion(env, tmp_path, "sh", "-c", 'echo "$1" >> "$RUNS"; sleep 60', "sh")
    wait_for(lambda: runs(tmp_path)["slow"] == 1, 20, "the first minion to start 'slow'")
    crashed.kill_group()
    plain = start_minion(env, tmp_path, *RECORDER)  # the lease (300 s) is not waited for
    assert plain.finish(60)[0] == 0
    assert runs(tmp_path) == {"slow": 2, "a": 1}


def test_an_expired_lease_returns_its_param_to_the_next_minion(
    tmp_path: Path, env: dict[str, str]
) -> None:
    queue("fill", "only", env=env)
    env = {**env, "MINION_LEASE": "1", "MINION_SWEEP_LOCK_LEASE": "2"}
    peer = start_minion(env, tmp_path, "sh", "-c", "sleep 60", "sh")
    try:
        wait_for(lambda: queue_status(env)["in_flight"] == 1, 20, "a claim")
        hung(peer)
        wait_for(lambda: queue_status(env)["expired"] == 1, 20, "the lease to expire")
        out = subprocess.run([script("minionize"), "echo", "again"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.split() == ["again", "only"]
        assert queue_status(env)["done"] == 1
    finally:
        peer.kill_group()


def test_a_truncated_state_file_opens_and_keeps_acked_params(
    tmp_path: Path, env: dict[str, str]
) -> None:
    queue("fill", "0..9", env=env)
    assert subprocess.run([script("minionize"), "true"], env=env, timeout=60).returncode == 0
    journal = max((tmp_path / "sweeps").glob("journal.*.jsonl"))
    with open(journal, "ab") as f:
        f.write(b'{"o":"claim","w":"0123456789ab","h":"node-7","p":12,"j":"","e":1e10,"l":[[3')
    assert queue_status(env)["done"] == 10
    queue("fill", "10..12", env=env)
    out = subprocess.run([script("minionize"), "echo"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["10", "11", "12"]
    assert sorted(done_params(env)) == list(range(13))


def test_the_original_readme_commands_work_on_an_execo_directory(
    tmp_path: Path, env: dict[str, str]
) -> None:
    create = ("from execo_engine.sweep import ParamSweeper; "
              "ParamSweeper('sweeps', sweeps=range(10), save_sweeps=True)")
    subprocess.run([sys.executable, "-c", create], env=env, check=True, timeout=60)
    out = subprocess.run([script("minionize"), "echo", "hello"], env={**env, "MINION_ENGINE": "execo"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"hello {i}" for i in range(10)]
    assert queue_status(env)["done"] == 10


def test_an_execo_directory_with_progress_is_resumed(tmp_path: Path, env: dict[str, str]) -> None:
    execo_sweep = pytest.importorskip("execo_engine.sweep")
    sweeper = execo_sweep.ParamSweeper(
        "sweeps", sweeps=execo_sweep.sweep({"x": [1, 2, 3], "y": ["a"]}), save_sweeps=True
    )
    sweeper.done(sweeper.get_next())
    out = subprocess.run(
        [script("minionize"), "--template", "echo {x}{y}"], env=env, capture_output=True,
        text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) == 2 and set(out.stdout.split()) < {"1a", "2a", "3a"}
    assert queue_status(env)["done"] == 3


class Payload:
    """Stands for any class a hostile pickle could name."""


def test_a_directory_holding_a_pickle_of_an_arbitrary_class_is_refused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "sweeps").mkdir()
    with open(tmp_path / "sweeps" / "sweeps", "wb") as f:
        pickle.dump({1, 2}, f)
        f.seek(0)
        f.write(pickle.dumps([os.system]))  # names a function, as an exploit would
    out = subprocess.run([script("minionize"), "echo"], env={**env, "MINION_ENGINE": "execo"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.strip().splitlines()
    assert "refuses to load" in line and "system" in line
