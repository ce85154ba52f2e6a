"""``Pool``: ``multiprocessing.Pool``, on worker minions (local, or a SLURM, OAR or Grid
Engine array job).

Every method, argument and behaviour of ``multiprocessing.Pool``, and minionize's own:
functions sent by value, :class:`TaskLost`, lost workers replaced, ``backend="slurm"``
(``"oar"``, ``"sge"``).
What a call writes and how its chunks come back: :mod:`.run`, :mod:`.collect`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.pool import CLOSE, RUN, TERMINATE
from typing import Any, Callable, Optional, TypeVar

from ..engines.kit import optional_import
from .backends import PoolWorker
from .collect import Call
from .errors import PoolError
from .options import check, initializer_of, max_tasks, start_method, submit_options
from .results import ApplyResult, Callback, IMapIterator, MapResult, drive
from .run import Run, start_run

R = TypeVar("R", bound=ApplyResult)


class Pool:
    """A pool of worker minions: ``with Pool(4) as pool: pool.map(f, items)``.

    ``processes``, ``initializer``, ``initargs``, ``maxtasksperchild`` (also
    ``max_tasks_per_worker``) and ``context`` are multiprocessing's; ``backend``
    (``"local"``, or one array job of ``"slurm"``, ``"oar"`` or ``"sge"``: Grid Engine,
    with ``submit_args`` for its submit command; ``sbatch_args``: SLURM's, kept),
    ``workdir``, ``keep_workdir``,
    ``lease``, ``max_attempts``, ``max_replacements``, ``start`` (``"fork"`` or
    ``"exec"``) and ``progress`` are minionize's: see ``docs/pool.md``.
    """

    def __init__(
        self,
        processes: Optional[int] = None,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: Optional[int] = None,
        context: Any = None,
        *,
        backend: str = "local",
        workdir: Optional[str] = None,
        keep_workdir: bool = False,
        max_attempts: int = 3,
        lease: float = 60.0,
        max_tasks_per_worker: Optional[int] = None,
        max_replacements: Optional[int] = None,
        sbatch_args: Sequence[str] = (),
        submit_args: Sequence[str] = (),
        start: Optional[str] = None,
        progress: bool = False,
    ) -> None:
        self._state = TERMINATE  # until the workers are started (for __del__)
        optional_import("cloudpickle", "minionize.pool", "pool")
        self.processes = (os.cpu_count() or 1) if processes is None else processes
        tasks = max_tasks(maxtasksperchild=maxtasksperchild, max_tasks_per_worker=max_tasks_per_worker)
        method = start_method(start, context)
        if self.processes < 1:
            raise ValueError("Number of processes must be at least 1")
        check(initializer, backend, method)
        options = submit_options(backend, submit_args, sbatch_args)
        init = initializer_of(initializer, initargs)
        self.keep_workdir, self.progress = keep_workdir, progress
        self._run = Run(self.processes, backend=backend, workdir=workdir, keep_workdir=keep_workdir,
                        max_attempts=max_attempts, lease=lease, max_tasks_per_worker=tasks,
                        max_replacements=max_replacements, submit_args=options, start=method,
                        progress=progress, initializer=init)
        self.rundir = self._run.rundir
        # Ends the run once: at terminate or join, when a pool never closed is collected.
        self._finalizer = start_run(self._run, self)
        self._state = RUN

    # -- the multiprocessing.Pool API -------------------------------------------------
    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (),
              kwds: Optional[Mapping[str, Any]] = None) -> Any:
        """``func(*args, **kwds)``, computed by a worker."""
        return self._drive(self._call(func, [(tuple(args), dict(kwds or {}))], 1, apply=True),
                           ApplyResult(1, True))

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (),
                    kwds: Optional[Mapping[str, Any]] = None, callback: Callback = None,
                    error_callback: Callback = None) -> ApplyResult:
        """``apply``, its result to come (an ``AsyncResult``)."""
        call = self._call(func, [(tuple(args), dict(kwds or {}))], 1, apply=True)
        return self._later(call, ApplyResult(1, True, callback, error_callback))

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any],
            chunksize: Optional[int] = None) -> list[Any]:
        """``[func(x) for x in iterable]``, computed by the workers; the first item that
        raised raises, once every item has run."""
        call = self._call(func, iterable, chunksize)
        return self._drive(call, MapResult(call.total or 0))  # type: ignore[no-any-return]

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: Optional[int] = None) -> list[Any]:
        """``[func(*args) for args in iterable]``, computed by the workers."""
        call = self._call(func, iterable, chunksize, star=True)
        return self._drive(call, MapResult(call.total or 0))  # type: ignore[no-any-return]

    def map_async(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                  chunksize: Optional[int] = None, callback: Callback = None,
                  error_callback: Callback = None) -> MapResult:
        """``map``, its result to come (a ``MapResult``)."""
        call = self._call(func, iterable, chunksize)
        return self._later(call, MapResult(call.total or 0, callback, error_callback))

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: Optional[int] = None, callback: Callback = None,
                      error_callback: Callback = None) -> MapResult:
        """``starmap``, its result to come (a ``MapResult``)."""
        call = self._call(func, iterable, chunksize, star=True)
        return self._later(call, MapResult(call.total or 0, callback, error_callback))

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any],
             chunksize: int = 1) -> IMapIterator:
        """The results of ``map``, in order, as they arrive."""
        return self._imap(func, iterable, chunksize, ordered=True)

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                       chunksize: int = 1) -> IMapIterator:
        """The results of ``map``, in the order they arrive."""
        return self._imap(func, iterable, chunksize, ordered=False)

    def close(self) -> None:
        """No more calls: the workers exit once the queue is drained (see :meth:`join`)."""
        if self._state == RUN:
            self._state = CLOSE
            self._run.close()

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait for the workers of a closed pool to finish every call and exit, then
        remove the run directory (unless ``keep_workdir``); ``timeout``: give up after
        that many seconds and stop them."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state == CLOSE and self._finalizer.alive:
            self._run.wait(timeout)
        self._end(False)

    def terminate(self) -> None:
        """Stop every worker now, and remove the run directory (unless ``keep_workdir``)."""
        self._state = TERMINATE
        self._end(False)

    def __enter__(self) -> Pool:
        return self._check_running()

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._state = TERMINATE  # the run directory kept when the pool's error ends the block
        self._end(isinstance(error, PoolError))

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.Pool state={self._state} pool_size={self.processes}>"

    # -- minionize's own ----------------------------------------------------------------
    @property
    def max_replacements(self) -> int:
        """Workers started to replace lost ones, at most."""
        return self._run.supervisor.max_replacements

    @property
    def workers(self) -> list[PoolWorker]:
        """One object per worker minion (``.pid``, ``.host``, ``.state``)."""
        return list(self._run.backend.poll())

    @property
    def _pool(self) -> list[PoolWorker]:
        """multiprocessing's list of the worker processes: the worker minions not ended."""
        return [w for w in self.workers if w.state in ("starting", "alive")]

    # -- one call -----------------------------------------------------------------------
    def _check_running(self) -> Pool:
        if self._state != RUN:
            raise ValueError("Pool not running")
        return self

    def _call(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: Optional[int],
              **how: bool) -> Call:
        self._check_running()
        return self._run.call(func, iterable, chunksize, **how)

    def _drive(self, call: Call, result: ApplyResult) -> Any:
        try:
            drive(call, result)
        except BaseException as exc:
            self._failed(exc)
            raise
        try:
            return result.get()
        except PoolError as exc:
            self._failed(exc)
            raise

    def _later(self, call: Call, result: R) -> R:
        self._run.results.add(call, result)
        return result

    def _imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int,
              ordered: bool) -> IMapIterator:
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        call = self._call(func, iterable, chunksize, ordered=ordered, eager=False)
        return IMapIterator(call, self._failed)

    def _failed(self, error: BaseException) -> None:
        """A call ended in ``error``: Ctrl-C ends the pool; the pool's own error keeps
        the run directory for a look, should it end the pool."""
        if isinstance(error, KeyboardInterrupt):
            self.terminate()
        elif isinstance(error, PoolError):
            self._run.keep = True

    def _end(self, error_keeps: bool) -> None:
        if not error_keeps:
            self._run.keep = self.keep_workdir  # an error caught and the pool ended well
        self._finalizer()

