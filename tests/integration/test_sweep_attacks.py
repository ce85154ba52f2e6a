"""Attacks on a sweep queue with real processes: a minion stopped while it holds the
queue lock, and queue files damaged under running minions."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.services import script, wait_for

#: Appends the param to $RUNS (one line per run, O_APPEND), then sleeps $NAP seconds.
RECORDER = ["sh", "-c", 'echo "$1" >> "$RUNS"; sleep "${NAP:-0}"', "sh"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("MINION_", "EXECO_", "FILE_", "REPORTER_", "DRY", "SLURM_"))}
    clean["RUNS"] = str(tmp_path / "runs.txt")
    return clean


def queue(*args: str, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([script("minion-queue"), *args], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == code, (out.stdout, out.stderr)
    return out


def status(env: dict[str, str]) -> Any:
    return json.loads(queue("status", "--json", env=env).stdout)


def minion(*args: str, env: dict[str, str], **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([script("minionize"), *args], env=env, text=True,
                            start_new_session=True, **popen)


def runs(tmp_path: Path) -> collections.Counter[str]:
    path = tmp_path / "runs.txt"
    return collections.Counter(path.read_text().split() if path.exists() else [])


def holds_flock(pid: int, path: Path) -> bool:
    """Whether ``pid`` holds (not waits for) a flock on ``path`` (Linux /proc/locks)."""
    inode = os.stat(path).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[4] == str(pid) and fields[5].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def stop_while_holding(process: subprocess.Popen[str], lock: Path, timeout: float) -> int:
    """SIGSTOP ``process`` until it is caught holding the queue lock; the tries taken."""
    deadline = time.monotonic() + timeout
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        os.kill(process.pid, signal.SIGSTOP)
        wait_for(lambda: Path(f"/proc/{process.pid}/stat").read_text().split()[2] == "T",
                 5, "the minion to stop")
        if holds_flock(process.pid, lock):
            return tries
        os.kill(process.pid, signal.SIGCONT)
        time.sleep(0.002)
    raise AssertionError(f"never caught the minion holding the lock in {tries} tries")


def test_a_minion_stopped_holding_the_lock_does_not_freeze_the_queue(
    tmp_path: Path, env: dict[str, str]
) -> None:
    if not Path("/proc/locks").exists():
        pytest.skip("needs Linux /proc/locks to see who holds the lock")
    total = 300
    queue("fill", f"1..{total}", env=env)
    stopped = minion(*RECORDER, env=env, stderr=subprocess.PIPE)
    others: list[subprocess.Popen[str]] = []
    try:
        wait_for(lambda: runs(tmp_path), 20, "the first minion to start")
        tries = stop_while_holding(stopped, tmp_path / "sweeps" / "queue.lock", 30)
        print(f"caught the minion holding the lock after {tries} SIGSTOPs")
        # Status answers: it says who holds the lock, then breaks it (lease 6 s here).
        started = time.monotonic()
        out = queue("status", "--json", env={**env, "MINION_SWEEP_LOCK_LEASE": "6"})
        assert time.monotonic() - started < 20
        assert f"pid {stopped.pid}" in out.stderr and "waiting" in out.stderr, out.stderr
        assert json.loads(out.stdout)["total"] == total
        # The others drain the queue while it stays stopped.
        fast = {**env, "MINION_SWEEP_LOCK_LEASE": "2"}
        others = [minion(*RECORDER, env=fast, stderr=subprocess.PIPE) for _ in range(3)]
        for other in others:
            assert other.wait(60) == 0
        assert Path(f"/proc/{stopped.pid}/stat").read_text().split()[2] == "T"
        left = status(env)
        assert left["todo"] == 0 and left["done"] + left["in_flight"] == total
        # Resumed, it writes nothing it decided before the break: each param ran once.
        os.kill(stopped.pid, signal.SIGCONT)
        assert stopped.wait(60) == 0
    finally:
        for process in [stopped, *others]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    final = status(env)
    assert (final["done"], final["todo"], final["in_flight"], final["dead"]) == (total, 0, 0, 0)
    assert runs(tmp_path) == collections.Counter(str(i) for i in range(1, total + 1))
    rows = [json.loads(line) for line in queue("list", "done", "--json", env=env).stdout.split("\n") if line]
    assert sorted(r["param"] for r in rows) == list(range(1, total + 1))
    assert {r["attempts"] for r in rows} == {1}


def test_a_journal_removed_is_an_error_and_repair_keeps_every_param(
    tmp_path: Path, env: dict[str, str]
) -> None:
    queue("fill", "0..49", env=env)
    params = tmp_path / "sweeps" / "params.jsonl"
    size = params.stat().st_size
    (tmp_path / "sweeps" / "journal.0.jsonl").unlink()
    out = queue("status", env=env, code=2)
    assert "journal.0.jsonl is missing" in out.stderr and "repair" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    queue("fill", "5", env=env, code=2)
    assert params.stat().st_size == size
    out = queue("repair", env=env)
    assert "found: " in out.stdout and "50 params" in out.stdout, out.stdout
    assert status(env)["todo"] == 50
    assert minion("true", env=env).wait(60) == 0
    assert status(env)["done"] == 50


def test_a_journal_truncated_under_running_minions_stops_them_and_loses_nothing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    total = 3000
    queue("fill", f"1..{total}", env=env)
    minions = [minion(*RECORDER, env=env, stderr=subprocess.PIPE) for _ in range(4)]
    wait_for(lambda: sum(runs(tmp_path).values()) > 200, 30, "200 runs")
    (tmp_path / "sweeps" / "journal.0.jsonl").write_bytes(b"")
    codes = [p.wait(60) for p in minions]
    errors = "".join(p.stderr.read() for p in minions if p.stderr)
    if sum(runs(tmp_path).values()) < total:  # they stop, exit 2, naming the journal
        assert 2 in codes and "journal.0.jsonl" in errors, (codes, errors)
    assert set(codes) <= {0, 2}, codes
    out = queue("status", env=env, code=2)  # damaged, not empty
    assert "journal.0.jsonl" in out.stderr
    out = queue("repair", env=env)
    assert f"{total} params" in out.stdout, out.stdout
    assert minion(*RECORDER, env=env).wait(120) == 0
    final = status(env)
    assert final["done"] == total and final["total"] == total
    assert set(runs(tmp_path)) == {str(i) for i in range(1, total + 1)}  # none lost
