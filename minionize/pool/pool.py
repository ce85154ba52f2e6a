"""``Pool``: ``multiprocessing.Pool``'s map, on worker minions (local, or a SLURM array).

The caller pickles the function (by value: lambdas, closures and ``__main__`` functions
travel) and the items, chunk by chunk, into the run directory, fills the run's sweep
queue with one JSON param per chunk, and reads the workers' results files as they grow.
Everything a worker minion can lose (a crash, a SIGKILL, a lost node) comes back
through the queue: the chunk's lease expires, another worker runs it, and after
``max_attempts`` losses it is a dead letter, which the caller raises as :class:`TaskLost`.
"""

from __future__ import annotations

import os
import shutil
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, Optional

from ..engines._kit import optional_import
from ..engines.sweep import SweepEngine
from .backends import Backend, LocalBackend, PoolWorker
from .calls import chunk_size, dump, remove_call, write_call
from .errors import PoolError, RemoteTraceback
from .inbox import Arrivals, Inbox
from .progress import Progress
from .rundir import make_rundir, write_private
from .supervisor import Supervisor

#: How often the caller looks at the queue and the workers (results are read more often).
CHECK_SECONDS = 0.2
#: Longest sleep between two reads of the results files.
MAX_TICK = 0.005


class Pool:
    """A pool of worker minions: ``with Pool(4) as pool: pool.map(f, items)``.

    ``processes``: how many workers (default: the CPUs here). ``backend``: ``"local"``
    (child processes) or ``"slurm"`` (one ``sbatch --array`` job; ``sbatch_args`` are
    added to its command line). ``workdir``: where the run directory is made (default:
    a temporary directory; on SLURM, give a directory every node sees). ``lease``:
    seconds after which the chunk of a silent worker runs again; ``max_attempts``: the
    losses of a chunk before :class:`TaskLost`; ``max_tasks_per_worker``: recycle a
    worker's function process after that many chunks; ``max_replacements``: workers
    started to replace lost ones (default: ``2 * processes``). ``start``: how local
    workers start: ``"fork"`` (the default: forked from the caller, like
    multiprocessing, ready in milliseconds) or ``"exec"`` (a fresh ``python -m
    minionize.pool.worker``, which shares nothing with the caller). ``progress``: show
    a one-line display of each call on standard error (done / total, workers, failures,
    rate, ETA).
    """

    def __init__(
        self,
        processes: Optional[int] = None,
        *,
        backend: str = "local",
        workdir: Optional[str] = None,
        keep_workdir: bool = False,
        max_attempts: int = 3,
        lease: float = 60.0,
        max_tasks_per_worker: Optional[int] = None,
        max_replacements: Optional[int] = None,
        sbatch_args: Sequence[str] = (),
        start: str = "fork",
        progress: bool = False,
    ) -> None:
        self._cloudpickle = optional_import("cloudpickle", "minionize.pool", "pool")
        self.processes = processes or os.cpu_count() or 1
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        self.keep_workdir = keep_workdir
        self.progress = progress
        self._state = "open"
        #: [keep the run directory]: set by keep_workdir, or by an error.
        self._keep = [keep_workdir]
        tick = 0.002 if backend == "local" else 0.05
        self.rundir = make_rundir(workdir, {"lease": lease, "max_attempts": max_attempts, "tick": tick,
                                            "max_tasks_per_worker": max_tasks_per_worker})
        self._queue = SweepEngine(os.path.join(self.rundir, "queue"), lease=lease,
                                  max_attempts=max_attempts)
        self._queue.create()
        self._queue.open()
        self._inbox = Inbox(self.rundir)
        self._backend: Backend
        if backend == "local":
            self._backend = LocalBackend(self.rundir, start)
        elif backend == "slurm":
            from .slurm import SlurmBackend

            self._backend = SlurmBackend(self.rundir, sbatch_args)
        else:
            raise ValueError(f"backend must be 'local' or 'slurm', not {backend!r}")
        self._supervisor = Supervisor(
            rundir=self.rundir, queue=self._queue, backend=self._backend,
            max_attempts=max_attempts,
            max_replacements=2 * self.processes if max_replacements is None else max_replacements,
        )
        # Stops the workers and removes the run directory once: at terminate or join, or
        # when a pool never closed is collected, or at the end of the program.
        self._finalizer = weakref.finalize(self, _finish, self._backend, self.rundir, self._keep)
        try:
            self._backend.start(self.processes)
        except BaseException:
            self._finalizer()
            raise

    # -- the multiprocessing.Pool API -------------------------------------------------
    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any],
            chunksize: Optional[int] = None) -> list[Any]:
        """``[func(x) for x in iterable]``, computed by the workers."""
        return list(self._run(func, iterable, chunksize, star=False, ordered=True))

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: Optional[int] = None) -> list[Any]:
        """``[func(*args) for args in iterable]``, computed by the workers."""
        return list(self._run(func, iterable, chunksize, star=True, ordered=True))

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any],
             chunksize: Optional[int] = 1) -> Iterator[Any]:
        """The results of ``map``, in order, as they arrive."""
        return self._run(func, iterable, chunksize, star=False, ordered=True)

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                       chunksize: Optional[int] = 1) -> Iterator[Any]:
        """The results of ``map``, in the order they arrive."""
        return self._run(func, iterable, chunksize, star=False, ordered=False)

    @property
    def max_replacements(self) -> int:
        """Workers started to replace lost ones, at most."""
        return self._supervisor.max_replacements

    @property
    def workers(self) -> list[PoolWorker]:
        """One object per worker minion (``.pid``, ``.host``, ``.state``)."""
        return list(self._backend.poll())

    def close(self) -> None:
        """No more calls: the workers exit once the queue is drained (see :meth:`join`)."""
        if self._state == "open":
            self._state = "closed"
            write_private(os.path.join(self.rundir, "closed"), b"")

    def join(self, timeout: float = 60.0) -> None:
        """Wait for the workers of a closed pool to exit, then remove the run directory
        (unless ``keep_workdir``, or an error kept it)."""
        if self._state == "open":
            raise ValueError("join() needs close() or terminate() first")
        if self._state == "closed":
            self._backend.wait(timeout)
        self._state = "joined"
        self._finalizer()

    def terminate(self) -> None:
        """Stop every worker now, and remove the run directory (unless kept)."""
        if self._state == "joined":
            return
        self._state = "joined"
        self._finalizer()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    # -- one call -----------------------------------------------------------------------
    def _run(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: Optional[int],
             star: bool, ordered: bool) -> Iterator[Any]:
        if self._state != "open":
            raise ValueError("Pool not running")
        call, starts, total = self._submit(func, iterable, chunksize, star)
        return self._collect(call, starts, total, ordered)

    def _submit(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: Optional[int],
                star: bool) -> tuple[int, list[int], int]:
        """Write the call's function and items, fill the queue: (call, first item of each
        chunk, number of items)."""
        dumps = self._cloudpickle.dumps
        func_data = dump(dumps, func, getattr(func, "__qualname__", repr(func)))
        items = list(iterable)
        call = self._inbox.open_call()
        size = chunk_size(len(items), self.processes, chunksize)
        params = write_call(self.rundir, call, func_data, items, size, star, dumps)
        if params:
            self._queue.fill(params)
            write_private(os.path.join(self.rundir, "bell"), str(call).encode())
        return call, [p["start"] for p in params], len(items)

    def _collect(self, call: int, starts: list[int], total: int, ordered: bool) -> Iterator[Any]:
        arrivals = Arrivals(ordered)
        display = Progress(total) if self.progress else None
        tick = 0.0005
        next_check = time.monotonic() + CHECK_SECONDS
        finished = False
        try:
            while arrivals.handed < len(starts):
                arrived = arrivals.add(self._inbox.read(call))
                for outcomes in arrivals.ready():
                    yield from _values(outcomes)
                if arrivals.handed >= len(starts):
                    break
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + CHECK_SECONDS
                    self._supervisor.check(call, starts, arrivals.seen)
                    if display is not None:
                        display.update(arrivals.done, *self._supervisor.worker_counts(), arrivals.failed)
                tick = 0.0005 if arrived else min(MAX_TICK, tick * 2)
                time.sleep(tick)
            finished = True
            if display is not None:
                display.end(arrivals.done, *self._supervisor.worker_counts(), arrivals.failed)
        except KeyboardInterrupt:
            self.terminate()
            raise
        except PoolError:
            self._keep[0] = True
            raise
        finally:
            self._forget(call, finished)

    def _forget(self, call: int, finished: bool) -> None:
        """The call is over: remove its pickles (workers skip its leftover chunks)."""
        self._inbox.forget(call)
        remove_call(self.rundir, call)


def _finish(backend: Backend, rundir: str, keep: list[bool]) -> None:
    """Stop the workers (those still there), then remove the run directory unless kept."""
    try:
        backend.stop()
    finally:
        if not keep[0]:
            shutil.rmtree(rundir, ignore_errors=True)


def _values(outcomes: list[tuple[bool, Any, str]]) -> Iterator[Any]:
    for ok, value, text in outcomes:
        if ok:
            yield value
        else:
            if text:
                value.__cause__ = RemoteTraceback(text)
            raise value
