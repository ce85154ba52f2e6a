"""The flags of xargs and GNU parallel that ``minionize`` accepts (see the README's
table "For GNU parallel and xargs users"): each sets a variable, as every flag does."""

from __future__ import annotations

import argparse
from collections.abc import MutableMapping

#: option dest -> the variable it overrides
FLAG_VARIABLES = {
    "joblog": "MINION_JOBLOG",
    "results": "MINION_RESULTS",
    "delay": "MINION_DELAY",
    "retries": "MINION_MAX_ATTEMPTS",
}
SWITCH_VARIABLES = {"tag": "MINION_TAG", "keep_order": "MINION_KEEP_ORDER"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The group of GNU parallel / xargs flags."""
    group = parser.add_argument_group("as in GNU parallel and xargs")
    group.add_argument(
        "-a", "--arg-file", metavar="FILE",
        help="params from FILE, one per line: the file engine (MINION_ENGINE=file, FILE_PATH)",
    )
    group.add_argument(
        "-0", "--null", action="store_true", default=None,
        help="params end with a NUL byte, not a newline (FILE_SEPARATOR=nul)",
    )
    group.add_argument(
        "--retries", metavar="N",
        help="attempts before a param is dead-lettered: --max-attempts (MINION_MAX_ATTEMPTS)",
    )
    group.add_argument(
        "--joblog", metavar="FILE",
        help="append a line per attempt to FILE, in GNU parallel's joblog format; many "
        "minions may share it (MINION_JOBLOG)",
    )
    group.add_argument(
        "--results", metavar="DIR",
        help="save each param's output in DIR/<id>/param, <attempt>.out, .err, .exit "
        "(MINION_RESULTS)",
    )
    group.add_argument(
        "--tag", action="store_true", default=None,
        help="print a task's output when it ends, each line after the param and a tab "
        "(MINION_TAG=1)",
    )
    group.add_argument(
        "-k", "--keep-order", action="store_true", default=None,
        help="print outputs in the order this minion took the params (MINION_KEEP_ORDER=1)",
    )
    group.add_argument(
        "--delay", metavar="SECONDS",
        help="at least this long between two task starts of this minion (MINION_DELAY)",
    )
    for mode, text in (("progress", "done, dead, running and rate"),
                       ("eta", "the same and the ETA"),
                       ("bar", "a bar, the count and the ETA")):
        group.add_argument(
            f"--{mode}", dest="progress", action="store_const", const=mode,
            help=f"draw {text} on stderr, from the queue's counters, when stderr is a "
            f"terminal (MINION_PROGRESS={mode})",
        )


def apply(args: argparse.Namespace, values: MutableMapping[str, str]) -> None:
    """Set the variables of the flags given (raise ConfigError on a contradiction)."""
    from ..errors import ConfigError

    for dest, variable in FLAG_VARIABLES.items():
        value = getattr(args, dest, None)
        if value is not None:
            values[variable] = str(value)
    for dest, variable in SWITCH_VARIABLES.items():
        if getattr(args, dest, None):
            values[variable] = "1"
    if args.progress:
        values["MINION_PROGRESS"] = args.progress
    if args.null:
        values["FILE_SEPARATOR"] = "nul"
    if args.arg_file is not None:
        if args.engine not in (None, "file"):
            raise ConfigError(
                f"--arg-file reads params from a file (the file engine): it cannot be used "
                f"with --engine {args.engine}"
            )
        if args.file is not None:
            raise ConfigError("give either --arg-file or --file, not both")
        values["MINION_ENGINE"] = "file"
        values["FILE_PATH"] = args.arg_file
