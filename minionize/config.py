"""Settings, read once from the environment (and a ``.env`` file) and validated at start.

The real environment wins over ``.env``. Each engine, callback and reporter reads its own
variables through :class:`Env`, whose getters raise :class:`ConfigError` with a message
that names the variable and says how to fix it.
"""

from __future__ import annotations

import builtins
import difflib
import io
import logging
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from .durations import DURATION_HINT, parse_duration
from .errors import ConfigError
from .identity import job_scheduler

_Number = TypeVar("_Number", int, float)

log = logging.getLogger("minionize")

#: Every MINION_* variable minionize reads or sets (a unit test greps the package and
#: .env.example so that this list cannot drift). Any other MINION_* name is a typo.
KNOWN_VARIABLES = (
    # the minion (config.py, cli/minion.py)
    "MINION_ENGINE", "MINION_CALLBACK", "MINION_CONCURRENCY", "MINION_MAX_ATTEMPTS",
    "MINION_TASK_TIMEOUT", "MINION_GRACE_PERIOD", "MINION_IDLE_TIMEOUT", "MINION_LEASE",
    "MINION_OUTAGE_TIMEOUT", "MINION_WAIT", "MINION_LOG_DIR", "MINION_TEMPLATE",
    "MINION_SHELL", "MINION_HALT", "MINION_PARAM_STDIN", "MINION_RESULT_MAX_BYTES",
    "MINION_WALLTIME", "MINION_WALLTIME_LEAD", "MINION_EXPECTED_DURATION", "MINION_STOPPED_EXIT",
    # GNU parallel habits (habits.py, cli/parallel_flags.py)
    "MINION_JOBLOG", "MINION_RESULTS", "MINION_TAG", "MINION_KEEP_ORDER", "MINION_DELAY", "MINION_PROGRESS",
    # tasks with files (sandbox.py, cli/sandbox_flags.py); MINION_SANDBOX is also set for
    # each task, to its own sandbox
    "MINION_SANDBOX", "MINION_INPUT", "MINION_SHARED", "MINION_OUTPUT", "MINION_STAGE",
    "MINION_COLLECT", "MINION_COLLECT_LAYOUT", "MINION_KEEP_SANDBOX",
    # set by minionize for each task (seen by a minion started inside a task)
    "MINION_PARAM", "MINION_PARAM_ID", "MINION_ATTEMPT", "MINION_PARAM_FILE",
    # engines
    "MINION_SWEEP_FSYNC", "MINION_SWEEP_LOCK_LEASE", "MINION_SWEEP_TEST_HOLD_LOCK",
    "MINION_REDIS_URL", "MINION_REDIS_STREAM", "MINION_REDIS_GROUP", "MINION_REDIS_DECODER",
    "MINION_DEAD_LETTER_TOPIC",
    # reporters and minion-status
    "MINION_REPORTER", "MINION_HEARTBEAT", "MINION_LOST_AFTER",
    # the docker callback
    "MINION_DOCKER_IMAGE", "MINION_DOCKER_VOLUMES", "MINION_DOCKER_ENV",
    "MINION_DOCKER_NETWORK", "MINION_DOCKER_CPUS", "MINION_DOCKER_MEMORY",
    "MINION_DOCKER_USER", "MINION_DOCKER_PULL", "MINION_DOCKER_INIT",
)
_warned: set[str] = set()


def warn_unknown_variables(values: Mapping[str, str]) -> None:
    """Warn (once per name and process) about each ``MINION_*`` variable that minionize
    does not know, naming the closest known one: a typo must not be silently ignored."""
    for name in sorted(values):
        if not name.startswith("MINION_") or name in KNOWN_VARIABLES or name in _warned:
            continue
        _warned.add(name)
        close = difflib.get_close_matches(name, KNOWN_VARIABLES, n=1)
        hint = f": did you mean {close[0]}?" if close else ""
        log.warning("%s is not a variable minionize knows, it is ignored%s", name, hint)


def forget_warnings() -> None:
    """Warn again about names already warned about (for tests)."""
    _warned.clear()


TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "n", ""})


def load_dotenv_file(path: str | os.PathLike[str] = ".env") -> None:
    """Load ``path`` (default: ``.env`` in the working directory) into ``os.environ``.

    Variables already in the environment are kept: the real environment wins. The file
    must be read exactly, or not at all: a byte that is not UTF-8, a NUL byte or a
    statement python-dotenv cannot parse (an unterminated quote) is a ConfigError naming
    the file and the line, and nothing of the file is loaded.
    """
    if not Path(path).is_file():
        return
    from dotenv import load_dotenv
    load_dotenv(stream=io.StringIO(read_dotenv_text(path)), override=False)


def read_dotenv_text(path: str | os.PathLike[str]) -> str:
    """The text of the ``.env`` file ``path``, checked: ConfigError naming the line of
    a byte that is not UTF-8, of a NUL byte, or of a statement that does not parse."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None
    where = os.fspath(path)
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigError(f"{where} line {_line_of(data, nul)}: a NUL byte: a .env file is text, remove it")
    try:
        text = data.decode("utf-8-sig")  # strict; a byte order mark at the start is fine
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where} line {_line_of(data, exc.start)}: not UTF-8 (byte "
            f"0x{data[exc.start]:02x}): save the file as UTF-8"
        ) from None
    from dotenv.parser import parse_stream

    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            statement = binding.original.string.split("\n", 1)[0].strip()
            raise ConfigError(
                f"{where} line {binding.original.line}: cannot parse {statement[:60]!r}: "
                "write NAME=value, a value with spaces or quotes in matching quotes"
            )
    return text


def _line_of(data: bytes, offset: int) -> int:
    """The number of the line that holds the byte at ``offset`` (from 1)."""
    return data.count(b"\n", 0, offset) + 1


class Env:
    """Typed, validating access to a mapping of environment variables."""

    def __init__(self, values: Mapping[builtins.str, builtins.str] | None = None) -> None:
        self.values: Mapping[builtins.str, builtins.str] = os.environ if values is None else values

    def raw(self, name: builtins.str) -> builtins.str | None:
        value = self.values.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def str(self, name: builtins.str, default: builtins.str | None = None) -> builtins.str | None:
        value = self.raw(name)
        return default if value is None else value

    def required(self, name: builtins.str, hint: builtins.str) -> builtins.str:
        value = self.raw(name)
        if value is None:
            raise ConfigError(f"{name} is not set: {hint}")
        return value

    def int(self, name: builtins.str, default: int | None, minimum: int | None = None) -> int | None:
        value = self.raw(name)
        if value is None:
            return default
        number = _convert(name, value, int, "is not an integer: set it to a whole number")
        if minimum is not None and number < minimum:
            raise ConfigError(f"{name}={value!r} is too small: set it to {minimum} or more")
        return number

    def seconds(self, name: builtins.str, default: float | None, allow_zero: bool = False) -> float | None:
        """A duration in seconds (``30``, ``1.5s``, ``2h30m``: see
        :func:`minionize.durations.parse_duration`); ``none``/``0`` (unless
        ``allow_zero``) means no limit."""
        value = self.raw(name)
        if value is None or value.lower() in ("none", "inf", "never"):
            return default if value is None else None
        number = _convert(name, value, parse_duration, f"is not a duration: {DURATION_HINT}")
        if number < 0 or number != number:
            raise ConfigError(f"{name}={value!r} must be a positive number of seconds")
        if number == 0 and not allow_zero:
            return None
        return number

    def positive_seconds(self, name: builtins.str, default: float) -> float:
        """A duration in seconds that must be positive: unset is ``default``; ``0``,
        ``none`` or a negative number is an error (never silently the default)."""
        value = self.raw(name)
        if value is None:
            return default
        hint = f"must be a positive duration: {DURATION_HINT}"
        number = _convert(name, value, parse_duration, hint)
        if not number > 0 or number == float("inf"):
            raise ConfigError(f"{name}={value!r} {hint}")
        return number

    def bool(self, name: builtins.str, default: bool = False) -> bool:
        value = self.values.get(name)
        if value is None:
            return default
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ConfigError(f"{name}={value!r} is not a yes/no value: set it to 1 or 0")

    def choice(
        self, name: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]
    ) -> builtins.str:
        value = (self.raw(name) or default).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
        return builtins.str(value)


def _convert(name: str, value: str, convert: Callable[[str], _Number], hint: str) -> _Number:
    """``convert(value)``; a value it refuses is a ConfigError ``NAME='value' hint``."""
    try:
        return convert(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} {hint}") from None


#: The variables giving the CPUs a job of each scheduler was granted, in the order read.
CPU_VARIABLES = {"slurm": ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"), "sge": ("NSLOTS",),
                 "pbs": ("NCPUS",), "lsf": ("LSB_DJOB_NUMPROC",)}


def available_cpus(env: Mapping[str, str] | None = None) -> int:
    """The CPUs this process may use, as the batch scheduler or the kernel says.

    In a job (:func:`~minionize.identity.job_scheduler`), its scheduler's :data:`CPU_VARIABLES`
    or the lines naming this host in ``OAR_NODEFILE``; outside any, SLURM's then OAR's. Else
    the CPU affinity mask, capped by the cgroup's CPU quota (a pod's or container's CPU limit).
    """
    env = os.environ if env is None else env
    scheduler = job_scheduler(env)
    for name in CPU_VARIABLES.get(scheduler or "slurm", ()):
        value = env.get(name, "").strip()
        if value.isdecimal() and int(value) > 0:
            return int(value)
    nodefile = env.get("OAR_NODEFILE", "").strip() if scheduler in ("", "oar") else ""
    if nodefile:
        try:
            lines = Path(nodefile).read_text().split()
        except OSError:
            lines = []
        names = {socket.gethostname(), socket.getfqdn(), socket.gethostname().split(".")[0]}
        mine = sum(1 for line in lines if line in names or line.split(".")[0] in names)
        if mine > 0:
            return mine
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, quota)) if quota is not None else cpus


def cgroup_cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """The CPUs a cgroup v2 quota allows (``cpu.max`` = ``"QUOTA PERIOD"``), rounded
    up; None when there is no quota (``max``) or no such file (cgroup v1, not Linux)."""
    try:
        with open(path) as handle:
            fields = handle.read().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return -(-quota // period)


def parse_concurrency(value: str | None, env: Mapping[str, str] | None = None) -> int:
    if value is None or value.strip() == "":
        return 1
    word = value.strip().lower()
    if word == "auto":
        return available_cpus(env)
    try:
        number = int(word)
    except ValueError:
        raise ConfigError(
            f"MINION_CONCURRENCY={value!r} is not a number: set it to a positive integer or auto"
        ) from None
    if number < 1:
        raise ConfigError(f"MINION_CONCURRENCY={value!r} must be at least 1 (or auto)")
    return number


def read_task_timeout(env: Env) -> tuple[Optional[float], Optional[float]]:
    """``MINION_TASK_TIMEOUT``: (seconds, None), or (None, percent) for ``X%``."""
    name = "MINION_TASK_TIMEOUT"
    value = env.raw(name)
    if value is None or not value.endswith("%"):
        return env.seconds(name, None), None
    try:
        percent = float(value[:-1])
    except ValueError:
        percent = math.nan
    if not 0 < percent < math.inf:
        raise ConfigError(
            f"{name}={value!r} is not a percentage: set it to e.g. 200% (of the median run "
            "time of the tasks done so far) or to a duration (30, 2m)"
        )
    return None, percent


def read_walltime(env: Env) -> Optional[float]:
    """``MINION_WALLTIME``: a duration, ``inf`` for ``none``, None when unset."""
    unset, seconds = env.raw("MINION_WALLTIME") is None, env.seconds("MINION_WALLTIME", None)
    return None if unset else math.inf if seconds is None else seconds


@dataclass(frozen=True)
class Settings:
    """What the minion loop needs, validated. Engine-specific variables stay in ``env``."""

    engine: str = "sweep"
    reporter: str = "null"
    callback: str = "process"
    concurrency: int = 1
    max_attempts: int = 3
    task_timeout: Optional[float] = None
    grace_period: float = 10.0
    idle_timeout: Optional[float] = None
    lease: float = 300.0
    outage_timeout: float = 60.0
    wait: bool = False
    log_dir: Optional[str] = None
    dry: bool = False
    shell: bool = False
    template: Optional[str] = None
    #: When the allocation ends, in seconds from the start: None for the scheduler's
    #: end (if any), ``inf`` for none at all (``MINION_WALLTIME=none``).
    walltime: Optional[float] = None
    #: Seconds to be done before the allocation's end (an early signal's lead), and how
    #: long a task takes, given by the user (None: learned from the tasks run).
    walltime_lead: float = 0.0
    expected_duration: Optional[float] = None
    #: The exit code of a minion a signal stopped (0: as a drained queue's).
    stopped_exit: int = 0
    env: Env = field(default_factory=Env)

    @classmethod
    def from_env(
        cls, values: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Read and validate every common variable. ``overrides`` (from flags) win."""
        env = Env(values)
        warn_unknown_variables(env.values)
        concurrency_raw = overrides.pop("concurrency", None)
        if concurrency_raw is None:
            concurrency_raw = env.raw("MINION_CONCURRENCY")
        settings = cls(
            engine=env.str("MINION_ENGINE", "sweep") or "sweep",
            reporter=env.str("MINION_REPORTER", "null") or "null",
            callback=env.choice("MINION_CALLBACK", "process", ("process", "docker")),
            concurrency=parse_concurrency(
                None if concurrency_raw is None else str(concurrency_raw), env.values
            ),
            max_attempts=env.int("MINION_MAX_ATTEMPTS", 3, minimum=1) or 3,
            task_timeout=read_task_timeout(env)[0],  # X%: see minionize.minion.timeouts
            grace_period=_not_none(env.seconds("MINION_GRACE_PERIOD", 10.0, allow_zero=True), 10.0),
            idle_timeout=env.seconds("MINION_IDLE_TIMEOUT", None),
            lease=env.positive_seconds("MINION_LEASE", 300.0),
            outage_timeout=env.positive_seconds("MINION_OUTAGE_TIMEOUT", 60.0),
            wait=env.bool("MINION_WAIT"),
            log_dir=env.str("MINION_LOG_DIR"),
            dry=env.bool("DRY"),
            shell=env.bool("MINION_SHELL"),
            template=env.str("MINION_TEMPLATE"),
            walltime=read_walltime(env),
            walltime_lead=_not_none(env.seconds("MINION_WALLTIME_LEAD", 0.0, allow_zero=True), 0.0),
            expected_duration=_positive_or_none(env, "MINION_EXPECTED_DURATION"),
            stopped_exit=env.int("MINION_STOPPED_EXIT", 0, minimum=0) or 0,
            env=env,
        )
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides:
            settings = replace(settings, **overrides)
        settings.check()
        return settings

    def check(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("MINION_CONCURRENCY must be at least 1 (or auto)")
        if self.max_attempts < 1:
            raise ConfigError("MINION_MAX_ATTEMPTS must be at least 1")
        if self.task_timeout is not None and self.task_timeout <= 0:
            raise ConfigError("MINION_TASK_TIMEOUT must be a positive number of seconds")
        if self.lease <= 0:
            raise ConfigError("MINION_LEASE must be a positive number of seconds")
        if self.stopped_exit > 255:
            raise ConfigError("MINION_STOPPED_EXIT must be an exit code, 0 to 255 (e.g. 75)")


def _positive_or_none(env: Env, name: str) -> Optional[float]:
    return None if env.raw(name) is None else env.positive_seconds(name, 0.0)


def _not_none(value: float | None, default: float) -> float:
    return default if value is None else value
