"""Bad input, as a user gives it: one clear line, never a traceback, nothing consumed
(issue 20 items 16 and 21)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import queue_status, sh

DOTENVS = [
    (b"MINION_CONCURRENCY=2\nMINION_LOG_DIR=caf\xff\n", 2, "not UTF-8"),
    (b"MINION_CONCURRENCY=2\n\nMINION_TASK_TIMEOUT=5\x00\n", 3, "a NUL byte"),
    (b'MINION_CONCURRENCY=2\nMINION_TASK_TIMEOUT="5\nMINION_LOG_DIR=logs\n', 2, "cannot parse"),
]


@pytest.mark.parametrize(("data", "line", "why"), DOTENVS, ids=["xff", "nul", "quote"])
def test_a_damaged_dotenv_stops_the_minion_before_it_takes_anything(
    user_env: dict[str, str], data: bytes, line: int, why: str
) -> None:
    assert sh("minion-queue fill 1..3", user_env).returncode == 0
    Path(".env").write_bytes(data)
    run = sh("minionize echo", user_env)
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    assert run.stderr.splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith(f"minionize: error: .env line {line}: {why}"), run.stderr
    for command in ("minion-status --no-queue", "minion-queue status"):
        other = sh(command, user_env)  # every command reads .env the same way
        assert other.returncode == 2 and f".env line {line}: {why}" in other.stderr
    Path(".env").unlink()
    assert queue_status(user_env)["todo"] == 3  # nothing taken


#: File names whose {} part reads as JSON: each is its own param, the string it is.
NAMES = ["[1, 2]", "[1,2]", '{"a": 1}', "7", '"7"', "a b", "null"]


def _input_files() -> None:
    Path("in").mkdir()
    for name in NAMES:
        Path("in", f"f_{name}.txt").write_text(f"content of {name}\n")


def test_fill_from_files_then_a_sandbox_run_finds_every_file(user_env: dict[str, str]) -> None:
    _input_files()
    fill = sh("minion-queue fill --from-files 'in/f_{}.txt'", user_env)
    assert fill.stdout.strip() == f"sweep queue in sweeps: added {len(NAMES)} params", fill.stderr
    run = sh("minionize --sandbox work --input 'in/f_{}.txt' cat 'f_{}.txt'", user_env)
    assert run.returncode == 0, run.stderr
    assert sorted(run.stdout.splitlines()) == sorted(f"content of {name}" for name in NAMES)
    status = queue_status(user_env)
    assert (status["done"], status["dead"]) == (len(NAMES), 0)


def test_fill_from_files_then_a_template_finds_every_file(user_env: dict[str, str]) -> None:
    _input_files()
    assert sh("minion-queue fill --from-files 'in/f_{}.txt'", user_env).returncode == 0
    run = sh("minionize cat 'in/f_{}.txt'", user_env)
    assert run.returncode == 0, run.stderr
    assert sorted(run.stdout.splitlines()) == sorted(f"content of {name}" for name in NAMES)
    assert queue_status(user_env)["done"] == len(NAMES)
