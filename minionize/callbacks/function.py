"""The function callback: run a Python callable per param, in a worker thread.

An exception is a failed attempt (retried, then dead-lettered). A Python thread cannot be
killed: when a task times out, or the minion stops, the function keeps running until it
returns; its attempt counts as failed (timeout) or its param is given back (stop), and a
minion that stops does not wait for it longer than the grace period.
"""

from __future__ import annotations

import functools
import traceback
from typing import Any, Callable, Generic, Optional, TypeVar

from .base import Callback, Outcome, Result, Task

R = TypeVar("R")


class FuncCallback(Callback):
    """``FuncCallback(f)`` calls ``f(param)`` for each param."""

    can_stop = False

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func

    def run(self, task: Task) -> Result:
        try:
            self.func(task.param)
        except Exception as exc:
            lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
            return Result(
                Outcome.FAILED,
                reason=f"{type(exc).__name__}: {exc}",
                stderr_tail="".join(lines[-6:]).rstrip(),
            )
        return Result(Outcome.OK)

    def describe(self, param: Any) -> str:
        name = getattr(self.func, "__qualname__", repr(self.func))
        return f"{name}({param!r})"


class MinionTask(Generic[R]):
    """A function made into a minion by :func:`task`: still callable as before, plus
    :meth:`run` to serve params from the configured queue."""

    def __init__(self, func: Callable[[Any], R], **overrides: Any) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.overrides = overrides

    def __call__(self, param: Any) -> R:
        return self.func(param)

    def callback(self) -> FuncCallback:
        return FuncCallback(self.func)

    def run(self, **overrides: Any) -> int:
        """Run a minion that calls this function for each param; returns the exit code.

        Settings come from the environment and ``.env``; keyword arguments
        (``concurrency=4``, ``max_attempts=5``, ...) override them.
        """
        from ..minion import minionizer

        return minionizer(self.callback(), **{**self.overrides, **overrides}).run()


def task(
    func: Optional[Callable[[Any], R]] = None, **overrides: Any
) -> Any:
    """Decorator: ``@minionize.task`` or ``@minionize.task(max_attempts=5)``.

    >>> @task
    ... def simulate(param): ...
    >>> simulate.run()            # doctest: +SKIP
    """
    if func is None:
        return lambda f: MinionTask(f, **overrides)
    return MinionTask(func, **overrides)
