"""Attacks on function tasks (``@minionize.task``, ``FuncCallback``, ``Pool``): a function
that forks, a function that leaves a ``setsid`` child behind. A reply is always the one
of its own param, nothing waits forever, and nothing a function started outlives its
minion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sh, user_environment
from tests.services import alive, wait_for

#: A function minion over the sweep queue: returns param * param; for param 3 it forks
#: first, the child doing what $FORK says.
FORKING = """
import os, sys, time
import minionize

@minionize.task
def square(param):
    if param == 3:
        mode = os.environ["FORK"]
        child = os.fork()
        if child == 0:  # the forked child: it goes on as the function
            if mode == "exits":
                sys.exit(0)
            if mode == "lingers":
                time.sleep(3)
            return -1
        if mode in ("waited", "exits"):
            os.waitpid(child, 0)
    return param * param

sys.exit(square.run())
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "square.py").write_text(FORKING)
    return {**user_environment(), "MINION_MAX_ATTEMPTS": "1", "MINION_GRACE_PERIOD": "2"}


def queue(args: str, env: dict[str, str]) -> list[dict[str, Any]]:
    out = sh(f"minion-queue {args} --json", env, timeout=60)
    assert out.returncode == 0, (out.stdout, out.stderr)
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize("mode", ["waited", "immediate", "exits", "lingers"])
def test_a_function_that_forks_never_shifts_a_result(env: dict[str, str], mode: str) -> None:
    assert sh("minion-queue fill 0..7", env).returncode == 0
    minion = sh(f"FORK={mode} python square.py", env, timeout=60)  # never waits forever
    assert minion.returncode == 1, minion.stderr  # the forking param is dead
    rows = queue("results", env)
    assert [(r["param"], r["result"]) for r in rows] == [(p, p * p) for p in (0, 1, 2, 4, 5, 6, 7)]
    [dead] = queue("list dead", env)
    assert dead["param"] == 3
    assert "the function forked" in dead["reason"], dead


POOL = """
import os, sys
from minionize.pool import Pool

def square(x):
    if x == 3 and os.fork() == 0:
        return -1  # the forked child goes on as the function
    return x * x

if __name__ == "__main__":
    with Pool(2, workdir=sys.argv[1], lease=2.0, max_attempts=2) as pool:
        try:
            print("returned", pool.map(square, range(8), chunksize=1))
        except Exception as exc:
            print("raised", type(exc).__name__, str(exc).splitlines()[0])
"""


def test_pool_map_with_a_forking_function_ends_and_never_shifts_a_result(tmp_path: Path) -> None:
    script = tmp_path / "pool_fork.py"
    script.write_text(textwrap.dedent(POOL))
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], cwd=tmp_path,
                         env=user_environment(), capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    [line] = out.stdout.splitlines()
    assert line.startswith(("returned", "raised")), line
    if line.startswith("returned"):
        assert line == f"returned {[x * x for x in range(8)]}"
    else:
        assert "forked" in line, line


#: A function that leaves a ``setsid`` child (``sleep 300``) behind, its pid in $PIDS.
SETSID = """
import os, subprocess, sys, time
import minionize

@minionize.task
def leave(param):
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)
    with open(os.environ["PIDS"], "a") as f:
        f.write(f"{child.pid}\\n")
    if param == "wait":
        time.sleep(300)

sys.exit(leave.run())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc")
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL", "drained"])
def test_a_functions_setsid_child_does_not_outlive_its_minion(
    env: dict[str, str], tmp_path: Path, how: str
) -> None:
    (tmp_path / "leave.py").write_text(SETSID)
    pids = tmp_path / "pids"
    env = {**env, "PIDS": str(pids)}
    param = "done" if how == "drained" else "wait"
    assert sh(f"minion-queue fill {param}", env).returncode == 0
    minion = subprocess.Popen([sys.executable, "leave.py"], env=env, cwd=tmp_path,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    sleeper = 0
    try:
        wait_for(lambda: pids.exists() and pids.read_text().endswith("\n"), 30, "the child started")
        sleeper = int(pids.read_text())
        if how == "drained":
            assert minion.wait(30) == 0
        else:
            minion.send_signal(getattr(signal, how))
            minion.wait(30)
        wait_for(lambda: not alive(sleeper), 10, "the function's setsid child to be killed")
    finally:
        if minion.poll() is None:
            os.killpg(minion.pid, signal.SIGKILL)
            minion.wait()
        if sleeper and alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)
