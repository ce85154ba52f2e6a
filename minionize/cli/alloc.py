"""``minion-alloc``: keep just enough minion jobs on SLURM, OAR or Grid Engine for a queue.

The command line, the queue and scheduler it is built from, the lock, and the lines it
says (stderr, and ``minion-alloc.log`` in the report directory); what it decides is
:mod:`minionize.alloc`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from ._logging import show_library_warnings
from ._options import add_group, apply, duration, new_parser, table

DESCRIPTION = """\
Submit minion jobs (arrays) for a queue as its backlog asks, within your bounds, on a
login node: live minions are counted from their reports, pending jobs from one scheduler
query a poll. It exits once the queue is drained and its minions finished. Stateless:
started again, it finds its jobs by name; a second copy on the same queue leaves.
The queue comes from the environment and .env, as for minionize (MINION_ENGINE,
EXECO_PERSISTENCE_DIR, ...).
"""

EPILOG = """\
examples:
  minion-queue fill 0..999
  minion-alloc --max-minions 20 examples/slurm/minions.sbatch ./a.out
  minion-alloc --max-minions 50 --tasks-per-minion 20 --submit-option=--partition=short \\
      minions.sbatch ./a.out
  minion-alloc --scheduler sge --max-minions 10 minions.sge ./a.out
  minion-alloc --scheduler oar --max-minions 10 examples/oar/minions.oar ./a.out
  minion-alloc --dry-run --max-minions 20 minions.sbatch ./a.out   # what it would submit
  minion-alloc --forever --min-minions 1 --max-minions 8 minions.sbatch ./serve   # redis

exit codes: 0 drained (or another copy runs), 2 usage or configuration error,
3 stopped: jobs in a row ended without starting a task (the message says why).
"""

SCHEDULERS = ("slurm", "sge", "oar")
#: The command on PATH that names each scheduler, in the order they are looked for.
SUBMIT_COMMANDS = (("slurm", "sbatch"), ("sge", "qsub"), ("oar", "oarsub"))

QUEUE_OPTIONS = table("""
-e --engine NAME -> MINION_ENGINE
    the queue's engine (MINION_ENGINE, default sweep)
--queue-dir --dir DIR -> EXECO_PERSISTENCE_DIR
    the sweep queue's directory (EXECO_PERSISTENCE_DIR, default sweeps)
--report-dir DIR -> REPORTER_JSON_DIRECTORY
    where the minions report (REPORTER_JSON_DIRECTORY, default minion-report); the
    jobs' output goes to DIR/jobs
""")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def natural(text: str) -> int:
    return 0 if text.strip() == "0" else positive(text)


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("minion-alloc", DESCRIPTION, EPILOG)
    parser.add_argument("script", metavar="SCRIPT",
                        help="the batch script each job runs (examples/slurm/minions.sbatch)")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG",
                        help="the script's arguments (the command each param runs)")
    where = add_group(parser, "queue and scheduler", QUEUE_OPTIONS)
    where.add_argument("-s", "--scheduler", choices=SCHEDULERS,
                       help="slurm, sge or oar (default: the one whose sbatch, qsub or oarsub is "
                       "on PATH)")
    where.add_argument("--name", metavar="NAME",
                       help="the jobs' name, by which it finds them again (default: minions- "
                       "and a hash of the queue)")
    where.add_argument("--submit-option", action="append", default=[], metavar="OPT",
                       help="an option for sbatch, qsub or oarsub, repeatable "
                       "(--submit-option=--partition=short)")
    bounds = parser.add_argument_group("how many minions")
    bounds.add_argument("--max-minions", type=positive, required=True, metavar="N",
                        help="at most N minions alive or pending")
    bounds.add_argument("--min-minions", type=natural, default=0, metavar="N",
                        help="at least N while there is work (always, with --forever)")
    bounds.add_argument("--tasks-per-minion", type=positive, default=1, metavar="N",
                        help="a minion per N params of the backlog (default 1)")
    bounds.add_argument("--time-per-minion", type=duration, metavar="DURATION",
                        help="once the minions' throughput is known: a minion per DURATION "
                        "of work in the backlog (2h, 30m)")
    bounds.add_argument("--forever", action="store_true",
                        help="never exit: an endless queue (Redis, Pub/Sub)")
    bounds.add_argument("--max-broken", type=positive, default=3, metavar="N",
                        help="stop after N jobs in a row that end without starting a task "
                        "(default 3)")
    pace = parser.add_argument_group("pace")
    pace.add_argument("--interval", type=duration, default=30.0, metavar="DURATION",
                      help="between two looks, each at most one scheduler query (default 30s)")
    pace.add_argument("--dry-run", action="store_true",
                      help="look once, say what it would submit and why, submit nothing")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.min_minions > args.max_minions:
        parser.error("--min-minions is larger than --max-minions")
    if args.interval <= 0:
        parser.error("--interval must be more than 0")
    show_library_warnings("minion-alloc")
    from ..errors import MinionizeError

    try:
        return run(args)
    except KeyboardInterrupt:  # tmux's ^C: the jobs stay, a new minion-alloc finds them
        return 130
    except MinionizeError as exc:
        print(f"minion-alloc: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _values(args: argparse.Namespace) -> dict[str, str]:
    """The environment and .env, with the variables the queue flags set."""
    from ..config import load_dotenv_file

    load_dotenv_file()
    values = dict(os.environ)
    apply(args, values, QUEUE_OPTIONS)
    return values


def _scheduler_name(args: argparse.Namespace) -> str:
    from ..errors import ConfigError

    if args.scheduler:
        return str(args.scheduler)
    for name, command in SUBMIT_COMMANDS:
        if shutil.which(command):
            return name
    raise ConfigError("none of sbatch, qsub or oarsub is on PATH: give --scheduler slurm, "
                      "sge or oar on a login node of the cluster")


def run(args: argparse.Namespace) -> int:
    from ..alloc import (
        Allocator,
        Bounds,
        GridEngine,
        LockHeld,
        Oar,
        Plan,
        Slurm,
        Submission,
        hold_lock,
    )
    from ..config import Settings
    from ..engines import load_engine
    from ..errors import ConfigError
    from ..reporters.queue_ref import queue_ref, ref_label

    values = _values(args)
    settings = Settings.from_env(values)
    ref = queue_ref(settings.engine, values)
    report_dir = os.path.abspath(values.get("REPORTER_JSON_DIRECTORY") or "minion-report")
    output_dir = os.path.join(report_dir, "jobs")
    name = args.name or "minions-" + hashlib.sha1(ref_label(ref).encode()).hexdigest()[:8]
    if not os.path.isfile(args.script):
        raise ConfigError(f"no batch script {args.script}")
    env = {key: value for key, value in ref["variables"].items() if value}
    env.update(MINION_REPORTER="json", REPORTER_JSON_DIRECTORY=report_dir)
    submission = Submission(os.path.abspath(args.script), tuple(args.args), 0, name,
                            output_dir, tuple(args.submit_option), env, _tag(args))
    kind = _scheduler_name(args)
    scheduler: Any = (Slurm() if kind == "slurm" else Oar(output_dir) if kind == "oar"
                      else GridEngine(output_dir))
    bounds = Bounds(args.max_minions, args.min_minions, args.tasks_per_minion,
                    args.time_per_minion, args.forever, args.max_broken)
    engine = load_engine(settings)
    engine.open()  # a missing queue is refused before anything is made for it
    os.makedirs(output_dir, exist_ok=True)
    say = _sayer(None if args.dry_run else os.path.join(report_dir, "minion-alloc.log"))
    allocator = Allocator(scheduler, engine, Plan(submission, report_dir, ref_label(ref)), bounds,
                          args.interval, say, dry_run=args.dry_run)
    say(f"{ref_label(ref)}: jobs named {name} on {scheduler.name}, reports in {report_dir}")
    try:
        if args.dry_run:
            return allocator.run()
        try:
            with hold_lock(_lock_dir(ref, report_dir), name):
                return allocator.run()
        except LockHeld as held:
            say(f"{held}: this one leaves")
            return 0
    finally:
        engine.close()


def _tag(args: argparse.Namespace) -> str:
    """What the jobs run, in 10 hex digits: the script's content, its arguments, the
    scheduler's options (a fixed script is a new start for the broken-job count)."""
    digest = hashlib.sha1()
    with open(args.script, "rb") as script:
        digest.update(script.read())
    digest.update("\0".join([*args.args, "--", *args.submit_option]).encode(errors="replace"))
    return digest.hexdigest()[:10]


def _lock_dir(ref: dict[str, Any], report_dir: str) -> str:
    """The queue's directory for the sweep and file engines, else the reports'."""
    location = str(ref.get("location", ""))
    if ref.get("engine") == "sweep":
        return location
    if ref.get("engine") == "file" and location != "-":
        return os.path.dirname(location) or "."
    return report_dir


def _sayer(log_path: Optional[str]) -> Callable[[str], None]:
    """Say a line on stderr, stamped, and append it to ``log_path``."""
    def say(line: str) -> None:
        text = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} minion-alloc: {line}"
        print(text, file=sys.stderr, flush=True)
        if log_path:
            try:
                with open(log_path, "a") as log:
                    log.write(text + "\n")
            except OSError:
                pass
    return say


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
