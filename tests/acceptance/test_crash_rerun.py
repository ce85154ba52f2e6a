"""Re-running after a crash, as a user does it: a minion SIGKILLed with params in flight,
then the same commands again on the same host. A holder of this host that is gone
cannot come back: its leases end at once, without waiting for them to expire."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import Minion, queue_status, sh, start_minion
from tests.services import wait_for

#: A task that says it started, then runs for longer than any test.
SLOW = 'echo "$1" >> started; exec sleep 300'


def crashed_with_two_in_flight(tmp_path: Path, env: dict[str, str]) -> None:
    """``minion-queue fill 1..4``, a minion running 2 params, SIGKILLed with them."""
    assert sh("minion-queue fill 1..4", env).returncode == 0
    minion = start_minion(env, tmp_path, "-j", "2", "sh", "-c", SLOW, "task")
    started = tmp_path / "started"
    try:
        wait_for(lambda: started.exists() and len(started.read_text().split()) == 2, 30,
                 "two tasks started")
    finally:
        minion.kill_group()


def test_the_rerun_runs_the_params_the_killed_minion_held(tmp_path: Path,
                                                          user_env: dict[str, str]) -> None:
    crashed_with_two_in_flight(tmp_path, user_env)
    out = sh("minionize echo rerun", user_env)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()) == ["rerun 1", "rerun 2", "rerun 3", "rerun 4"]
    assert queue_status(user_env) == {"todo": 0, "in_flight": 0, "expired": 0, "done": 4,
                                      "dead": 0, "total": 4}


def test_status_and_reset_expired_end_the_leases_of_a_gone_minion(
        tmp_path: Path, user_env: dict[str, str]) -> None:
    crashed_with_two_in_flight(tmp_path, user_env)
    out = sh("minion-queue reset-expired", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sweep queue in sweeps: 2 expired leases put back"
    assert queue_status(user_env)["todo"] == 4

    (tmp_path / "started").unlink()
    crashed_with_two_in_flight(tmp_path, user_env)
    out = sh("minion-queue status", user_env)
    assert "  in flight       0" in out.stdout.splitlines(), out.stdout
    assert "  todo            4" in out.stdout.splitlines(), out.stdout


def test_wait_says_what_it_waits_for_and_takes_over_when_the_holder_dies(
        tmp_path: Path, user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill 1..4", user_env).returncode == 0
    holder: Minion = start_minion(user_env, tmp_path, "-j", "2", "sh", "-c", SLOW, "task")
    waiter = None
    try:
        started = tmp_path / "started"
        wait_for(lambda: started.exists() and len(started.read_text().split()) == 2, 30,
                 "two tasks started")
        # Alive: its leases hold; status says who holds them and until when.
        out = sh("minion-queue status", user_env)
        held = [line for line in out.stdout.splitlines() if "held by" in line]
        assert len(held) == 1, out.stdout
        assert re.search(rf"2 held by minion \w+ on \S+ \(pid {holder.pid}\), lease ends in "
                         r"\d+m\d\ds \(at \d\d:\d\d:\d\d\)", held[0]), held[0]

        waiter = start_minion(user_env, tmp_path, "--wait", "echo", "waited", keep_stdout=True)
        wait_for(lambda: "waiting for 2 params in flight" in waiter.err(), 30,
                 "the waiter saying what it waits for")
        line = next(x for x in waiter.err().splitlines() if "waiting for" in x)
        assert f"(pid {holder.pid})" in line and "lease ends in" in line, line
        assert waiter.process.poll() is None
        holder.kill_group()
        code, err = waiter.finish(60)
        assert code == 0, err
        assert sorted(waiter.out().splitlines()) == [f"waited {i}" for i in range(1, 5)]
    finally:
        holder.kill_group()
        if waiter is not None:
            waiter.kill_group()
