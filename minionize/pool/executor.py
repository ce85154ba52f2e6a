"""``Executor``: a ``concurrent.futures.Executor`` on worker minions (local, or a SLURM,
OAR or Grid Engine array job), with the backends and options of
:class:`~minionize.pool.Pool` (``backend=``, ``submit_args=``).

``submit`` returns a ``concurrent.futures.Future``, which works with
``concurrent.futures.wait`` and ``as_completed``; the calls are handed to the workers by
the executor's thread (:mod:`.dispatch`). At the end of the program, as with the standard
library's executors, the calls submitted are finished before the program ends, and
``submit`` raises ``RuntimeError`` from then on.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, Optional, TypeVar

from ..engines.kit import optional_import
from .backends import PoolWorker
from .dispatch import Dispatcher
from .options import check, initializer_of, max_tasks, start_method, submit_options
from .run import Run

T = TypeVar("T")

#: The dispatchers of the executors still running, finished at the end of the program.
_running: weakref.WeakSet[Dispatcher] = weakref.WeakSet()
_exiting = threading.Event()


def _at_exit() -> None:
    """Before the program's ``atexit`` functions (as ``concurrent.futures`` does): no
    more calls, and those submitted run to their end."""
    _exiting.set()
    for dispatcher in list(_running):
        dispatcher.shutdown(wait=True, cancel_futures=False)


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]


class Executor(concurrent.futures.Executor):
    """``with Executor(4) as ex: ex.submit(f, x).result()``: worker minions as a
    ``concurrent.futures`` executor.

    ``max_workers`` (default: the CPUs of this machine), ``mp_context``, ``initializer``,
    ``initargs`` and ``max_tasks_per_child`` are ``ProcessPoolExecutor``'s; the others are
    :class:`~minionize.pool.Pool`'s (``max_tasks_per_worker`` is ``max_tasks_per_child``):
    see ``docs/pool.md``.
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        mp_context: Any = None,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: Optional[int] = None,
        max_tasks_per_worker: Optional[int] = None,
        backend: str = "local",
        workdir: Optional[str] = None,
        keep_workdir: bool = False,
        max_attempts: int = 3,
        lease: float = 60.0,
        max_replacements: Optional[int] = None,
        sbatch_args: Sequence[str] = (),
        submit_args: Sequence[str] = (),
        start: Optional[str] = None,
    ) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        optional_import("cloudpickle", "minionize.pool", "pool")
        self._max_workers = (os.cpu_count() or 1) if max_workers is None else max_workers
        tasks = max_tasks(max_tasks_per_child=max_tasks_per_child, max_tasks_per_worker=max_tasks_per_worker)
        method = start_method(start, mp_context)
        check(initializer, backend, method)
        options = submit_options(backend, submit_args, sbatch_args)
        run = Run(self._max_workers, backend=backend, workdir=workdir, keep_workdir=keep_workdir,
                  max_attempts=max_attempts, lease=lease, max_tasks_per_worker=tasks,
                  max_replacements=max_replacements, submit_args=options, start=method,
                  progress=False, initializer=initializer_of(initializer, initargs), stdout=True)
        self.rundir = run.rundir
        # One call more than workers out: a worker that finishes finds the next one.
        self._dispatcher = Dispatcher(run, self._max_workers + 1)
        _running.add(self._dispatcher)
        # An executor nobody holds any more finishes its calls, then stops its workers.
        weakref.finalize(self, self._dispatcher.shutdown, False, False)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """``fn(*args, **kwargs)``, computed by a worker: its future."""
        if _exiting.is_set():
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._dispatcher.submit((future, fn, args, kwargs))
        return future

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[T]:
        """``map(fn, *iterables)``, computed by the workers, ``chunksize`` items per call;
        ``timeout``: seconds from this call for the whole, then ``TimeoutError``."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        chunks = super().map(_Chunk(fn), _chunked(iterables, chunksize), timeout=timeout)
        return _flattened(chunks)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; ``cancel_futures``: cancel those no worker started; ``wait``:
        until the others are over and the workers stopped (else they stop after them)."""
        self._dispatcher.shutdown(wait, cancel_futures)

    @property
    def _broken(self) -> Any:
        """Why the executor is broken, or False (the standard library's executors' flag)."""
        return self._dispatcher.broken or False

    @property
    def workers(self) -> list[PoolWorker]:
        """One object per worker minion (``.pid``, ``.host``, ``.state``)."""
        return list(self._dispatcher.run.backend.poll())

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.Executor max_workers={self._max_workers}>"


class _Chunk:
    """``fn`` over a chunk of argument tuples: one call of ``map(chunksize=n)``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, chunk: list[tuple[Any, ...]]) -> list[Any]:
        return [self.fn(*args) for args in chunk]


def _chunked(iterables: tuple[Iterable[Any], ...], size: int) -> Iterator[list[tuple[Any, ...]]]:
    together = zip(*iterables)
    while True:
        chunk = [args for _, args in zip(range(size), together)]
        if not chunk:
            return
        yield chunk


def _flattened(chunks: Iterator[list[Any]]) -> Iterator[Any]:
    """The items of each chunk in turn, none kept once handed on."""
    for chunk in chunks:
        chunk.reverse()
        while chunk:
            yield chunk.pop()
