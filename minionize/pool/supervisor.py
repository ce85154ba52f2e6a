"""What the caller of a pool watches while it collects a call: the chunks the queue
dead-lettered (:class:`TaskLost`), workers whose initializer raised (:class:`PoolError`:
they cannot start), and the workers, lost ones replaced up to
``max_replacements``, their chunks put back at once."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .backends import Backend, PoolWorker, read_state
from .errors import PoolError, TaskLost

if TYPE_CHECKING:
    from .calls import ChunkQueue


class Supervisor:
    """The dead letters of the run's queue and the workers of its backend."""

    def __init__(
        self, *, rundir: str, queue: ChunkQueue, backend: Backend, max_attempts: int,
        max_replacements: int,
    ) -> None:
        self.rundir = rundir
        self.queue = queue
        self.backend = backend
        self.max_attempts = max_attempts
        self.max_replacements = max_replacements
        self.replaced = 0
        self._reclaimed: set[str] = set()
        #: The queue's dead letters seen so far (each call looks for its own).
        self._dead: list[dict[str, Any]] = []
        #: Why workers cannot start (their initializer raised), once one said so.
        self._failure = ""
        self._lock = threading.Lock()

    def check(self, call: int, starts: list[int], seen: set[int]) -> None:
        """Dead chunks of this call raise TaskLost; workers that cannot start raise
        PoolError; ended workers are replaced."""
        with self._lock:
            self.queue.expire()
            if self.queue.dead_count() > len(self._dead):
                self._dead = self.queue.dead_letters()
            for row in self._dead:
                param = row["param"]
                if param["call"] == call and param["chunk"] not in seen:
                    index = param["start"]
                    raise TaskLost(
                        f"item {index} (a chunk of {_chunk_len(starts, param['chunk'])}) was lost "
                        f"{row['attempts']} time(s): {row['reason']}{kept_note(self.rundir)}",
                        index=index, attempts=row["attempts"], reason=row["reason"],
                    )
            self._watch_workers()

    def _watch_workers(self) -> None:
        workers = self.backend.poll()
        for worker in workers:
            if worker.state == "lost" and worker.name not in self._reclaimed:
                self._reclaimed.add(worker.name)
                info = read_state(self.rundir, worker.name)
                if info.get("state") == "failed" and not self._failure:
                    self._failure = (f"worker {worker.name} cannot start: the pool's initializer "
                                     f"raised:\n{info.get('error', '')}")
                self._reclaim(worker)
        if self._failure:
            raise PoolError(f"{self._failure}{kept_note(self.rundir)}")
        ended = [w for w in workers if w.state in ("lost", "finished")]
        missing = len(ended) - self.replaced
        if missing <= 0:
            return
        allowed = min(missing, self.max_replacements - self.replaced)
        if allowed > 0:
            self.replaced += allowed
            self.backend.start(allowed)
        elif not any(w.state in ("alive", "starting") for w in self.backend.workers):
            raise PoolError(f"every worker was lost and {self.replaced} replacement(s) were "
                            f"used (max_replacements){kept_note(self.rundir)}")

    def worker_counts(self) -> tuple[int, int]:
        """(alive, lost) workers, for the progress display."""
        workers = self.backend.workers
        return (sum(1 for w in workers if w.state == "alive"), sum(1 for w in workers if w.state == "lost"))

    def _reclaim(self, worker: PoolWorker) -> None:
        """Put back now the chunks a lost worker held, an attempt counted (or dead-letter
        them at the last attempt), instead of waiting for their leases to expire."""
        minion = read_state(self.rundir, worker.name).get("minion")
        if not minion:
            return  # it never took anything: its leases, if any, expire as usual
        self.queue.reclaim(str(minion), f"worker {worker.name} lost: {self.backend.reason(worker)}")


def kept_note(rundir: str) -> str:
    """The end of a pool error's message: the run directory, kept for a look when the
    error ends the pool (an error caught, and the pool ended as usual: removed)."""
    return f"; run directory (kept if this error ends the pool): {rundir}"


def _chunk_len(starts: list[int], chunk: int) -> str:
    if chunk + 1 < len(starts):
        n = starts[chunk + 1] - starts[chunk]
        return f"{n} item(s)"
    return "the last items"
