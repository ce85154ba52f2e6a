"""``minion-queue``: fill and inspect the queue the minions read, for any engine.

The same configuration as ``minionize`` (environment, ``.env``, ``--engine``), then one
of the engine's administration calls. An engine that cannot do one says so (exit 2).
Here: the command line, filling and the commands that change the queue; what the
commands that read it print is :mod:`.queue_views`.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Optional

from ._logging import show_library_warnings
from ._options import new_parser
from .queue_views import show_list, show_results, show_status

DESCRIPTION = """\
Fill and inspect the queue that minions read: the engine and its settings come from
the environment and .env, as for minionize (MINION_ENGINE, EXECO_PERSISTENCE_DIR, ...).
Safe to run while minions are working.
"""

EPILOG = """\
examples:
  minion-queue fill 0..9 && minionize echo hello     # hello 0 ... hello 9
  seq 100 | minion-queue fill -                      # one param per line
  minion-queue fill --file params.jsonl              # one JSON value per line
  minion-queue fill --product a=1,2,3 b=x,y          # 6 mappings {"a": 1, "b": "x"} ...
  minion-queue fill --from-files 'in/data_{}.txt'    # "7" for in/data_7.txt, ...
  minion-queue status --json
  minion-queue list dead                             # dead letters, with their reason
  minion-queue list in-flight                        # who holds what, until when
  minion-queue results --json                        # what each function task returned
  minion-queue requeue-dead                          # give them another try
  minion-queue requeue-dead 3f2a9c01d4e5             # only this one (ids: list dead)
  minion-queue reset --yes                           # every param todo again
  minion-queue repair                                # rebuild a damaged sweep queue

exit codes: 0 done, 2 usage, configuration or queue error.
"""



def _common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "-e", "--engine", metavar="NAME", default=default,
        help="the queue's engine: sweep (default), redis, pubsub, pulsar, ... (MINION_ENGINE)",
    )
    parser.add_argument(
        "--queue-dir", "--dir", dest="queue_dir", metavar="DIR", default=default,
        help="the sweep queue's directory (EXECO_PERSISTENCE_DIR, default: sweeps)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("minion-queue", DESCRIPTION, EPILOG)
    _common_options(parser, None)
    # The same options after the command name (minion-queue status --dir q) too.
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fill = commands.add_parser(
        "fill", parents=[common], help="add params (a param already present is not added twice)",
        description="Add params to the queue. A param already in the queue (done or not) "
        "is not added again, so filling twice is harmless.",
        epilog="examples: fill 0..9 | fill 3 7 '{\"x\": 1}' | seq 10 | fill - | "
        "fill --file params.jsonl | fill --product a=1,2,3 b=x,y | "
        "fill --from-files 'in/inputfile_{}.txt'",
    )
    fill.add_argument(
        "items", nargs="*", metavar="ITEM",
        help="START..END (integers, both included), - (one param per line on stdin), or a "
        "value; a value or line is the text exactly as typed (a string), except a number, "
        "true, false or null whose JSON is that very text (5, 0.5) and a JSON list or "
        "mapping: 3.10, 1e3, ' 5' and NaN stay strings",
    )
    fill.add_argument(
        "--file", "-f", action="append", default=[], metavar="PATH",
        help="a JSON-lines file: one JSON value per line (repeatable); NaN, Infinity and "
        "numbers a JSON number cannot keep exactly (1e400) are errors naming the line",
    )
    fill.add_argument(
        "--from-files", action="append", default=[], metavar="PATTERN",
        help="the {} part of every file matching PATTERN, e.g. 'in/inputfile_{}.txt' "
        "(repeatable; a string, always: inputfile_7.txt gives \"7\", so that {} gives the "
        "file name back)",
    )
    fill.add_argument(
        "--product", "-p", nargs="+", metavar="NAME=V1,V2", action="append", default=[],
        help="the cartesian product of value lists, as mappings ({\"a\": 1, \"b\": \"x\"}, "
        "...); values are read like ITEM values (1 is a number, 1.0e0 a string)",
    )

    status = commands.add_parser(
        "status", parents=[common], help="counters: todo, in flight, expired, done, dead",
        description="The queue's counters: todo, in flight, expired leases, done, dead.",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")

    requeue = commands.add_parser(
        "requeue-dead", parents=[common], help="make dead-lettered params todo again",
        description="Make every dead-lettered param todo again (or those of the ids "
        "given, as `list dead` shows them), with fresh attempts.",
    )
    requeue.add_argument("ids", nargs="*", metavar="ID", help="only these dead letters")
    reset = commands.add_parser(
        "reset", parents=[common], help="make every param todo again (asks for --yes)",
        description="Make every param todo again, done, dead-lettered and in flight alike, "
        "with fresh attempts (a task still running may still finish its param). The "
        "params stay; only --yes does it.",
    )
    reset.add_argument("--yes", action="store_true", help="do it (nothing is asked)")
    commands.add_parser(
        "reset-expired", parents=[common],
        help="put params whose lease expired back now",
        description="Put every param whose lease expired back in the queue now (minions "
        "also do this by themselves when they look for work).",
    )
    commands.add_parser(
        "repair", parents=[common], help="rebuild a damaged sweep queue from what is left",
        description="Rebuild a sweep queue whose files disagree: every param in params.jsonl "
        "is kept; done or dead only where a record proves it, the rest todo. Says what it did.",
    )
    listing = commands.add_parser(
        "list", parents=[common], help="list todo, in-flight, done or dead-lettered params",
        description="List the params todo, in flight (with who holds each and until when), "
        "done, or dead-lettered (with their reason), in queue order.",
    )
    listing.add_argument("kind", choices=("todo", "in-flight", "done", "dead"),
                         help="which params to list")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--limit", type=int, metavar="N", help="at most N params")
    results = commands.add_parser(
        "results", parents=[common], help="what each done param's task returned, in queue order",
        description="Every done param, in the order it was filled in, with the value its "
        "task returned (a Python function's return value, stored as JSON with its ack; "
        "null when it returned nothing). The sweep, file and redis engines keep results.",
        epilog="text: the param and its result as JSON, separated by a tab, a line each; "
        "--json: one object per line with id, param and result.",
    )
    results.add_argument("--json", action="store_true", help="one JSON object per line")
    results.add_argument("--limit", type=int, metavar="N", help="at most N params")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    show_library_warnings("minion-queue")
    from ..errors import EXIT_USAGE, MinionizeError

    try:
        return run(args)
    except MinionizeError as exc:
        print(f"minion-queue: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # minion-queue list done | head
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except OSError as exc:  # what an engine did not translate: still one line
        print(f"minion-queue: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace) -> int:
    from ..config import Settings, load_dotenv_file
    from ..engines import load_engine

    load_dotenv_file()
    values = dict(os.environ)
    if args.engine:
        values["MINION_ENGINE"] = args.engine
    if args.queue_dir:
        values["EXECO_PERSISTENCE_DIR"] = args.queue_dir
    settings = Settings.from_env(values)
    engine = load_engine(settings)
    if args.command == "fill":
        # What to fill is read, or refused, before a queue is made for it.
        args.params = _params(args)
        engine.create()
    # A damaged queue fails to open; the file engine's journals are read, not opened.
    if args.command != "repair" and getattr(engine, "admin_opens", True):
        engine.open()
    try:
        return COMMANDS[args.command](engine, args)
    finally:
        engine.close()


def _fill(engine: Any, args: argparse.Namespace) -> int:
    from ..errors import EngineError
    from ..status.text import count_text

    try:
        added, skipped = engine.fill(args.params)
    except OSError as exc:  # a full disk (ENOSPC), a read-only or vanished directory
        raise EngineError(
            f"{engine.describe()}: cannot write: {exc.strerror or exc}; fix that and fill "
            "again (params already in the queue are not added twice)"
        ) from None
    note = f" ({skipped} already present)" if skipped else ""
    print(f"{engine.describe()}: added {count_text(added, 'param')}{note}")
    return 0


def _params(args: argparse.Namespace) -> Iterator[Any]:
    """The params to fill; what can be refused before any is read is refused now
    (nothing to fill, a --product or --from-files that gives none), its first param
    read too (a bad first item): a fill refused leaves no queue behind."""
    from ..errors import ConfigError
    from .params_input import params_from_files, parse_product

    if not (args.items or args.file or args.product or args.from_files):
        raise ConfigError(
            "nothing to fill: give a range (0..9), values, - for stdin, --file PATH, "
            "--from-files PATTERN or --product NAME=V1,V2 ..."
        )
    for specs in args.product:
        parse_product(specs)
    names = [params_from_files(pattern) for pattern in args.from_files]
    params = _read_params(args, names)
    try:
        first = next(params)
    except StopIteration:
        return iter(())
    return itertools.chain([first], params)


def _read_params(args: argparse.Namespace, names: list[list[str]]) -> Iterator[Any]:
    from ..errors import ConfigError
    from .params_input import params_from_items, product, read_json_lines

    yield from params_from_items(args.items, _stdin())
    for path in args.file:
        try:
            # Bytes that are not UTF-8 are kept (surrogateescape) so that the error names
            # their line; only \n ends a line.
            with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as stream:
                yield from read_json_lines(stream, path)
        except OSError as exc:
            raise ConfigError(f"cannot read --file {path}: {exc.strerror}") from None
    for specs in args.product:
        yield from product(specs)
    for found in names:
        yield from found


def _stdin() -> Optional[Iterator[str]]:
    """Standard input as text lines that end only at \\n, bytes that are not UTF-8
    kept (surrogateescape) so that the error names their line; None without stdin."""
    if sys.stdin is None:
        return None
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream put in place of stdin (tests)
        return iter(sys.stdin)
    return iter(io.TextIOWrapper(buffer, encoding="utf-8", errors="surrogateescape",
                                 newline="\n"))


def _said(engine: Any, what: str) -> int:
    """Say what a verb did to the queue; its exit code."""
    print(f"{engine.describe()}: {what}")
    return 0


def _requeue_dead(engine: Any, args: argparse.Namespace) -> int:
    from ..errors import UnsupportedOperation

    if args.ids:
        if not hasattr(engine, "requeue_dead_ids"):
            raise UnsupportedOperation(
                f"the {engine.name} engine cannot requeue chosen dead letters: "
                "`minion-queue requeue-dead` with no id requeues them all"
            )
        count = engine.requeue_dead_ids(args.ids)
    else:
        count = engine.requeue_dead()
    return _said(engine, f"{count} dead letters made todo again")


def _reset(engine: Any, args: argparse.Namespace) -> int:
    from ..errors import ConfigError, UnsupportedOperation

    if not hasattr(engine, "reset"):
        raise UnsupportedOperation(f"the {engine.name} engine cannot be reset")
    if not args.yes:  # never a question: a script or a batch job has nobody to answer
        counts = engine.status()
        raise ConfigError(
            f"reset makes every param of the {engine.describe()} todo again "
            f"({counts.get('done', 0)} done, {counts.get('dead', 0)} dead letters, "
            f"{counts.get('in_flight', 0)} in flight): give --yes to do it"
        )
    return _said(engine, f"{engine.reset()} params made todo again")


def _reset_expired(engine: Any, args: argparse.Namespace) -> int:
    return _said(engine, f"{engine.reset_expired()} expired leases put back")


def _repair(engine: Any, args: argparse.Namespace) -> int:
    from ..errors import EngineError

    if not hasattr(engine, "repair"):
        raise EngineError(f"{engine.describe()}: repair is for the sweep queue only")
    for line in engine.repair():
        print(f"{engine.describe()}: {line}")
    return 0


COMMANDS = {
    "fill": _fill,
    "status": show_status,
    "requeue-dead": _requeue_dead,
    "reset": _reset,
    "reset-expired": _reset_expired,
    "list": show_list,
    "results": show_results,
    "repair": _repair,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
