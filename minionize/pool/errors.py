"""The errors of :mod:`minionize.pool`."""

from __future__ import annotations

import pickle
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from ..errors import MinionizeError

if TYPE_CHECKING:  # typeshed does not list them

    class MaybeEncodingError(Exception):
        exc: str
        value: str

    class RemoteTraceback(Exception):
        """The ``__cause__`` of an exception re-raised in the caller: the worker's traceback."""

        tb: str

        def __init__(self, tb: str) -> None: ...
else:
    from multiprocessing.pool import MaybeEncodingError
    from multiprocessing.pool import RemoteTraceback as RemoteTraceback


class PoolError(MinionizeError):
    """The pool could not run the call: workers could not start, or were lost too often.
    The message names the run directory, kept for a look."""


class PoolTypeError(PoolError, TypeError):
    """The function or an item cannot be pickled, and pickle said so with a TypeError
    (``cannot pickle '_thread.lock' object``): a TypeError too, as with multiprocessing,
    the pickling error as its ``__cause__``."""


class PoolPicklingError(PoolError, pickle.PicklingError):
    """The function or an item cannot be pickled (``pickle.PicklingError``): a
    PicklingError too, as with multiprocessing, the pickling error as its ``__cause__``."""


class RemoteError(PoolError):
    """An item's exception (or return value) could not travel back from the worker:
    the message names its type and text; ``traceback`` is the worker's traceback."""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.traceback))


class PoolEncodingError(RemoteError, MaybeEncodingError):
    """A result (or an exception) that could not be pickled back from the worker:
    ``multiprocessing.pool.MaybeEncodingError`` too, with its ``exc`` (the pickling
    error's repr) and ``value`` (the value's repr)."""

    def __init__(self, message: str, traceback: str = "", exc: str = "", value: str = "") -> None:
        Exception.__init__(self, message)  # not MaybeEncodingError's (exc, value)
        self.traceback = traceback
        self.exc = exc
        self.value = value

    def __str__(self) -> str:
        return str(self.args[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.traceback, self.exc, self.value))


class TaskLost(PoolError):
    """A chunk was lost ``attempts`` times (its worker killed, crashed, or its lease
    expired): ``index`` is its first item, ``reason`` names the signal or the lease."""

    def __init__(self, message: str, *, index: int, attempts: int, reason: str) -> None:
        super().__init__(message)
        self.index = index
        self.attempts = attempts
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        return (_task_lost, (str(self), self.index, self.attempts, self.reason))


def _task_lost(message: str, index: int, attempts: int, reason: str) -> TaskLost:
    return TaskLost(message, index=index, attempts=attempts, reason=reason)


class BrokenPoolError(PoolError, BrokenProcessPool):
    """The executor cannot run anything any more: its workers cannot start (the
    initializer raised) or were all lost. A ``concurrent.futures`` ``BrokenProcessPool``
    (so a ``BrokenExecutor``) too, as ``ProcessPoolExecutor`` raises."""
