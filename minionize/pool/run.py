"""One pool's run: its run directory, queue, workers (a backend), supervisor and result
thread, and how a call of the pool is written into them.

The caller pickles the function (by value: lambdas, closures and ``__main__`` functions
travel) and the items, chunk by chunk, and queues one JSON param per chunk: for workers
on other nodes (SLURM, OAR, Grid Engine), in the run directory (its sweep queue, ``calls/``, the workers'
results files); for local workers, in the caller's memory, handed out and sent back over
the run directory's socket (:mod:`.broker`, :mod:`.channel`). Everything a worker
minion can lose (a crash, a SIGKILL, a lost node) comes back through the queue: the
chunk's lease expires, another worker runs it, and after ``max_attempts`` losses it is a
dead letter, which the caller raises as :class:`TaskLost`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

from ..engines.sweep.engine import SweepEngine
from .backends import Backend, LocalBackend
from .broker import Broker
from .calls import ChunkQueue, Feeder, chunk_size
from .channel import ChannelServer, channel_path
from .cleanup import disown, guard, release, remove_stale
from .collect import Call
from .inbox import Inbox
from .keptqueue import write_kept_queue
from .pickling import dump_function
from .resultthread import ResultThread
from .rundir import make_rundir, write_private
from .supervisor import Supervisor
from .sweepqueue import SweepQueue

#: ``imap``'s read-ahead: chunks out (written, not handed on yet) per worker, at most.
AHEAD_PER_WORKER = 16


class Run:
    """The parts of a pool that outlive none of its calls, and the end of them all
    (:meth:`finish`, once: the pool's finalizer)."""

    def __init__(self, processes: int, *, backend: str, workdir: Optional[str], keep_workdir: bool,
                 max_attempts: int, lease: float, max_tasks_per_worker: Optional[int],
                 max_replacements: Optional[int], submit_args: Sequence[str], start: str,
                 progress: bool, initializer: Optional[Callable[[], Any]],
                 stdout: bool = False) -> None:
        self.processes = processes
        self.progress = progress
        #: Keep the run directory at the end: set by keep_workdir, or by an error.
        self.keep = keep_workdir
        tick = 0.002 if backend == "local" else 0.05
        # Absolute: the caller may chdir. Leftovers of killed callers there are removed.
        parent = os.path.abspath(workdir if workdir is not None else tempfile.gettempdir())
        remove_stale(parent)
        init_data = dump_function(initializer) if initializer is not None else None
        # Local workers take their chunks over a socket, when its path is not too long.
        local = backend == "local" and channel_path(os.path.join(parent, "minionize-pool-12345678"))
        self.rundir = make_rundir(parent, {"lease": lease, "max_attempts": max_attempts, "tick": tick,
                                           "max_tasks_per_worker": max_tasks_per_worker,
                                           "channel": bool(local)})
        if init_data is not None:
            write_private(os.path.join(self.rundir, "calls", "init"), init_data)
        sweep = SweepEngine(os.path.join(self.rundir, "queue"), lease=lease, max_attempts=max_attempts)
        sweep.create()
        self.inbox = Inbox(self.rundir, files=not local)
        self.channel: Optional[ChannelServer] = None
        #: The in-memory queue of local workers (written into ``queue/`` if kept).
        self.broker: Optional[Broker] = None
        self.queue: ChunkQueue
        if local:
            broker = self.broker = Broker(lease, max_attempts, self.inbox.ring)
            self.channel = ChannelServer(os.path.join(self.rundir, "channel"), broker, self.inbox)
            self.queue = broker
        else:
            sweep.open()
            self.queue = SweepQueue(self.rundir, sweep, max_attempts)
        self.backend: Backend
        if backend == "local":
            self.backend = LocalBackend(self.rundir, start, stdout)
        else:
            self.backend = cluster_backend(backend, self.rundir, submit_args)
        self.supervisor = Supervisor(
            rundir=self.rundir, queue=self.queue, backend=self.backend, max_attempts=max_attempts,
            max_replacements=2 * processes if max_replacements is None else max_replacements,
        )
        self.results = ResultThread()
        self._finished = False

    def start(self, finish: Callable[[], Any]) -> None:
        """Start the workers; ``finish`` (the pool's finalizer) runs on SIGTERM too."""
        guard(finish)
        self._finalizer = finish
        self.backend.start(self.processes)

    def call(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: Optional[int], *,
             star: bool = False, apply: bool = False, ordered: bool = True,
             eager: bool = True) -> Call:
        """A call written: ``eager`` (``map``): every item listed and written at once,
        as multiprocessing lists them (an item that cannot be sent raises here, before
        anything runs); else (``imap``) items read as the results come back."""
        func_data = dump_function(func)
        total: Optional[int] = None
        ahead: Optional[int] = AHEAD_PER_WORKER * self.processes
        if eager:
            iterable = list(iterable)
            total, ahead = len(iterable), None
        elif hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        size = chunk_size(total or 0, self.processes, chunksize)
        call_number = self.inbox.open_call()
        self.queue.put_function(call_number, func_data)
        feeder = Feeder(self.queue, call_number, iterable, size, star, apply)
        call = Call(feeder=feeder, inbox=self.inbox, queue=self.queue,
                    supervisor=self.supervisor, ordered=ordered, ahead=ahead,
                    progress=self.progress, total=total)
        try:
            call.feed()  # at once: the workers start before the first look
            if ahead is None and feeder.error is not None:
                raise feeder.error
        except BaseException:
            call.abandon()
            raise
        return call

    def close(self) -> None:
        """No more calls: the workers exit once the queue is drained."""
        write_private(os.path.join(self.rundir, "closed"), b"")
        self.queue.close()

    def wait(self, timeout: Optional[float]) -> None:
        """Wait for the workers to exit (after :meth:`close`), then for the result thread
        to hand on the results of the async calls (``timeout``: at most, in all)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.backend.wait(float("inf") if timeout is None else timeout)
        self.results.drain(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def finish(self) -> None:
        """Fail the async calls still running, stop the workers (those still there),
        then remove the run directory unless kept (then it is disowned: never removed
        as a leftover, and local workers' queue, in memory, is written into its
        ``queue/`` for ``minion-queue``)."""
        if self._finished:
            return
        self._finished = True
        try:
            self.results.stop("the pool was terminated before this result came back")
            self.backend.stop()
            if self.channel is not None:
                self.channel.stop()
        finally:
            if self.keep:
                self._write_queue()
                disown(self.rundir)
            else:
                shutil.rmtree(self.rundir, ignore_errors=True)
            release(self._finalizer)

    def _write_queue(self) -> None:
        if self.broker is None:
            return  # the sweep queue is the queue already
        try:
            write_kept_queue(self.broker, os.path.join(self.rundir, "queue"), self.broker.lease,
                             self.broker.max_attempts)
        except Exception as exc:  # a post-mortem record: never what ends the pool
            warnings.warn(f"the pool's queue could not be written into {self.rundir}: {exc}",
                          RuntimeWarning, stacklevel=2)


def cluster_backend(backend: str, rundir: str, submit_args: Sequence[str]) -> Backend:
    """The backend of a scheduler (imported only when a pool uses it)."""
    if backend == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend(rundir, submit_args)
    if backend == "oar":
        from .oar import OarBackend

        return OarBackend(rundir, submit_args)
    if backend == "sge":
        from .sge import SgeBackend

        return SgeBackend(rundir, submit_args)
    raise ValueError(f"no such backend: {backend!r}")


def start_run(run: Run, owner: object) -> weakref.finalize:  # type: ignore[type-arg]
    """Start the run's workers; the run ends once (the finalizer returned): when called,
    when ``owner`` is collected, at the end of the program, or on SIGTERM (then the
    caller ends as it would have)."""
    finalizer = weakref.finalize(owner, run.finish)
    try:
        run.start(finalizer)
    except BaseException:
        finalizer()
        raise
    return finalizer
