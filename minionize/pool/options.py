"""The arguments ``Pool`` and ``Executor`` share: how local workers start, the checks
``multiprocessing`` makes of them, the initializer sent to the workers, and the one
setting that caps a worker's tasks under its several names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

#: ``Pool(backend=...)``: local processes, or the tasks of an array job of a scheduler.
BACKENDS = ("local", "slurm", "oar", "sge")
#: The scheduler's submit command of each cluster backend (``submit_args`` go there).
SUBMIT_COMMANDS = {"slurm": "sbatch", "oar": "oarsub", "sge": "qsub"}


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
    if backend not in BACKENDS:
        names = ", ".join(repr(name) for name in BACKENDS[:-1])
        raise ValueError(f"backend must be {names} or {BACKENDS[-1]!r}, not {backend!r}")
    if start not in ("fork", "exec"):
        raise ValueError(f"start must be 'fork' or 'exec', not {start!r}")


def submit_options(backend: str, submit_args: Sequence[str], sbatch_args: Sequence[str]) -> list[str]:
    """The options added to the scheduler's submit command: ``sbatch_args`` (SLURM's
    own name, kept) then ``submit_args`` (any cluster backend's)."""
    for name, given in (("submit_args", submit_args), ("sbatch_args", sbatch_args)):
        if isinstance(given, (str, bytes)):
            raise TypeError(f"{name} must be a list of strings, one per word, not a string")
    if sbatch_args and backend != "slurm":
        raise ValueError(f"sbatch_args is for backend='slurm': give backend={backend!r} "
                         "its options with submit_args")
    if submit_args and backend not in SUBMIT_COMMANDS:
        raise ValueError(f"submit_args is for the cluster backends ({', '.join(SUBMIT_COMMANDS)}), "
                         f"not {backend!r}")
    return [*sbatch_args, *submit_args]


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
