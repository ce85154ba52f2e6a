"""``minionize [options] PROGRAM [ARGS...]``: run a program once per param of a queue."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from ._logging import show_library_warnings
from ._options import Option, add_group, apply, given_flags, name_flags, new_parser, table

if TYPE_CHECKING:
    from ..callbacks.process.callback import ProcessCallback
    from ..config import Settings
    from ..parallel.habits import OutputFiles

DESCRIPTION = """\
Run PROGRAM once per param taken from a queue, acknowledging each success back to
the queue. Failures are retried, then dead-lettered; nothing is lost on a crash.

A scalar param is appended to the command as one argument, a list as several; {} in an
argument is replaced by the param (like xargs -I{}); a mapping needs --template. No shell
is involved unless --shell is given, and even then a param is never shell text: values
are passed as positional parameters of sh -c (-n shows the real command). The program
also gets MINION_PARAM (the param as JSON; above 64 KiB, the file MINION_PARAM_FILE
holds it instead), MINION_PARAM_ID and MINION_ATTEMPT.

A command line that cannot run the params (a malformed placeholder such as {a.b}, or, on
the first param, a missing key, a mapping without --template, a string where a mapping is
needed) stops the minion with exit code 2 and consumes nothing. Once a param has filled
the command, a param that cannot is dead-lettered at once, without retries.

Settings come from the environment and from .env in the working directory (the
environment wins); each option below overrides the variable it names. Every variable is
listed, with its default, in .env.example. A DURATION is seconds (30, 0.5) or numbers with
units s, m, h, d as in GNU parallel (1.5s, 2m, 2h30m).
"""

EPILOG = """\
examples:
  minion-queue fill 0..9 && minionize echo hello        # sweep queue in ./sweeps
  seq 10 | minionize -j 4 ./a.out     # params from stdin (with no ./sweeps queue; -a - always)
  find . -name '*.log' -print0 | minionize -0 gzip      # NUL-separated, like xargs -0
  # one JSON mapping per line of params.jsonl, e.g. {"x": 1, "y": "a b"}:
  minionize --file params.jsonl --decoder json --template 'a.out --x {x} --y {y}'
  minionize --docker my-image --timeout 600             # one container per param

exit codes: 0 every param taken succeeded (or was given back on a stop),
            1 at least one param was dead-lettered, 2 usage or configuration error
            (nothing consumed), 3 --halt stopped the minion, MINION_STOPPED_EXIT
            (if set) a signal stopped it before the queue was drained,
            130/143 a second SIGINT/SIGTERM stopped the minion at once.
"""

#: The options of ``minionize``'s own groups, each with the variable it overrides.
QUEUE_OPTIONS = table("""
-e --engine NAME -> MINION_ENGINE
    where params come from: sweep (default), file, redis, pubsub, pulsar (MINION_ENGINE)
--queue-dir DIR -> EXECO_PERSISTENCE_DIR
    the sweep queue's directory (EXECO_PERSISTENCE_DIR, default: sweeps)
--file PATH -> FILE_PATH
    the file engine's input, one param per line, as text (--decoder json: a JSON value per
    line); - for stdin; implies --engine file unless --engine is given (FILE_PATH)
--decoder {json,text}
    how the engine in use reads a param: text (the default: the line or message as it
    is) or json (a JSON value, e.g. a mapping for --template); sets that engine's
    variable: FILE_DECODER, GOOGLE_DECODER, PULSAR_DECODER, MINION_REDIS_DECODER
--wait switch -> MINION_WAIT
    on a drained sweep queue, stay until params held by other minions are done or come
    back (MINION_WAIT=1)
--idle-timeout DURATION -> MINION_IDLE_TIMEOUT
    end after this long without a param, on an endless queue (MINION_IDLE_TIMEOUT)
--lease DURATION -> MINION_LEASE
    how long a claimed param stays reserved without a heartbeat (MINION_LEASE, default
    300)
""")
RUNNING_OPTIONS = table("""
-j --concurrency N -> MINION_CONCURRENCY
    tasks at once in this minion; auto = the CPUs this job may use (MINION_CONCURRENCY,
    default 1)
--max-attempts N -> MINION_MAX_ATTEMPTS
    attempts before a param is dead-lettered (MINION_MAX_ATTEMPTS, default 3)
-t --timeout DURATION -> MINION_TASK_TIMEOUT
    stop a task's whole process group after this long (30, 1.5s, 2m, 2h30m), or after X%%
    of the median run time of the tasks done so far (200%%; none before 3 are done); the
    attempt fails (MINION_TASK_TIMEOUT, default none)
--grace-period DURATION -> MINION_GRACE_PERIOD
    between SIGTERM and SIGKILL when tasks are stopped (MINION_GRACE_PERIOD, default 10)
--walltime DURATION -> MINION_WALLTIME
    when this minion's allocation ends, from its start; unset: the scheduler's own end
    (SLURM, OAR, Grid Engine h_rt), none: no end. Near it the minion takes no param its
    tasks cannot finish, and exits 0 (MINION_WALLTIME)
--walltime-lead DURATION -> MINION_WALLTIME_LEAD
    be done this long before the allocation's end: the lead of the scheduler's early
    signal (sbatch --signal=B:TERM@90, oarsub --checkpoint 120), so that no task is
    started that the signal would cut (MINION_WALLTIME_LEAD, default 0)
--expected-duration DURATION -> MINION_EXPECTED_DURATION
    how long a task takes, for --walltime; default: the 90th percentile of the queue's
    last 50 run times (those its minions reported in REPORTER_JSON_DIRECTORY, then this
    minion's), plus 25%%, and any task is started until one has finished
    (MINION_EXPECTED_DURATION)
--template TEMPLATE -> MINION_TEMPLATE
    the command, with {name} filled from a mapping param and {} with the whole param, e.g.
    'a.out --x {x} {y}'; {{ and }} are literal braces (MINION_TEMPLATE)
--shell switch -> MINION_SHELL
    run the command with /bin/sh -c (pipes, globs...); values from the param are passed as
    its positional parameters, never as shell text (MINION_SHELL=1)
--docker IMAGE -> MINION_DOCKER_IMAGE
    run each param in a container of IMAGE; the command, if any, runs in it
    (MINION_CALLBACK=docker, MINION_DOCKER_IMAGE)
--param-stdin switch -> MINION_PARAM_STDIN
    give the param on the task's standard input (its text and a newline) instead of as
    arguments: for params of any size (MINION_PARAM_STDIN=1)
--halt RULE -> MINION_HALT
    stop after failed attempts, like GNU parallel: now,fail=N or soon,fail=N (N failed
    attempts), now|soon,fail=X%% (X%% of them); soon lets running tasks finish, now stops
    them and gives their params back; exit 3 (MINION_HALT)
--log-dir DIR -> MINION_LOG_DIR
    save each task's stdout and stderr in DIR/<id>.<attempt>.out|err (MINION_LOG_DIR)
-n --dry-run switch -> DRY
    print what would run, consume nothing (DRY=1)
""")
REPORTING_OPTIONS = table("""
--reporter NAME -> MINION_REPORTER
    null (default), stdout, or json (read by minion-status) (MINION_REPORTER)
""")
#: Exit code of a command whose reader went away (``| head``), as ``seq`` gets it.
EXIT_BROKEN_PIPE = 128 + 13


def all_options() -> tuple[Option, ...]:
    """Every option of ``minionize`` that sets a variable, in the order they are applied."""
    from . import parallel_flags, sandbox_flags

    return (QUEUE_OPTIONS + RUNNING_OPTIONS + REPORTING_OPTIONS + parallel_flags.OPTIONS
            + sandbox_flags.OPTIONS)


def build_parser() -> argparse.ArgumentParser:
    from . import parallel_flags, sandbox_flags

    parser = new_parser("minionize", DESCRIPTION, EPILOG)
    for title, options in (("queue", QUEUE_OPTIONS), ("running", RUNNING_OPTIONS),
                           ("reporting", REPORTING_OPTIONS)):
        add_group(parser, title, options)
    parallel_flags.add_arguments(parser)
    sandbox_flags.add_arguments(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="PROGRAM [ARGS...]",
                        help="the program to run for each param, and its arguments")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--version"]:  # answer before importing anything
        from .._version import __version__

        print(f"minionize {__version__}")
        return 0
    parser = build_parser()
    args = parser.parse_args(args_list)
    show_library_warnings("minionize")
    from ..errors import MinionizeError

    try:
        return run(args)
    except MinionizeError as exc:
        given = given_flags(args, all_options())
        if args.decoder and getattr(args, "decoder_variable", None):
            given[args.decoder_variable] = "--decoder"
        message = name_flags(str(exc), given)
        sys.stderr.write(f"minionize: error: {message}\n")  # one line, one write
        sys.stderr.flush()
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (``minionize -n ... | head -1``): end quietly, like seq.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def run(args: argparse.Namespace) -> int:
    from ..callbacks.base import Callback
    from ..config import Settings, load_dotenv_file
    from ..errors import ConfigError

    load_dotenv_file()
    values = dict(os.environ)
    apply(args, values, QUEUE_OPTIONS + RUNNING_OPTIONS + REPORTING_OPTIONS)
    if args.file is not None and args.engine is None:  # a flag wins over a default engine
        values["MINION_ENGINE"] = "file"
    if args.docker:
        values["MINION_CALLBACK"] = "docker"
    from . import parallel_flags

    parallel_flags.apply(args, values)
    ignored = choose_input(args, values)
    if ignored:
        sys.stderr.write(f"minionize: warning: {ignored}\n")
    decoder_variable = engine_decoder(args, values)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    settings = Settings.from_env(values)

    from ..parallel.habits import Habits
    from . import sandbox_flags

    habits = Habits.from_settings(settings)
    files = habits.output_files()
    callback: Callback
    if settings.callback == "docker":
        from ..callbacks.docker.callback import DockerCallback

        image = settings.env.str("MINION_DOCKER_IMAGE")
        callback = DockerCallback.from_settings(settings, image, command)
        if settings.env.bool("MINION_PARAM_STDIN"):
            raise ConfigError(
                "MINION_PARAM_STDIN=1 (--param-stdin) works with the process callback, not "
                "with --docker: read the param from MINION_PARAM in the container"
            )
        sandbox_flags.apply(args, values, processes=False)
    else:
        if not command and not settings.template:
            raise ConfigError(
                "no program given: minionize [options] PROGRAM [ARGS...] "
                "(or set MINION_TEMPLATE / --template)"
            )
        if command and settings.template:
            raise ConfigError(
                "give the program either on the command line or in --template/MINION_TEMPLATE, "
                "not both"
            )
        callback = process_callback(args, values, settings, command, decoder_variable, files)

    from ..minion.run import Minion

    engine, reporter, hooks = habits.wire(callback, settings, files)
    return Minion(callback, engine=engine, reporter=reporter, settings=settings, hooks=hooks,
                  start_interval=habits.start_interval).run()


def process_callback(args: argparse.Namespace, values: dict[str, str], settings: Settings,
                     command: list[str], decoder_variable: Optional[str],
                     files: Optional[OutputFiles]) -> ProcessCallback:
    """The process callback of the command line, with its sandboxes (``--sandbox``) and
    its output files (``--results``, ``--tag``, ``--keep-order``)."""
    from ..callbacks.process.callback import ProcessCallback
    from ..errors import ConfigError
    from . import sandbox_flags

    param_stdin = settings.env.bool("MINION_PARAM_STDIN")
    sandboxes = sandbox_flags.apply(args, values)
    try:
        callback = ProcessCallback(
            command,
            template=settings.template,
            shell=settings.shell,
            log_dir=settings.log_dir,
            param_stdin=param_stdin,
            sandboxes=sandboxes,
            output_paths=files.paths if files is not None else None,
            output_root=files.root if files is not None else None,
            decoder_hint=decoder_hint(settings.engine, decoder_variable),
        )
    except ValueError as exc:
        raise ConfigError(f"MINION_TEMPLATE: {exc}") from None
    if settings.template and not param_stdin and not callback.builder.has_placeholder():
        raise ConfigError(
            f"{callback.builder.source} has no placeholder, so every task would run "
            "without its param: put {} where the param goes ({name} for a key of a "
            "mapping param), or give the command without --template to have the param "
            "appended"
        )
    return callback


#: The variable of each engine that ``--decoder`` sets (a plugin engine has none).
DECODER_VARIABLES = {"file": "FILE_DECODER", "pubsub": "GOOGLE_DECODER",
                     "google": "GOOGLE_DECODER", "pulsar": "PULSAR_DECODER",
                     "redis": "MINION_REDIS_DECODER"}
#: The engines whose params are JSON values already: no decoder.
JSON_ENGINES = ("sweep", "execo")


def engine_name(values: dict[str, str]) -> str:
    return (values.get("MINION_ENGINE") or "sweep").strip().lower()


def engine_decoder(args: argparse.Namespace, values: dict[str, str]) -> Optional[str]:
    """Set the decoder variable of the engine in use from ``--decoder`` (json, or text:
    ``identity``); that variable (None: the engine has none)."""
    from ..errors import ConfigError

    engine = engine_name(values)
    variable = DECODER_VARIABLES.get(engine)
    args.decoder_variable = variable
    if args.decoder is None:
        return variable
    if variable is None:
        what = ("keeps each param as the JSON value it was filled with"
                if engine in JSON_ENGINES else "has no decoder that --decoder could set")
        raise ConfigError(
            f"--decoder {args.decoder}: the {engine} engine {what}; --decoder is for the "
            f"engines that read text: {', '.join(sorted(set(DECODER_VARIABLES) - {'google'}))}"
        )
    values[variable] = "json" if args.decoder == "json" else "identity"
    return variable


def decoder_hint(engine: str, variable: Optional[str]) -> str:
    """What to do when a string param meets ``{name}``, for the engine in use."""
    from ..callbacks.command.builder import DECODER_HINT

    if variable is not None:
        return f"to read each param as JSON, add --decoder json ({variable}=json)"
    if engine.strip().lower() in JSON_ENGINES:
        return ("the queue holds it as a string: fill it with mappings "
                "(minion-queue fill '{\"x\": 1}', or --product x=1,2)")
    return DECODER_HINT


def choose_input(args: argparse.Namespace, values: dict[str, str]) -> Optional[str]:
    """Where params come from when no engine is chosen (no ``MINION_ENGINE``, no
    ``--engine``, ``--file`` or ``-a``), as xargs takes them: standard input, when it is a
    pipe or a file and no sweep queue is there, or when ``-0`` is given (``values`` then
    name the file engine on standard input). Returns the warning to show when standard
    input is a pipe or a file but the sweep queue there is used instead (None: none)."""
    if values.get("MINION_ENGINE"):
        return None
    if args.null:  # NUL-separated records: only standard input can be meant
        values.update(MINION_ENGINE="file", FILE_PATH="-")
        return None
    if not stdin_is_input():
        return None
    from ..engines.sweep.engine import DEFAULT_DIRECTORY

    directory = values.get("EXECO_PERSISTENCE_DIR") or DEFAULT_DIRECTORY
    if not os.path.isdir(directory):
        values.update(MINION_ENGINE="file", FILE_PATH="-")
        return None
    return (f"standard input is ignored: params come from the sweep queue in {directory!r} "
            "(to read them from standard input, give -a -)")


def stdin_is_input() -> bool:
    """Whether standard input is a pipe or a regular file: what a user pipes or
    redirects in. A terminal, a batch job's /dev/null (a character device), a socket or
    a closed descriptor are not input."""
    import stat

    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
