"""``minion-status [DIR] [--json] [--watch]`` and ``mtop``: what the minions did and do.

DIR is the JSON reporter's directory (default: ``REPORTER_JSON_DIRECTORY``, else
``minion-report``). The queue's own counters come from the queue the reports name (or
``--queue-dir``, or the configured engine for reports that name none) when it can tell
them; they give the progress, the ETA and what lost minions still hold. Reports of
several queues are shown per queue.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional

from ..config import Env, load_dotenv_file
from ..errors import MinionizeError
from ..reporters.format import DEFAULT_DIRECTORY
from ..status.queue import QueueGroup, reported_queue, status_by_queue
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
        "--queue-dir",
        dest="queue_dir",
        metavar="QUEUE_DIR",
        help="ask the sweep queue in QUEUE_DIR for its counters (default: the queue each "
        "report names, else the configured one: EXECO_PERSISTENCE_DIR ...)",
    )
    parser.add_argument(
        "--no-queue",
        action="store_true",
        help="do not ask the queue for its counters",
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
        override = None
        if args.queue_dir:
            engine = env.str("MINION_ENGINE", "sweep") or "sweep"
            engine = engine if engine.strip().lower() in ("sweep", "execo") else "sweep"
            override = {"MINION_ENGINE": engine,
                        "EXECO_PERSISTENCE_DIR": os.path.abspath(args.queue_dir)}
        if watch:
            if getattr(args, "json", False):
                print(f"{prog}: error: --json and --watch do not go together", file=sys.stderr)
                return 2
            from ..status.tui import watch as run_watch

            # mtop asks the queue of this process's settings: the one named here.
            os.environ.update(override or reported_queue(directory) or {})

            return run_watch(
                directory,
                lost_after=lost_after,
                ask_queue=not args.no_queue,
                interval=args.interval,
            )
        status, groups = status_by_queue(
            directory, lost_after=lost_after, ask=not args.no_queue, override=override
        )
        if args.json:
            print(json.dumps(_json(status, groups), default=repr))
        else:
            sys.stdout.write(_text(status, groups))
        return 0
    except MinionizeError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


def _json(status: Any, groups: list[QueueGroup]) -> dict[str, Any]:
    """The whole, and ``queues``: each queue's runs (the same fields, plus ``queue_ref``:
    engine, location; null for reports that name no queue)."""
    data: dict[str, Any] = status.to_json()
    data["queues"] = []
    for group in groups:
        part = group.status.to_json()
        part.pop("warnings", None)
        ref = group.ref if isinstance(group.ref, dict) else None
        part["queue_ref"] = ref and {"engine": ref.get("engine"), "location": ref.get("location")}
        part["label"] = group.label
        data["queues"].append(part)
    return data


def _text(status: Any, groups: list[QueueGroup]) -> str:
    """One queue: its status. Several: a line naming them, then each queue's runs."""
    if len(groups) <= 1:
        return format_status(status)
    out = [f"{status.directory}: the runs of {len(groups)} queues, shown per queue", ""]
    for group in groups:
        out.append(f"== {group.label}")
        out.append(format_status(group.status))
    out.extend(f"warning: {w}" for w in status.warnings)
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
