"""The queue of chunks of a pool whose workers may run on other nodes (SLURM): the run
directory's sweep queue, the calls' pickles in ``calls/``, and the bell that idle
workers watch. The same verbs as the in-memory :class:`~.broker.Broker` of local pools.
"""

from __future__ import annotations

import os
from typing import Any

from ..engines.sweep.engine import SweepEngine
from .rundir import write_private


class SweepQueue:
    """The chunks of a run as params of its sweep queue (JSON: never a pickle)."""

    def __init__(self, rundir: str, engine: SweepEngine, max_attempts: int) -> None:
        self.rundir = rundir
        self.engine = engine
        self.max_attempts = max_attempts
        self._calls = os.path.join(rundir, "calls")

    def put_function(self, call: int, data: bytes) -> None:
        write_private(os.path.join(self._calls, f"{call}.func"), data)

    def put_batch(self, call: int, batch: int, data: bytes) -> None:
        write_private(self._batch_path(call, batch), data)

    def remove_batch(self, call: int, batch: int) -> None:
        _unlink(self._batch_path(call, batch))

    def remove_call(self, call: int) -> None:
        """The call is over: remove its pickles (workers skip its leftover chunks)."""
        prefix = f"{call}."
        try:
            names = os.listdir(self._calls)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(prefix):
                _unlink(os.path.join(self._calls, name))

    def fill(self, params: list[dict[str, Any]]) -> None:
        """The chunks in the queue, and the bell rung (idle workers look at once)."""
        self.engine.fill(params)
        write_private(os.path.join(self.rundir, "bell"), str(params[0]["call"]).encode())

    def close(self) -> None:
        pass  # the workers see the run's ``closed`` file

    def dead_letters(self) -> list[dict[str, Any]]:
        return list(self.engine.list("dead"))

    def dead_count(self) -> int:
        return int(self.engine.status()["dead"] or 0)

    def expire(self) -> None:
        pass  # the queue's leases expire by themselves

    def reclaim(self, minion: str, reason: str) -> None:
        """Put back now the chunks a lost worker held, an attempt counted (or dead-letter
        them at the last attempt), instead of waiting for their leases to expire."""
        with self.engine.store.locked() as store:
            for index, lease in list(store.state.leases.items()):
                if lease.minion != minion:
                    continue
                if not lease.started:
                    store.settle("release", index, minion, lease.seq)
                    continue
                last = store.state.attempts.get(index, 0) + 1 >= self.max_attempts
                store.settle("dead" if last else "retry", index, minion, lease.seq, reason)

    def _batch_path(self, call: int, batch: int) -> str:
        return os.path.join(self._calls, f"{call}.items.{batch}")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
