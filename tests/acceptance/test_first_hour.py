"""A newcomer's first hour (issue 22): the commands as a user types them, in an empty
directory, and what they must see."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import sh

ROOT = Path(__file__).resolve().parents[2]


# -- item 1: `cp .env.example .env` runs -----------------------------------------------------
def test_the_env_example_runs_as_copied(user_env: dict[str, str], tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = sh("minion-queue fill 0..2 && minionize echo hi", user_env)
    assert result.returncode == 0, result.stderr
    fill, *hello = result.stdout.splitlines()
    assert fill == "sweep queue in sweeps: added 3 params"
    assert sorted(hello) == ["hi 0", "hi 1", "hi 2"]


# -- item 5: a template without a placeholder would drop the param -------------------------
def test_a_template_without_placeholder_is_refused_and_consumes_nothing(
    user_env: dict[str, str],
) -> None:
    result = sh("minion-queue fill 0..1 && minionize --template 'echo hi'", user_env)
    assert result.returncode == 2, result.stderr
    assert result.stdout.splitlines() == ["sweep queue in sweeps: added 2 params"]
    [line] = result.stderr.splitlines()
    assert "no placeholder" in line and "{}" in line and "without --template" in line
    assert "todo 2" in " ".join(sh("minion-queue status", user_env).stdout.split())
    # The param given on standard input is a use of it: no error.
    assert sh("echo 5 | minionize -a - --param-stdin --template 'cat'", user_env).stdout == "5\n"
    # {} in the template places it.
    result = sh("minionize --template 'echo hi {}'", user_env)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["hi 0", "hi 1"]


# -- item 6: flag mistakes ---------------------------------------------------------------------
def test_a_misspelt_flag_gets_one_line_with_the_closest_flag(user_env: dict[str, str]) -> None:
    result = sh("minionize --concurency 2 echo", user_env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "minionize: error: unrecognized arguments: --concurency: did you mean --concurrency? "
        "(minionize --help lists the options)"
    ]
    result = sh("minion-queue fill --prodcut a=1,2", user_env)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "did you mean --product?" in line


@pytest.mark.parametrize("command, expected", [
    ("minionize -j 0 echo", "minionize: error: -j/--concurrency 0: must be at least 1 (or auto)"),
    ("minionize --timeout 1x echo",
     "minionize: error: -t/--timeout 1x: is not a duration"),
    ("MINION_CONCURRENCY=0 minionize echo",
     "minionize: error: MINION_CONCURRENCY='0' must be at least 1 (or auto)"),
])
def test_an_error_names_the_flag_the_user_typed(
    user_env: dict[str, str], command: str, expected: str
) -> None:
    sh("minion-queue fill 1", user_env)
    result = sh(command, user_env)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(expected), line


def test_gnu_parallel_durations_are_accepted(user_env: dict[str, str]) -> None:
    result = sh("minion-queue fill 1 2 && minionize --timeout 2h30m --delay 0.1s "
                "--grace-period 1m -j 1 echo", user_env)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines())[:2] == ["1", "2"]
    result = sh("echo 30 | minionize -a - --timeout 0.01m --max-attempts 1 sleep", user_env)
    assert result.returncode == 1
    assert "timed out after 0.6s" in result.stderr


def test_a_percent_timeout_applies_once_three_tasks_are_done(user_env: dict[str, str]) -> None:
    user_env["MINION_GRACE_PERIOD"] = "1"
    # Until three tasks are done there is no median: the long first task runs to its end.
    result = sh("printf '1.5\\n0.1\\n0.1\\n0.1\\n' | minionize -a - --timeout 200% "
                "--max-attempts 1 sleep", user_env)
    assert result.returncode == 0, result.stderr
    # Then a task running past twice their median is stopped, and the attempt fails.
    started = time.monotonic()
    result = sh("printf '0.2\\n0.2\\n0.2\\n60\\n0.2\\n' | minionize -a - --timeout 200% "
                "--max-attempts 1 sleep", user_env)
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 30
    assert "timed out after" in result.stderr and "200% of the median" in result.stderr
    assert result.stderr.count("dead letter") >= 1


# -- item 7: ./a.out --------------------------------------------------------------------------
def test_a_program_in_the_working_directory_gets_did_you_mean(user_env: dict[str, str]) -> None:
    Path("a.out").write_text("#!/bin/sh\necho ran $1\n")
    Path("a.out").chmod(0o755)
    result = sh("minion-queue fill 1 && minionize a.out", user_env)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "command not found: 'a.out'" in line and "did you mean ./a.out?" in line
    result = sh("minionize ./a.out", user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ran 1\n"


# -- item 14: --version ------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["minionize", "minion-queue", "minion-status", "mtop"])
def test_every_command_tells_its_version(user_env: dict[str, str], command: str) -> None:
    from minionize._version import __version__

    result = sh(f"{command} --version", user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{command} {__version__}\n"
