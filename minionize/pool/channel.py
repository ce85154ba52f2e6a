"""The socket of a pool whose workers run on this machine (``RUNDIR/channel``): chunks,
their settles and their results cross it instead of the files of a shared queue.

The caller listens (:class:`ChannelServer`, a thread per connection); each worker
minion connects once (:class:`ChannelEngine`, its engine): a chunk comes with its items,
and its call's function the first time; its record goes back with its ack. Frames are
the function callback's (a length, then a pickle); the socket lives in the run
directory, which nobody else can enter, and a peer of another user is refused.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, Optional

from ..callbacks.function import wire
from ..engines.base import Delivery, Engine
from .broker import Broker, Key
from .inbox import Inbox

#: Longest socket path (AF_UNIX's limit, with a margin).
MAX_PATH = 100
#: How often a worker waiting for a chunk looks at its stop flag.
STOP_LOOK_SECONDS = 0.05
#: The calls whose function a worker minion keeps (sent once each).
KEPT_FUNCTIONS = 8


def channel_path(rundir: str) -> Optional[str]:
    """The run directory's socket, or None when its path is too long for one."""
    path = os.path.join(rundir, "channel")
    return path if len(os.fsencode(path)) <= MAX_PATH else None


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class ChannelServer:
    """The caller's end: accepts the workers and hands their messages to the broker
    (settles, takes) and to the inbox (results)."""

    def __init__(self, path: str, broker: Broker, inbox: Inbox) -> None:
        self.path = path
        self.broker = broker
        self.inbox = inbox
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(64)
        self._stopped = False
        threading.Thread(target=self._accept, name="minionize-pool-channel", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if _peer_uid(conn) != os.getuid():
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="minionize-pool-channel",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        lock = threading.Lock()
        fd = conn.fileno()
        minion = ""

        def answer(message: Any) -> None:
            data = wire.frame(message)
            with lock:
                conn.sendall(data)

        try:
            while True:
                message = wire.read_frame(fd)
                kind = message[0]
                if kind == "ack" and len(message) > 2:  # with the chunk's record: first
                    self.inbox.deliver(message[2])
                    self.broker.settle("ack", message[1])
                elif kind == "take":
                    self.broker.take(minion, answer, message[1])
                elif kind == "start":
                    self.broker.start(message[1])
                elif kind == "extend":
                    self.broker.extend(message[1])
                elif kind == "hello":
                    minion = message[1]
                else:
                    self.broker.settle(kind, *message[1:])
        except (EOFError, OSError, wire.WireError):
            pass
        finally:
            self.broker.forget_waiter(answer)
            conn.close()

    def stop(self) -> None:
        self._stopped = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()


def _connect(path: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    return conn


class Sent(NamedTuple):
    """A chunk as the caller sent it (a delivery's handle): its key, its items pickled,
    and its call's function pickled (None for both when the call is over)."""

    key: Key
    items: Optional[bytes]
    function: Optional[bytes]


class ChannelEngine(Engine):
    """A worker minion's engine on the caller's socket: a take asks the caller for a
    chunk (which comes with its items, and its call's function the first time), a settle
    tells it what became of one; the queue ends once the caller says so."""

    name = "pool-channel"

    def __init__(self, path: str, minion: str, lease: float) -> None:
        self.minion = minion
        self.lease = lease
        self._conn = _connect(path)
        self._lock = threading.Lock()
        self._asked = False
        self._ended = False
        #: The functions of the last calls, by call (the caller sends each one once).
        self._functions: dict[int, bytes] = {}
        #: The records of the chunks run, until their ack takes them to the caller.
        self._records: dict[Key, bytes] = {}
        #: True once the minion stops: a take returns at once (a quick terminate).
        self.stopping: Callable[[], bool] = lambda: False
        self._send(("hello", minion))

    @classmethod
    def from_settings(cls, settings: Any) -> ChannelEngine:
        raise NotImplementedError("a pool worker's engine is made by the worker")

    def _send(self, message: Any) -> None:
        data = wire.frame(message)
        with self._lock:
            self._conn.sendall(data)

    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        if self._ended:
            return []
        try:
            if not self._asked:
                self._send(("take", tuple(self._functions)))
                self._asked = True
            message = self._receive(timeout)
        except (EOFError, OSError, wire.WireError):
            self._ended = True  # the caller is gone
            return []
        if message is None:
            return []
        self._asked = False
        if message[0] == "closed":
            self._ended = True
            return []
        _, param, attempt, function, items = message
        key = (param["call"], param["chunk"])
        if function is not None:
            while len(self._functions) >= KEPT_FUNCTIONS:
                del self._functions[next(iter(self._functions))]  # the oldest call's
            self._functions[key[0]] = function
        elif items is not None:
            function = self._functions[key[0]]  # listed in the take: the caller sent none
        return [Delivery(param=param, id=f"{key[0]}.{key[1]}", attempt=attempt,
                         handle=Sent(key, items, function))]

    def started(self, delivery: Delivery) -> None:
        """The chunk goes to the function process now (its attempt counts if lost)."""
        try:
            self._send(("start", delivery.handle.key))
        except OSError:
            pass  # the caller is gone

    def _receive(self, timeout: float) -> Any:
        fd = self._conn.fileno()
        left = timeout
        while True:
            readable, _, _ = select.select([fd], [], [], min(left, STOP_LOOK_SECONDS))
            if readable:
                return wire.read_frame(fd)
            left -= STOP_LOOK_SECONDS
            if left <= 0 or self.stopping():
                return None

    def exhausted(self) -> bool:
        return self._ended

    def keep_record(self, delivery: Delivery, record: bytes) -> None:
        """The chunk's record, sent with its ack (so an acked chunk has its results)."""
        self._records[delivery.handle.key] = record

    def ack(self, delivery: Delivery, result: Optional[str] = None) -> None:
        record = self._records.pop(delivery.handle.key, None)
        if record is None:
            self._settle("ack", delivery)
            return
        try:
            self._send(("ack", delivery.handle.key, record))
        except OSError:
            pass  # the caller is gone; so is its pool

    def retry(self, delivery: Delivery, reason: str) -> None:
        self._settle("retry", delivery, reason)

    def release(self, delivery: Delivery) -> None:
        self._settle("release", delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._settle("dead", delivery, reason)

    def _settle(self, how: str, delivery: Delivery, *reason: str) -> None:
        self._records.pop(delivery.handle.key, None)  # not acked: it runs again
        try:
            self._send((how, delivery.handle.key, *reason))
        except OSError:
            pass  # the caller is gone; so is its pool

    def lease_renewal_interval(self) -> Optional[float]:
        return self.lease / 3.0

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        keys: list[Key] = [d.handle.key for d in deliveries]
        if keys:
            try:
                self._send(("extend", keys))
            except OSError:
                pass

    def close(self) -> None:
        self._conn.close()
