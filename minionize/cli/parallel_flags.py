"""The flags of xargs and GNU parallel that ``minionize`` accepts (see the README's
table "For GNU parallel and xargs users"): each sets a variable, as every flag does."""

from __future__ import annotations

import argparse
from collections.abc import MutableMapping

from ._options import add_group, table
from ._options import apply as apply_options

#: The flags, each with the variable it sets (--arg-file: the file engine, see apply).
OPTIONS = table("""
-a --arg-file FILE
    params from FILE, one per line: the file engine (MINION_ENGINE=file, FILE_PATH)
-0 --null switch -> FILE_SEPARATOR=nul
    params end with a NUL byte, not a newline (FILE_SEPARATOR=nul)
--retries N -> MINION_MAX_ATTEMPTS
    attempts before a param is dead-lettered: --max-attempts (MINION_MAX_ATTEMPTS)
--joblog FILE -> MINION_JOBLOG
    append a line per attempt to FILE, in GNU parallel's joblog format; many minions may
    share it (MINION_JOBLOG)
--results DIR -> MINION_RESULTS
    save each param's output in DIR/<id>/param, <attempt>.out, .err, .exit
    (MINION_RESULTS)
--tag switch -> MINION_TAG
    print a task's output when it ends, each line after the param and a tab (MINION_TAG=1)
-k --keep-order switch -> MINION_KEEP_ORDER
    print outputs in the order this minion took the params (MINION_KEEP_ORDER=1)
--delay SECONDS -> MINION_DELAY
    at least this long between two task starts of this minion (MINION_DELAY)
""")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The group of GNU parallel / xargs flags."""
    group = add_group(parser, "as in GNU parallel and xargs", OPTIONS)
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

    apply_options(args, values, OPTIONS)
    if args.progress:
        values["MINION_PROGRESS"] = args.progress
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
