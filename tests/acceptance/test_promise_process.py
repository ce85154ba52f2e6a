"""The promise around a task's process, as a user types the commands (issue 10).

A task minionize stopped is never done; a task never outlives its minion; params of any
size; messages a user can trust; ``--halt``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.services import script, wait_for

TRAP_EXIT_0 = "sh -c 'trap \"exit 0\" TERM; echo started > started; sleep 30 & wait'"


def sh(command: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], env=env, text=True, capture_output=True,
                          timeout=timeout)


def queue_status(env: dict[str, str]) -> dict[str, int]:
    result = sh("minion-queue status --json", env)
    assert result.returncode == 0, result.stderr
    status: dict[str, int] = json.loads(result.stdout)
    return status


# -- 1. a task minionize stopped is never done ------------------------------------------
def test_a_timed_out_task_that_exits_0_is_a_failed_attempt(user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill 1", user_env).returncode == 0
    result = sh(f"minionize --timeout 0.5 --max-attempts 2 --grace-period 1 {TRAP_EXIT_0}",
                user_env)
    assert result.returncode == 1, result.stderr
    assert "timed out after 0.5s" in result.stderr
    status = queue_status(user_env)
    assert status["done"] == 0 and status["dead"] == 1, status
    dead = [json.loads(line) for line in sh("minion-queue list dead --json", user_env).stdout.splitlines()]
    assert len(dead) == 1 and "timed out after 0.5s" in dead[0]["reason"]


def test_a_task_stopped_by_sigterm_that_exits_0_is_given_back(user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill 1", user_env).returncode == 0
    minion = subprocess.Popen(["bash", "-c", f"exec minionize {TRAP_EXIT_0}"], env=user_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: Path("started").exists(), 20, "the task to start")
    minion.send_signal(signal.SIGTERM)
    _, err = minion.communicate(timeout=30)
    assert minion.returncode == 0, err
    status = queue_status(user_env)
    assert status["done"] == 0 and status["todo"] == 1, status
