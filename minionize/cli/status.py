"""``minion-status [DIR] [--json] [--watch]`` and ``mtop``: what the minions did and do.

DIR is the JSON reporter's directory (default: ``REPORTER_JSON_DIRECTORY``, else
``minion-report``). The queue's own counters come from the configured engine
(``MINION_ENGINE`` ...) when it can tell them; they give the progress and the ETA.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from ..config import Env, load_dotenv_file
from ..errors import MinionizeError
from ..report_format import DEFAULT_DIRECTORY
from ..status import query_queue, read_status
from ..status.text import format_status
from ._logging import show_library_warnings
from ._options import duration, new_parser


def build_parser(prog: str, watch: bool) -> argparse.ArgumentParser:
    parser = new_parser(
        prog,
        "Live view of the minions' reports (q quits)."
        if watch
        else "Totals, rate, ETA, minions and last errors from the minions' reports.",
        raw=False,
    )
    parser.add_argument(
        "directory",
        nargs="?",
        metavar="DIR",
        help="the report directory (default: REPORTER_JSON_DIRECTORY, else minion-report)",
    )
    if not watch:
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument(
            "--watch", action="store_true", help="a live view refreshed every second (mtop)"
        )
    parser.add_argument(
        "--lost-after",
        type=duration,
        metavar="SECONDS",
        help="silence after which a minion is lost (default: MINION_LOST_AFTER, else three "
        "heartbeat periods plus 5 s)",
    )
    parser.add_argument(
        "--no-queue",
        action="store_true",
        help="do not ask the configured engine for its counters",
    )
    # Seconds between two refreshes of the live view (tests shorten it).
    parser.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """``minion-status``."""
    return _run(argv, "minion-status", watch=False)


def mtop_main(argv: Optional[list[str]] = None) -> int:
    """``mtop``: ``minion-status --watch``."""
    return _run(argv, "mtop", watch=True)


def _run(argv: Optional[list[str]], prog: str, watch: bool) -> int:
    args = build_parser(prog, watch).parse_args(argv)
    watch = watch or args.watch
    if not watch:  # mtop draws the whole screen: a stray line would tear it
        show_library_warnings(prog)
    try:
        load_dotenv_file()
        env = Env()
        directory = args.directory or env.str("REPORTER_JSON_DIRECTORY") or DEFAULT_DIRECTORY
        lost_after = args.lost_after
        if lost_after is None:
            lost_after = env.seconds("MINION_LOST_AFTER", None)
        if watch:
            if getattr(args, "json", False):
                print(f"{prog}: error: --json and --watch do not go together", file=sys.stderr)
                return 2
            from ..status.tui import watch as run_watch

            return run_watch(
                directory,
                lost_after=lost_after,
                ask_queue=not args.no_queue,
                interval=args.interval,
            )
        if args.no_queue:
            queue, note = None, "not asked (--no-queue)"
        else:
            queue, note = query_queue()
        status = read_status(directory, lost_after=lost_after, queue=queue, queue_note=note)
        if args.json:
            print(json.dumps(status.to_json(), default=repr))
        else:
            sys.stdout.write(format_status(status))
        return 0
    except MinionizeError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
