"""The promise around a task's process, as a user types the commands (issue 10).

A task minionize stopped is never done; a task never outlives its minion; params of any
size; messages a user can trust; ``--halt``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import queue_status, sh
from tests.services import alive, script, wait_for

TRAP_EXIT_0 = "sh -c 'trap \"exit 0\" TERM; echo started > started; sleep 30 & wait'"


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


# -- 4. a task never outlives its minion --------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc")
def test_a_task_and_its_children_die_with_a_minion_killed_outright(
    user_env: dict[str, str],
) -> None:
    Path("params.txt").write_text("x\n")
    # The task and a grandchild in its process group record their process ids.
    Path("task.sh").write_text('sleep 60 & echo $! > child.pid; echo $$ > task.pid; wait\n')
    user_env.update(MINION_ENGINE="file", FILE_PATH="params.txt")
    minion = subprocess.Popen([script("minionize"), "sh", "task.sh"], env=user_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: all(Path(name).exists() and Path(name).read_text().endswith("\n")
                             for name in ("task.pid", "child.pid")), 20, "the task to start")
        pids = [int(Path(name).read_text()) for name in ("task.pid", "child.pid")]
        assert all(alive(pid) for pid in pids)
        minion.kill()
        minion.wait(10)
        wait_for(lambda: not any(alive(pid) for pid in pids), 10,
                 "the task and its child to die with the minion")
    finally:
        for name in ("task.pid", "child.pid"):
            try:
                os.kill(int(Path(name).read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass


# -- 6. params of any size ------------------------------------------------------------
BIG = 1024 * 1024


def test_a_param_too_large_for_arguments_is_rejected_at_once_with_a_short_message(
    user_env: dict[str, str],
) -> None:
    Path("params.txt").write_text("x" * BIG + "\nsmall\n")
    result = sh("MINION_ENGINE=file FILE_PATH=params.txt minionize sh -c 'echo ran $0'",
                user_env)
    assert result.returncode == 1, result.stderr[:2000]
    assert result.stdout == "ran small\n"  # the small param ran; the big one never did
    assert len(result.stderr) < 2000, result.stderr[:2000]
    assert re.search(r'"x{100,}\.\.\. \(\d+ bytes\)', result.stderr), result.stderr[:2000]
    assert "--param-stdin" in result.stderr
    dead = json.loads(Path("params.txt.failed").read_text())
    assert dead["param"] == "x" * BIG  # the queue keeps it whole
    assert len(dead["reason"]) < 1000 and "--param-stdin" in dead["reason"]
    assert dead["attempts"] <= 1  # no retry


def test_param_stdin_and_param_file_take_a_param_of_any_size(user_env: dict[str, str]) -> None:
    Path("params.txt").write_text("x" * BIG + "\nsmall\n")
    Path("task.sh").write_text(
        'n=$(wc -c); if [ -n "$MINION_PARAM_FILE" ]; then f=$(wc -c < "$MINION_PARAM_FILE");'
        ' else f=env; fi; echo "line${MINION_PARAM_ID##*-} stdin=$n file=$f"\n'
    )
    result = sh("MINION_ENGINE=file FILE_PATH=params.txt minionize --param-stdin sh task.sh",
                user_env)
    assert result.returncode == 0, result.stderr[:2000]
    # The text and a newline on stdin; the JSON (with its quotes) in the file when large.
    assert sorted(result.stdout.split()) == sorted(
        ["line1", f"stdin={BIG + 1}", f"file={BIG + 2}", "line2", "stdin=6", "file=env"])
    assert Path("params.txt.done").read_text().count("\n") == 2


# -- 7. messages a user can trust -------------------------------------------------------
def test_every_stderr_line_of_concurrent_failures_is_whole(user_env: dict[str, str]) -> None:
    result = sh("seq 200 | MINION_ENGINE=file minionize -j 8 --max-attempts 1 false", user_env)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 200, result.stderr[-2000:]
    assert all(line.startswith("minionize: dead letter: param ") and
               line.endswith("after attempt 1: exit code 1") for line in lines), lines


def test_dry_run_into_a_closed_pipe_exits_quietly(user_env: dict[str, str]) -> None:
    result = sh("seq 100000 | MINION_ENGINE=file minionize -n echo | head -1", user_env)
    assert result.stdout == "echo 1\n"
    assert result.stderr == ""


def test_a_script_without_the_execute_bit_is_named_not_executable(
    user_env: dict[str, str],
) -> None:
    Path("params.txt").write_text("1\n")
    Path("job.sh").write_text("#!/bin/sh\necho $1\n")
    result = sh("MINION_ENGINE=file FILE_PATH=params.txt minionize ./job.sh", user_env)
    assert result.returncode == 2
    assert "'./job.sh' is not executable" in result.stderr and "chmod +x" in result.stderr
    assert "not found" not in result.stderr
    assert Path("params.txt.done").read_text() == "" if Path("params.txt.done").exists() else True


def test_a_script_without_a_shebang_stops_at_once_and_gives_the_param_back(
    user_env: dict[str, str],
) -> None:
    assert sh("minion-queue fill 1 2 3", user_env).returncode == 0
    Path("job.sh").write_text("echo $1 >> ran\n")
    Path("job.sh").chmod(0o755)
    result = sh("minionize ./job.sh", user_env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "#!/bin/sh" in lines[0], result.stderr
    assert queue_status(user_env)["todo"] == 3  # nothing consumed, no attempt counted
    assert not Path("ran").exists()


def test_a_log_dir_removed_during_a_run_is_recreated(user_env: dict[str, str]) -> None:
    Path("job.sh").write_text('echo "out $1"; [ "$1" != 1 ] || rm -r logs\n')
    result = sh("seq 3 | MINION_ENGINE=file minionize --log-dir logs sh job.sh", user_env)
    assert result.returncode == 0, result.stderr
    assert "not found" not in result.stderr
    # Log files are named <param id>.<attempt>; the file engine's ids end with the line.
    third = [p for p in Path("logs").glob("*-3.1.out")]
    assert len(third) == 1 and third[0].read_text() == "out 3\n"


# -- 5. --halt and command-line errors ------------------------------------------------
def test_halt_soon_stops_taking_params_and_exits_3(user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill 1..10", user_env).returncode == 0
    result = sh("minionize --halt soon,fail=2 --max-attempts 1 sh -c 'echo $0 >> ran; exit 1'",
                user_env)
    assert result.returncode == 3, result.stderr
    assert "--halt soon,fail=2" in result.stderr
    assert len(Path("ran").read_text().split()) == 2
    status = queue_status(user_env)
    assert status["dead"] == 2 and status["todo"] == 8, status


def test_halt_now_gives_running_tasks_back(user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill 1..6", user_env).returncode == 0
    Path("job.sh").write_text('if [ "$1" = 1 ]; then sleep 30; else sleep 0.5; exit 1; fi\n')
    result = sh("minionize -j 2 --halt now,fail=1 --grace-period 1 sh job.sh", user_env)
    assert result.returncode == 3, result.stderr
    status = queue_status(user_env)
    # 2 failed once (retried later: todo), 1 was stopped and given back, 3..6 untouched.
    assert status["done"] == 0 and status["dead"] == 0 and status["todo"] == 6, status


def test_bad_halt_rules_exit_2_with_one_line(user_env: dict[str, str]) -> None:
    for rule in ("--halt sometimes", "--halt now,fail=0"):
        result = sh(f"echo 1 | MINION_ENGINE=file minionize {rule} echo", user_env)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--halt" in lines[0], result.stderr  # names the flag given
    result = sh("echo 1 | MINION_HALT=x MINION_ENGINE=file minionize echo", user_env)
    assert result.returncode == 2 and "MINION_HALT='x'" in result.stderr
