"""Typed errors. Library code raises these; only ``minionize.cli`` prints and exits.

Every error that reaches the command line becomes one line naming what is wrong and how
to fix it, and exit code 2 (see :data:`EXIT_USAGE`).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DEAD_LETTERS = 1
EXIT_USAGE = 2
EXIT_HALTED = 3


class MinionizeError(Exception):
    """Base class of every error minionize raises on purpose."""

    exit_code = EXIT_USAGE


class ConfigError(MinionizeError):
    """A setting is missing or has a bad value. The message names the variable and the fix."""


class MissingExtraError(ConfigError):
    """An engine or callback needs an optional dependency that is not installed."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(
            f"{what} needs the Python package {module!r}: pip install 'minionize[{extra}]'"
        )
        self.extra = extra


class EngineError(MinionizeError):
    """The queue cannot be reached, read or written."""


class UnsupportedOperation(EngineError):
    """The engine cannot do this (for example, list the params of a Pub/Sub topic)."""


class CallbackError(MinionizeError):
    """The callback cannot run at all (for example, the Docker engine is unreachable)."""


class CommandLineError(ConfigError):
    """The command line itself cannot run the params of this run (a template that no
    param could fill, a mapping param without ``--template``, a malformed placeholder).

    A callback raises it from ``run`` (or ``to_cmd``); the minion loop then gives the
    param back without counting an attempt, takes nothing new and exits with code 2 and
    this one line: a mistake on the command line never burns the queue.
    """
