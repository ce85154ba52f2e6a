"""``@task``: a Python function made into a minion, still callable as before.

The decorator wraps the function in a :class:`MinionTask`, whose :meth:`~MinionTask.run`
builds the minion (:func:`minionize.minion.run.minionizer`) over a
:class:`~minionize.callbacks.function.callback.FuncCallback` of it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Generic, Optional, TypeVar

from ..callbacks.function.callback import FuncCallback
from .run import minionizer

R = TypeVar("R")

__all__ = ["MinionTask", "task"]


class MinionTask(Generic[R]):
    """A function made into a minion by :func:`task`: still callable as before, plus
    :meth:`run` to serve params from the configured queue."""

    def __init__(self, func: Callable[[Any], R], **overrides: Any) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.max_tasks_per_worker: Optional[int] = overrides.pop("max_tasks_per_worker", None)
        self.overrides = overrides

    def __call__(self, param: Any) -> R:
        return self.func(param)

    def callback(self) -> FuncCallback:
        return FuncCallback(self.func, max_tasks_per_worker=self.max_tasks_per_worker)

    def run(self, **overrides: Any) -> int:
        """Run a minion that calls this function for each param; returns the exit code.

        Settings come from the environment and ``.env``; keyword arguments
        (``concurrency=4``, ``max_attempts=5``, ...) override them.
        """
        return minionizer(self.callback(), **{**self.overrides, **overrides}).run()


def task(
    func: Optional[Callable[[Any], R]] = None, **overrides: Any
) -> Any:
    """Decorator: ``@minionize.task`` or ``@minionize.task(max_attempts=5)``.

    ``max_tasks_per_worker=N`` recycles the function's process every N params.

    >>> @task
    ... def simulate(param): ...
    >>> simulate.run()            # doctest: +SKIP
    """
    if func is None:
        return lambda f: MinionTask(f, **overrides)
    return MinionTask(func, **overrides)
