"""An outage is never an empty queue: the contract's outage case, on every engine whose
server can be stopped (Redis, the Pub/Sub emulator, Apache Pulsar; sweep and file have
no server).

A real ``minionize`` with a small ``MINION_IDLE_TIMEOUT`` runs a queue with params left
when its server goes away for several idle timeouts, then comes back: the minion rides
the outage out and runs every param (exit 0). A server away for longer than
``MINION_OUTAGE_TIMEOUT`` is exit 2 with a line saying the queue is unreachable, never
a drained queue (exit 0).

How each server goes away: redis-server and the Pulsar broker are stopped (SIGTERM) and
started again on the same port and data (Redis with ``appendfsync always``); the Pub/Sub
emulator keeps its messages in memory only, so a stop would lose the queue itself: the
minion reaches it through a TCP relay that is shut (every connection cut, the port
refusing) and opened again, which is what the minion sees of a stopped server.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from tests.conftest import PUBSUB_PROJECT, RECORD, RedisServer, records, task_env
from tests.conftest import start_task as start_minion
from tests.services import free_port, wait_for
from tests.services.pulsar import PulsarBroker, pulsar_server  # noqa: F401

#: Small, so that an outage lasts several of them.
IDLE_TIMEOUT = 1.0
#: How long the server stays away in the ride-out case: many idle timeouts.
DOWN_SECONDS = 5 * IDLE_TIMEOUT
PARAMS = 30


class Relay:
    """A TCP relay from a free port of 127.0.0.1 to ``upstream``; :meth:`shut` cuts every
    connection and refuses new ones until :meth:`open`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener: Optional[socket.socket] = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.open()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            doomed, self._sockets = self._sockets, set()
        for sock in ([listener] if listener else []) + list(doomed):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # shut
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@dataclass
class Server:
    """One engine's queue, and its server that can go away and come back."""

    name: str
    #: The minion's engine variables.
    variables: dict[str, str]
    fill: Callable[[list[Any]], None]
    stop: Callable[[], None]
    start: Callable[[], None]


def redis_server(tmp_path: Path) -> Iterator[Server]:
    from minionize.engines.redis.engine import RedisEngine

    server = RedisServer(free_port(), tmp_path / "redis", aof=True)
    stream = f"outage-{uuid.uuid4().hex[:8]}"

    def fill(params: list[Any]) -> None:
        admin = RedisEngine(url=server.url, stream=stream)
        admin.open()
        try:
            assert admin.fill(params) == (len(params), 0)
        finally:
            admin.close()

    try:
        yield Server("redis", {"MINION_ENGINE": "redis", "MINION_REDIS_URL": server.url,
                               "MINION_REDIS_STREAM": stream},
                     fill, server.stop, server.start)
    finally:
        server.stop()


def pubsub_server(host: str) -> Iterator[Server]:
    from minionize.engines.pubsub.engine import PubSubEngine

    name, port = host.rsplit(":", 1)
    relay = Relay((name, int(port)))
    tag = uuid.uuid4().hex[:10]
    names = {"project": PUBSUB_PROJECT, "topic": f"outage-{tag}", "subscription": f"sub-{tag}"}

    def fill(params: list[Any]) -> None:
        admin = PubSubEngine(decoder="json", **names)  # straight to the emulator
        try:
            admin.open()  # the subscription first, so that it gets the messages
            assert admin.fill(params) == (len(params), 0)
        finally:
            admin.close()

    try:
        yield Server("pubsub", {"MINION_ENGINE": "pubsub", "GOOGLE_PROJECT_ID": PUBSUB_PROJECT,
                                "GOOGLE_TOPIC_ID": names["topic"],
                                "GOOGLE_SUBSCRIPTION": names["subscription"],
                                "GOOGLE_DECODER": "json",
                                "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{relay.port}"},
                     fill, relay.shut, relay.open)
    finally:
        relay.shut()


def pulsar_queue(broker: PulsarBroker) -> Iterator[Server]:
    from minionize.engines.pulsar.engine import PulsarEngine

    topic = f"persistent://public/default/outage-{uuid.uuid4().hex[:8]}"

    def fill(params: list[Any]) -> None:
        admin = PulsarEngine(topic=topic, connection=broker.url, decoder="json")
        try:
            assert admin.fill(params) == (len(params), 0)
        finally:
            admin.close()

    def start() -> None:
        if broker.proc is None:
            broker.start()  # same ports, same data

    try:
        yield Server("pulsar", {"MINION_ENGINE": "pulsar", "PULSAR_CONNECTION": broker.url,
                                "PULSAR_TOPIC": topic, "PULSAR_DECODER": "json",
                                "PULSAR_NACK_DELAY": "0.2"},
                     fill, broker.stop, start)
    finally:
        start()  # the session's broker is back for the next test, whatever happened


@pytest.fixture(params=["redis", "pubsub", "pulsar"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    name: str = request.param
    request.applymarker(pytest.mark.service(name))
    if name == "redis":
        made = redis_server(tmp_path)
    elif name == "pubsub":
        made = pubsub_server(request.getfixturevalue("emulator"))
    else:
        made = pulsar_queue(request.getfixturevalue("pulsar_server"))
    yield from made


def minion_env(server: Server, tmp_path: Path, outage_timeout: float) -> dict[str, str]:
    return task_env(tmp_path, MINION_IDLE_TIMEOUT=f"{IDLE_TIMEOUT:g}",
                    MINION_OUTAGE_TIMEOUT=f"{outage_timeout:g}", **server.variables)


def run_until_some_ran(server: Server, tmp_path: Path, outage_timeout: float) -> Any:
    """A minion on a queue of PARAMS params, once it ran a few (many are left)."""
    server.fill(list(range(PARAMS)))
    minion = start_minion(minion_env(server, tmp_path, outage_timeout), tmp_path,
                          f"{RECORD}; sleep 0.2", "-j", "2")
    try:
        wait_for(lambda: len(records(tmp_path)) >= 4 or minion.process.poll() is not None,
                 120, "the minion to run a few params")
    except BaseException:
        minion.kill_group()
        raise
    assert minion.process.poll() is None, minion.err()
    assert len({p for p, _, _ in records(tmp_path)}) < PARAMS  # work is left
    return minion


def test_a_server_away_for_many_idle_timeouts_is_ridden_out_and_every_param_runs(
        server: Server, tmp_path: Path) -> None:
    minion = run_until_some_ran(server, tmp_path, outage_timeout=600)
    try:
        server.stop()
        down_since = time.monotonic()
        # The outage itself: the server stays away for many idle timeouts, and the
        # minion waits for it all along.
        while time.monotonic() - down_since < DOWN_SECONDS:
            assert minion.process.poll() is None, (
                f"the minion ended while its {server.name} server was away: {minion.err()}")
            time.sleep(0.1)
        server.start()
        code, err = minion.finish(timeout=300)
    finally:
        if minion.process.poll() is None:
            minion.kill_group()
    assert code == 0, err
    ran = {int(p) for p, _, _ in records(tmp_path)}
    assert ran == set(range(PARAMS)), f"never ran: {sorted(set(range(PARAMS)) - ran)}; {err}"


def test_a_server_away_past_the_outage_limit_is_an_error_never_a_drained_queue(
        server: Server, tmp_path: Path) -> None:
    limit = 4 * IDLE_TIMEOUT
    minion = run_until_some_ran(server, tmp_path, outage_timeout=limit)
    try:
        server.stop()
        code, err = minion.finish(timeout=120)
    finally:
        if minion.process.poll() is None:
            minion.kill_group()
        server.start()
    assert code == 2, err
    assert "unreachable" in err and "MINION_OUTAGE_TIMEOUT" in err, err


def test_a_stop_while_the_server_is_away_ends_an_idle_minion_at_once(
        server: Server, tmp_path: Path) -> None:
    # Seen on Kubernetes: with its Redis down, an idle minion took about 33 s to exit on
    # SIGTERM: its take rode the outage out, and the minion waited for it as for a
    # running task (the grace period, 30 s, and the kill allowance). A take gives up once
    # the minion stops.
    server.fill([0, 1])
    env = task_env(tmp_path, MINION_IDLE_TIMEOUT="600", MINION_OUTAGE_TIMEOUT="600",
                   MINION_GRACE_PERIOD="30", **server.variables)
    minion = start_minion(env, tmp_path, RECORD, "-j", "1")
    try:
        wait_for(lambda: len(records(tmp_path)) == 2, 120, "the two params to run")
        server.stop()
        if server.name != "pulsar":  # its client reconnects quietly: receive times out
            wait_for(lambda: "unreachable" in minion.err(), 60, "the minion to see the outage")
        minion.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        code, err = minion.finish(timeout=60)
        took = time.monotonic() - stopped
    finally:
        if minion.process.poll() is None:
            minion.kill_group()
        server.start()
    assert code == 0, err
    assert took < 10, f"{took:.1f} s to stop: {err}"
