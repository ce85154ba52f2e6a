"""The flags of ``minionize`` each set the variable their help names: one table per
group drives both the parser and the variables (minionize.cli._options)."""

from __future__ import annotations

import pytest

from minionize.cli import minion, parallel_flags, sandbox_flags
from minionize.cli._options import Option, apply, table
from minionize.config import KNOWN_VARIABLES

GROUPS = {
    "queue": minion.QUEUE_OPTIONS,
    "running": minion.RUNNING_OPTIONS,
    "reporting": minion.REPORTING_OPTIONS,
    "parallel": parallel_flags.OPTIONS,
    "sandbox": sandbox_flags.OPTIONS,
}
OPTIONS = [option for options in GROUPS.values() for option in options]


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.flags)
def test_a_flag_sets_a_known_variable_that_its_help_names(option: Option) -> None:
    variable = option.variable
    if variable is None:  # --arg-file: the file engine, set by parallel_flags.apply
        return
    assert variable in KNOWN_VARIABLES or not variable.startswith("MINION_")
    assert variable in option.help


def test_the_flags_given_set_their_variables_and_only_those() -> None:
    args = minion.build_parser().parse_args([
        "-e", "sweep", "-j", "4", "--shell", "--retries", "5", "-0", "--tag",
        "--input", "in_{}.txt", "--input", "b_{}.txt", "--stage", "copy", "echo",
    ])
    values: dict[str, str] = {}
    apply(args, values, OPTIONS)
    assert values == {
        "MINION_ENGINE": "sweep",
        "MINION_CONCURRENCY": "4",
        "MINION_SHELL": "1",
        "MINION_MAX_ATTEMPTS": "5",
        "FILE_SEPARATOR": "nul",
        "MINION_TAG": "1",
        "MINION_INPUT": "in_{}.txt\nb_{}.txt",
        "MINION_STAGE": "copy",
    }


def test_a_table_row_without_help_is_refused() -> None:
    with pytest.raises(ValueError, match="--orphan"):
        table("--orphan N -> MINION_X\n")
