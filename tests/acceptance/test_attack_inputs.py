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
