"""`minionize` as a user types it, in an empty directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import sh
from tests.services import script, wait_for


def test_seq_through_the_file_engine_prints_hello(user_env: dict[str, str]) -> None:
    result = sh("seq 10 | MINION_ENGINE=file minionize echo hello", user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"hello {i}" for i in range(1, 11)]


def test_failure_is_retried_then_dead_lettered_exit_1(user_env: dict[str, str], tmp_path: Path) -> None:
    Path("params.txt").write_text("ok\nbad\n")
    Path("job.sh").write_text('echo "$1 attempt $MINION_ATTEMPT" >> runs.log; [ "$1" = ok ]\n')
    result = sh("MINION_ENGINE=file FILE_PATH=params.txt minionize --max-attempts 3 sh job.sh",
                user_env)
    assert result.returncode == 1
    runs = Path("runs.log").read_text().splitlines()
    assert sorted(runs) == ["bad attempt 1", "bad attempt 2", "bad attempt 3", "ok attempt 1"]
    assert Path("params.txt.done").read_text().splitlines() == ['"ok"']
    dead = json.loads(Path("params.txt.failed").read_text())
    assert dead["param"] == "bad" and dead["reason"] == "exit code 1" and dead["attempts"] == 3
    assert "dead letter" in result.stderr
    # A rerun skips what succeeded and tries the dead letter again.
    Path("runs.log").unlink()
    sh("MINION_ENGINE=file FILE_PATH=params.txt minionize --max-attempts 1 sh job.sh", user_env)
    assert Path("runs.log").read_text().splitlines() == ["bad attempt 1"]


def test_timeout_kills_the_task_and_counts_a_failure(user_env: dict[str, str]) -> None:
    started = time.monotonic()
    result = sh("echo 1 | MINION_ENGINE=file minionize --timeout 0.5 --max-attempts 2 "
                "--grace-period 0.5 sh -c 'sleep 30; echo never'", user_env)
    assert result.returncode == 1
    assert time.monotonic() - started < 15
    assert "never" not in result.stdout
    assert "timed out after 0.5s" in result.stderr


def test_sigterm_kills_a_stubborn_child_after_the_grace_period_and_requeues(
    user_env: dict[str, str],
) -> None:
    Path("params.txt").write_text("slow\n")
    Path("stubborn.sh").write_text('trap "" TERM; echo started > started; sleep 60 & wait; sleep 60\n')
    user_env.update(MINION_ENGINE="file", FILE_PATH="params.txt", MINION_GRACE_PERIOD="1")
    minion = subprocess.Popen([script("minionize"), "sh", "stubborn.sh"], env=user_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: Path("started").exists(), 20, "the task to start")
    sent = time.monotonic()
    minion.send_signal(signal.SIGTERM)
    _, err = minion.communicate(timeout=20)
    assert minion.returncode == 0, err
    assert 0.9 <= time.monotonic() - sent < 8
    # The param was given back, not marked done: a rerun runs it again.
    assert Path("params.txt.done").read_text() == ""
    assert Path("params.txt.failed").read_text() == ""
    # No process of the task's group survived.
    ps = subprocess.run(["pgrep", "-f", "stubborn.sh"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""


def test_concurrency_4_runs_4_tasks_at_once(user_env: dict[str, str]) -> None:
    Path("task.sh").write_text(
        'date +%s.%N > "start.$1"; sleep 1; date +%s.%N > "end.$1"\n'
    )
    result = sh("seq 4 | MINION_ENGINE=file minionize -j 4 sh task.sh", user_env)
    assert result.returncode == 0, result.stderr
    starts = [float(Path(f"start.{i}").read_text()) for i in range(1, 5)]
    ends = [float(Path(f"end.{i}").read_text()) for i in range(1, 5)]
    assert max(starts) < min(ends), "the 4 tasks did not all run at the same time"


def test_dotenv_is_read_and_the_environment_wins(user_env: dict[str, str]) -> None:
    Path(".env").write_text("MINION_ENGINE=file\nFILE_PATH=from-dotenv.txt\n")
    Path("from-dotenv.txt").write_text("dotenv\n")
    Path("from-env.txt").write_text("environment\n")
    assert sh("minionize echo", user_env).stdout == "dotenv\n"
    assert sh("FILE_PATH=from-env.txt minionize echo", user_env).stdout == "environment\n"


def test_injection_text_stays_text(user_env: dict[str, str]) -> None:
    Path("params.txt").write_text("$(touch pwned)\n`touch pwned2`; touch pwned3\n")
    result = sh("MINION_ENGINE=file FILE_PATH=params.txt minionize echo", user_env)
    assert result.stdout.splitlines() == ["$(touch pwned)", "`touch pwned2`; touch pwned3"]
    # The first run journaled both lines as done: run the shell variant on stdin.
    result = sh("MINION_ENGINE=file minionize --shell 'echo got' < params.txt", user_env)
    assert result.stdout.splitlines() == ["got $(touch pwned)", "got `touch pwned2`; touch pwned3"]
    assert not any(Path(p).exists() for p in ("pwned", "pwned2", "pwned3"))


def test_template_fills_mapping_params_and_param_env(user_env: dict[str, str]) -> None:
    Path("p.jsonl").write_text('{"x": 1, "y": "a b"}\n')
    result = sh("MINION_ENGINE=file FILE_PATH=p.jsonl FILE_DECODER=json minionize "
                "--template 'sh -c \"echo $0 [$1] $MINION_PARAM\" {x} {y}'", user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '1 [a b] {"x": 1, "y": "a b"}\n'


def test_log_dir_keeps_each_tasks_output(user_env: dict[str, str]) -> None:
    result = sh("printf 'a\\nb\\n' | MINION_ENGINE=file minionize --log-dir logs "
                "sh -c 'echo out $0; echo err $0 >&2'", user_env)
    assert result.returncode == 0 and result.stdout == ""
    [out_a] = Path("logs").glob("stdin-*-1.1.out")  # <input>-<run>-<line>.<attempt>
    [err_b] = Path("logs").glob("stdin-*-2.1.err")
    assert out_a.read_text() == "out a\n" and err_b.read_text() == "err b\n"


def test_dry_run_prints_and_consumes_nothing(user_env: dict[str, str]) -> None:
    Path("params.txt").write_text("1\n2\n")
    result = sh("MINION_ENGINE=file FILE_PATH=params.txt DRY=1 minionize echo hi", user_env)
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["echo hi 1", "echo hi 2"]
    assert not Path("params.txt.done").exists() or Path("params.txt.done").read_text() == ""


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("MINION_ENGINE=nosuch", "MINION_ENGINE='nosuch' is not a known engine"),
        ("MINION_ENGINE=file MINION_CONCURRENCY=abc", "MINION_CONCURRENCY='abc'"),
        ("MINION_ENGINE=file MINION_MAX_ATTEMPTS=0", "MINION_MAX_ATTEMPTS"),
        ("MINION_ENGINE=file MINION_REPORTER=fancy", "MINION_REPORTER='fancy'"),
        ("MINION_ENGINE=file FILE_DECODER=yaml", "FILE_DECODER"),
        ("MINION_ENGINE=file FILE_PATH=missing.txt", "FILE_PATH='missing.txt'"),
        ("MINION_ENGINE=pubsub", "GOOGLE_"),
    ],
)
def test_config_errors_exit_2_naming_the_variable(
    user_env: dict[str, str], setting: str, expected: str
) -> None:
    Path("params.txt").write_text("1\n")
    result = sh(f"{setting} minionize echo < params.txt", user_env)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command_exits_2_and_consumes_nothing(user_env: dict[str, str]) -> None:
    Path("params.txt").write_text("1\n")
    result = sh("MINION_ENGINE=file FILE_PATH=params.txt minionize no-such-program", user_env)
    assert result.returncode == 2
    assert "command not found: 'no-such-program'" in result.stderr
    assert not Path("params.txt.done").exists()


def test_no_program_is_a_usage_error(user_env: dict[str, str]) -> None:
    result = sh("MINION_ENGINE=file minionize < /dev/null", user_env)
    assert result.returncode == 2 and "no program given" in result.stderr


def test_version_and_help(user_env: dict[str, str]) -> None:
    assert sh("minionize --version", user_env).stdout.startswith("minionize ")
    help_text = sh("minionize --help", user_env).stdout
    for flag in ("--engine", "--concurrency", "--max-attempts", "--timeout", "--template",
                 "--shell", "--dry-run", "MINION_GRACE_PERIOD", "exit codes", "--halt",
                 "MINION_HALT", "--param-stdin", "MINION_PARAM_FILE"):
        assert flag in help_text


def test_python_api_function_minion(user_env: dict[str, str]) -> None:
    Path("params.txt").write_text("1\n2\nboom\n")
    Path("sim.py").write_text(
        "import minionize\n"
        "@minionize.task\n"
        "def simulate(param):\n"
        "    if param == 'boom':\n"
        "        raise ValueError('boom')\n"
        "    print('simulated', param, flush=True)\n"
        "raise SystemExit(simulate.run())\n"
    )
    user_env.update(MINION_ENGINE="file", FILE_PATH="params.txt", MINION_MAX_ATTEMPTS="2")
    result = subprocess.run(["python3", "sim.py"], env=user_env, text=True, capture_output=True,
                            timeout=60)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["simulated 1", "simulated 2"]
    assert json.loads(Path("params.txt.failed").read_text())["reason"] == "ValueError: boom"
    assert os.path.exists("params.txt.done")


def test_original_api_to_cmd_string_runs_in_a_shell(user_env: dict[str, str]) -> None:
    Path("params.jsonl").write_text('{"arg1": "a", "arg2": 2}\n')
    Path("mine.py").write_text(
        "from minionize import minionizer, ProcessCallback\n"
        "class MyProcessCallback(ProcessCallback):\n"
        "    def to_cmd(self, param):\n"
        "        return f\"echo --arg1 {param['arg1']} {param['arg2']} | tr a-z A-Z\"\n"
        "raise SystemExit(minionizer(MyProcessCallback()).run())\n"
    )
    user_env.update(MINION_ENGINE="file", FILE_PATH="params.jsonl", FILE_DECODER="json")
    result = subprocess.run(["python3", "mine.py"], env=user_env, text=True, capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "--ARG1 A 2\n"


def test_second_sigint_stops_at_once(user_env: dict[str, str]) -> None:
    Path("params.txt").write_text("x\n")
    Path("stubborn.sh").write_text('trap "" TERM INT; touch started; sleep 60\n')
    user_env.update(MINION_ENGINE="file", FILE_PATH="params.txt", MINION_GRACE_PERIOD="30")
    minion = subprocess.Popen([script("minionize"), "sh", "stubborn.sh"], env=user_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: Path("started").exists(), 20, "the task to start")
    minion.send_signal(signal.SIGINT)
    assert minion.stderr is not None
    assert "SIGINT: stopping" in minion.stderr.readline()  # the first signal was seen
    assert minion.poll() is None  # waiting for its task, up to the grace period
    sent = time.monotonic()
    minion.send_signal(signal.SIGINT)
    minion.communicate(timeout=20)
    assert minion.returncode == 130
    assert time.monotonic() - sent < 5  # not the 30 s grace period
    assert Path("params.txt.done").read_text() == ""
