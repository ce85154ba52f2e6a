"""Flag mistakes are one line that names the flag (issue 22, item 6)."""

from __future__ import annotations

import pytest

from minionize.cli import minion as minion_cli
from minionize.cli._options import name_flags, suggest


def test_a_misspelt_long_flag_names_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    parser = minion_cli.build_parser()
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--concurency=2", "echo"])
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "did you mean --concurrency?" in line
    assert suggest(["-x", "--zzzzzzzz"], ["--concurrency"]) == ""


def test_a_misspelt_choice_names_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        minion_cli.build_parser().parse_args(["--stage", "cpy", "echo"])
    assert "did you mean copy?" in capsys.readouterr().err


def given(*argv: str) -> dict[str, str]:
    args = minion_cli.build_parser().parse_args([*argv, "echo"])
    return minion_cli.given_flags(args, minion_cli.all_options())


def test_a_value_set_by_a_flag_is_shown_as_the_flag() -> None:
    flags = given("-j", "0", "--retries", "2", "--log-dir", "a b")
    assert flags == {"MINION_CONCURRENCY": "-j/--concurrency", "MINION_MAX_ATTEMPTS": "--retries",
                     "MINION_LOG_DIR": "--log-dir"}
    assert name_flags("MINION_CONCURRENCY='0' must be at least 1", flags) == (
        "-j/--concurrency 0: must be at least 1")
    assert name_flags("MINION_LOG_DIR='a b': cannot write", flags) == "--log-dir 'a b': cannot write"
    assert name_flags('MINION_LOG_DIR="it\'s" is bad', flags) == "--log-dir 'it'\"'\"'s': is bad"


def test_a_variable_not_set_by_a_flag_keeps_its_name() -> None:
    flags = given("--stage", "copy")
    assert name_flags("MINION_STAGE works in a sandbox: give --sandbox DIR (MINION_SANDBOX) too",
                      flags) == "--stage works in a sandbox: give --sandbox DIR (MINION_SANDBOX) too"
    message = "MINION_CONCURRENCY='0' must be at least 1; MINION_STAGE_X='1'"
    assert name_flags(message, flags) == message
