"""The arguments ``Pool`` and ``Executor`` share: how local workers start, the checks
``multiprocessing`` makes of them, the initializer sent to the workers, and the one
setting that caps a worker's tasks under its several names."""

from __future__ import annotations

from typing import Any, Callable, Optional


def start_method(start: Optional[str], context: Any) -> str:
    """``start``, or what ``context`` says: ``fork`` forks, ``spawn`` and ``forkserver``
    start a fresh interpreter (``exec``)."""
    if start is not None:
        return start
    if context is None:
        return "fork"
    return "fork" if context.get_start_method() == "fork" else "exec"


def check(initializer: Any, backend: str, start: str) -> None:
    """The errors multiprocessing raises for its arguments, and ours."""
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    if backend not in ("local", "slurm"):
        raise ValueError(f"backend must be 'local' or 'slurm', not {backend!r}")
    if start not in ("fork", "exec"):
        raise ValueError(f"start must be 'fork' or 'exec', not {start!r}")


class Initializer:
    """``initializer(*initargs)``, sent to the workers as one callable."""

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.func = func
        self.args = args

    def __call__(self) -> None:
        self.func(*self.args)


def initializer_of(func: Optional[Callable[..., Any]], args: Any) -> Optional[Initializer]:
    return None if func is None else Initializer(func, tuple(args))


def max_tasks(**names: Any) -> Optional[int]:
    """One setting under several names (``maxtasksperchild=``, ``max_tasks_per_worker=``):
    each a positive int or None, and the same when several are given."""
    given = {name: value for name, value in names.items() if value is not None}
    for value in given.values():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{next(iter(names))} must be a positive int or None")
    if len(set(given.values())) > 1:
        raise ValueError(f"{' and '.join(given)} are one setting: give one")
    return next(iter(given.values()), None)
