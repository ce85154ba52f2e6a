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
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, Optional

from ..engines.kit import optional_import
from ..engines.sweep.engine import SweepEngine
from .backends import Backend, LocalBackend, PoolWorker
from .calls import Feeder, chunk_size, write_function
from .cleanup import disown, guard, release, remove_stale
from .collect import Call
from .errors import PoolError
from .inbox import Inbox
from .pickling import dump_function
from .rundir import make_rundir, write_private
from .supervisor import Supervisor

#: ``imap``'s read-ahead: chunks out (written, not handed on yet) per worker, at most.
AHEAD_PER_WORKER = 16


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
        optional_import("cloudpickle", "minionize.pool", "pool")
        self.processes = processes or os.cpu_count() or 1
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        self.keep_workdir = keep_workdir
        self.progress = progress
        self._state = "open"
        #: [keep the run directory]: set by keep_workdir, or by an error.
        self._keep = [keep_workdir]
        tick = 0.002 if backend == "local" else 0.05
        # Absolute: the caller may chdir. Leftovers of killed callers there are removed.
        parent = os.path.abspath(workdir if workdir is not None else tempfile.gettempdir())
        remove_stale(parent)
        self.rundir = make_rundir(parent, {"lease": lease, "max_attempts": max_attempts, "tick": tick,
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
        # SIGTERM ends the caller after the same.
        holder: list[Callable[[], Any]] = []
        self._finalizer = weakref.finalize(self, _finish, self._backend, self.rundir, self._keep, holder)
        holder.append(self._finalizer)
        guard(self._finalizer)
        try:
            self._backend.start(self.processes)
        except BaseException:
            self._finalizer()
            raise

    # -- the multiprocessing.Pool API -------------------------------------------------
    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any],
            chunksize: Optional[int] = None) -> list[Any]:
        """``[func(x) for x in iterable]``, computed by the workers."""
        return list(self._run(func, iterable, chunksize, star=False, ordered=True, eager=True))

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: Optional[int] = None) -> list[Any]:
        """``[func(*args) for args in iterable]``, computed by the workers."""
        return list(self._run(func, iterable, chunksize, star=True, ordered=True, eager=True))

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
        (unless ``keep_workdir``)."""
        if self._state == "open":
            raise ValueError("join() needs close() or terminate() first")
        if self._state == "closed":
            self._backend.wait(timeout)
        self._end(False)

    def terminate(self) -> None:
        """Stop every worker now, and remove the run directory (unless ``keep_workdir``)."""
        self._end(False)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        # The run directory is kept for a look when the pool's own error ends the block.
        self._end(isinstance(error, PoolError))

    def _end(self, error_keeps: bool) -> None:
        if self._state == "joined":
            return
        self._state = "joined"
        if not error_keeps:
            self._keep[0] = self.keep_workdir  # an error caught and the pool ended well
        self._finalizer()

    # -- one call -----------------------------------------------------------------------
    def _run(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: Optional[int],
             star: bool, ordered: bool, eager: bool = False) -> Iterator[Any]:
        """map (``eager``: every item listed and written at once, as multiprocessing
        lists them) or imap (items read as the results come back)."""
        if self._state != "open":
            raise ValueError("Pool not running")
        func_data = dump_function(func)
        total: Optional[int] = None
        ahead: Optional[int] = AHEAD_PER_WORKER * self.processes
        if eager:  # map and starmap
            iterable = list(iterable)
            total, ahead = len(iterable), None
        elif hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        size = chunk_size(total or 0, self.processes, chunksize)
        call_number = self._inbox.open_call()
        write_function(self.rundir, call_number, func_data)
        call = Call(rundir=self.rundir, feeder=Feeder(self.rundir, call_number, iterable, size, star),
                    inbox=self._inbox, queue=self._queue, supervisor=self._supervisor,
                    ordered=ordered, ahead=ahead, progress=self.progress, total=total)
        try:
            call.feed()  # at once: the workers start before the first next()
            if ahead is None and call.feeder.error is not None:
                raise call.feeder.error  # map: an item that cannot be sent, before anything runs
        except BaseException:
            call.abandon()
            raise
        return self._guarded(call.results())

    def _guarded(self, results: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from results
        except KeyboardInterrupt:
            self.terminate()
            raise
        except PoolError:
            self._keep[0] = True
            raise


def _finish(backend: Backend, rundir: str, keep: list[bool], holder: list[Callable[[], Any]]) -> None:
    """Stop the workers (those still there), then remove the run directory unless kept
    (then it is disowned: never removed as a leftover)."""
    try:
        backend.stop()
    finally:
        if keep[0]:
            disown(rundir)
        else:
            shutil.rmtree(rundir, ignore_errors=True)
        if holder:
            release(holder[0])
