"""The queue of chunks of a pool whose workers run on this machine, kept in the caller's
memory: the chunks to run, their leases, attempts and dead letters, and the calls'
pickles, handed to the workers over the run directory's socket (:mod:`.channel`).

It keeps the sweep queue's rules: a chunk is leased to one worker minion at a time, a
failed attempt puts it back (or dead-letters it at the last attempt), a lost worker's
chunks come back at once (:meth:`Broker.reclaim`, an attempt counted for a chunk that
started), and a silent worker's once its lease expires (:meth:`Broker.expire`).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

#: A chunk: (call, chunk number).
Key = tuple[int, int]
#: A worker minion waiting: its name, how to answer it, the calls whose function it has.
Waiter = tuple[str, Callable[[Any], None], Collection[int]]


@dataclass
class ChunkLease:
    """A chunk held by a worker minion."""

    minion: str
    renewed: float = field(default_factory=time.monotonic)
    #: Its minion handed it to its function process: the attempt counts if it is lost.
    started: bool = False


class Broker:
    """The chunks in memory; a waiting worker is answered through the function it gave
    (:meth:`take`); ``ring()`` wakes the callers (a dead letter)."""

    def __init__(self, lease: float, max_attempts: int, ring: Callable[[], None]) -> None:
        self.lease = lease
        self.max_attempts = max_attempts
        self._ring = ring
        self._lock = threading.Lock()
        self._todo: collections.deque[Key] = collections.deque()
        self._params: dict[Key, dict[str, Any]] = {}
        self._attempts: dict[Key, int] = {}
        #: Why a chunk's last attempt failed (chunks that failed and wait for another).
        self._reasons: dict[Key, str] = {}
        self._leases: dict[Key, ChunkLease] = {}
        #: Worker minions waiting for a chunk, with how to answer them and the calls
        #: whose function they hold already.
        self._waiting: collections.deque[Waiter] = collections.deque()
        self._functions: dict[int, bytes] = {}
        self._batches: dict[tuple[int, int], bytes] = {}
        self._dead: list[dict[str, Any]] = []
        self._closed = False

    # -- the caller's side ----------------------------------------------------------
    def put_function(self, call: int, data: bytes) -> None:
        with self._lock:
            self._functions[call] = data

    def put_batch(self, call: int, batch: int, data: bytes) -> None:
        with self._lock:
            self._batches[(call, batch)] = data

    def remove_batch(self, call: int, batch: int) -> None:
        with self._lock:
            self._batches.pop((call, batch), None)

    def remove_call(self, call: int) -> None:
        """The call is over: its pickles and its chunks not run yet are dropped."""
        with self._lock:
            self._functions.pop(call, None)
            for key in [k for k in self._batches if k[0] == call]:
                del self._batches[key]
            for key in [k for k in self._params if k[0] == call and k not in self._leases]:
                self._forget(key)
            self._todo = collections.deque(k for k in self._todo if k[0] != call)

    def fill(self, params: list[dict[str, Any]]) -> None:
        with self._lock:
            for param in params:
                key = (param["call"], param["chunk"])
                self._params[key] = param
                self._todo.append(key)
            self._serve()

    def close(self) -> None:
        """No more calls: a worker that asks once nothing is left is told to end."""
        with self._lock:
            self._closed = True
            self._serve()

    def dead_letters(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._dead)

    def dead_count(self) -> int:
        return len(self._dead)

    def left(self) -> list[dict[str, Any]]:
        """The chunks not done, not dead: todo or held by a worker (what its lease
        says), each with its param, attempts and the reason its last attempt failed."""
        with self._lock:
            keys = [*self._leases, *self._todo]
            return [{"id": f"{k[0]}.{k[1]}", "param": self._params[k], "attempts": self._attempts.get(k, 0),
                     "reason": self._reasons.get(k, "")} for k in keys if k in self._params]

    def reclaim(self, minion: str, reason: str) -> None:
        """A lost worker's chunks back now (an attempt counted if it had started)."""
        with self._lock:
            for key, held in list(self._leases.items()):
                if held.minion == minion:
                    self._back(key, counted=held.started, reason=reason)
            self._serve()

    def expire(self) -> None:
        """The chunks of workers silent for ``lease`` seconds go back, an attempt counted."""
        now = time.monotonic()
        with self._lock:
            for key, held in list(self._leases.items()):
                if now - held.renewed >= self.lease:
                    reason = f"lease expired (worker minion {held.minion} silent for {self.lease:g}s)"
                    self._back(key, counted=True, reason=reason)
            self._serve()

    # -- the workers' side ------------------------------------------------------------
    def take(self, minion: str, answer: Callable[[Any], None], held: Collection[int] = ()) -> None:
        """A worker asks for a chunk: answered now, or once there is one (or the end).
        ``held``: the calls whose function it has (the others' come with their chunk)."""
        with self._lock:
            self._waiting.append((minion, answer, held))
            self._serve()

    def forget_waiter(self, answer: Callable[[Any], None]) -> None:
        """A worker's connection ended: it waits no more."""
        with self._lock:
            self._waiting = collections.deque(w for w in self._waiting if w[1] is not answer)

    def settle(self, how: str, key: Key, reason: str = "") -> None:
        """``ack``, ``retry``, ``release`` or ``dead``, as the worker minion's loop chose."""
        with self._lock:
            if key not in self._leases:
                return  # reclaimed or expired meanwhile: already back
            del self._leases[key]
            if how == "ack":
                self._forget(key)
            elif how == "release":
                self._todo.appendleft(key)
            elif how == "retry":
                self._attempts[key] = self._attempts.get(key, 0) + 1
                self._reasons[key] = reason
                self._todo.appendleft(key)
            else:
                self._attempts[key] = self._attempts.get(key, 0) + 1
                self._bury(key, reason)
            self._serve()

    def extend(self, keys: list[Key]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                held = self._leases.get(key)
                if held is not None:
                    held.renewed = now

    def start(self, key: Key) -> None:
        """The worker minion hands the chunk to its function process: from now on the
        attempt counts if the worker is lost."""
        with self._lock:
            held = self._leases.get(key)
            if held is not None:
                held.started = True

    # -- under the lock -----------------------------------------------------------------
    def _serve(self) -> None:
        while self._waiting and self._todo:
            minion, answer, held = self._waiting.popleft()
            key = self._todo.popleft()
            self._leases[key] = ChunkLease(minion)
            try:
                answer(("chunk", self._params[key], self._attempts.get(key, 0) + 1,
                        *self._payload(key, held)))
            except OSError:  # the worker is gone: the chunk waits for the next
                del self._leases[key]
                self._todo.appendleft(key)
        if self._closed and not self._todo and not self._leases:
            while self._waiting:
                _, answer, _ = self._waiting.popleft()
                try:
                    answer(("closed",))
                except OSError:
                    pass

    def _payload(self, key: Key, held: Collection[int]) -> tuple[Optional[bytes], Optional[bytes]]:
        """What the worker needs to run the chunk: the call's function (unless it has it)
        and the chunk's items; (None, None) when the call is over (its pickles dropped)."""
        param = self._params[key]
        call = key[0]
        data = self._batches.get((call, param["batch"]))
        func = None if call in held else self._functions.get(call)
        if data is None or (func is None and call not in held):
            return None, None
        return func, data[param["offset"]:param["offset"] + param["size"]]

    def _back(self, key: Key, *, counted: bool, reason: str) -> None:
        del self._leases[key]
        if not counted:
            self._todo.appendleft(key)
            return
        attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
        if attempts >= self.max_attempts:
            self._bury(key, reason)
        else:
            self._reasons[key] = reason
            self._todo.appendleft(key)

    def _bury(self, key: Key, reason: str) -> None:
        self._dead.append({"id": f"{key[0]}.{key[1]}", "param": self._params[key],
                           "attempts": self._attempts.get(key, 0), "reason": reason})
        self._forget(key)
        self._ring()

    def _forget(self, key: Key) -> None:
        self._params.pop(key, None)
        self._attempts.pop(key, None)
        if self._reasons:
            self._reasons.pop(key, None)
