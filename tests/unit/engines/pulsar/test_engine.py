"""The pulsar engine against an in-memory stand-in of the pulsar-client calls it uses.

No Pulsar broker can run on the test machines, so the engine was never run against a
real one. What is checked instead:

* the engine's behaviour against :class:`FakePulsar`, a small broker + client that models
  what the engine relies on (Shared subscriptions, receive timeouts, nack redelivery with
  a growing redelivery count, the client's dead-letter policy, messages dropped from a
  topic without subscription);
* that every call and keyword the engine made on the stand-in exists with that signature
  in the real, installed ``pulsar`` module, and that the real client accepts the engine's
  arguments (an unreachable broker gives a clean EngineError, not a TypeError).
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
from collections import deque
from typing import Any, Optional

import pytest

from minionize.callbacks.function.callback import FuncCallback
from minionize.config import Settings
from minionize.engines import engine_class
from minionize.engines.pulsar.engine import PulsarEngine
from minionize.errors import ConfigError, EngineError, MissingExtraError
from minionize.minion.run import Minion
from tests.services import free_port

# -- the stand-in ------------------------------------------------------------------------


class PulsarException(Exception):
    pass


class Timeout(PulsarException):
    pass


class ConnectError(PulsarException):
    pass


class FakeMessage:
    def __init__(self, data: bytes, properties: dict[str, str], msg_id: int, count: int) -> None:
        self._data = data
        self._properties = properties
        self._id = msg_id
        self._count = count

    def data(self) -> bytes:
        return self._data

    def properties(self) -> dict[str, str]:
        return dict(self._properties)

    def message_id(self) -> str:
        return f"({self._id},0,-1,-1)"

    def redelivery_count(self) -> int:
        return self._count


class Subscription:
    """One subscription's backlog, shared by its consumers (Shared type)."""

    def __init__(self, broker: Broker, policy: Any) -> None:
        self.broker = broker
        self.ready: deque[tuple[int, bytes, dict[str, str], int]] = deque()
        self.delayed: list[tuple[float, tuple[int, bytes, dict[str, str], int]]] = []
        self.unacked: dict[int, tuple[tuple[int, bytes, dict[str, str], int], Any]] = {}
        self.policy = policy


class Broker:
    """Topics -> subscriptions; a message sent to a topic without one is dropped."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.next_id = 0
        self.acked: list[tuple[str, bytes]] = []

    def publish(self, topic: str, data: bytes, properties: dict[str, str]) -> int:
        with self.lock:
            self.next_id += 1
            for (t, _), sub in self.subscriptions.items():
                if t == topic:
                    sub.ready.append((self.next_id, data, dict(properties), 0))
            self.lock.notify_all()
            return self.next_id

    def backlog(self, topic: str, subscription: str) -> list[bytes]:
        sub = self.subscriptions[(topic, subscription)]
        return [m[1] for m in sub.ready] + [m[1][1] for m in sub.delayed]


class FakePulsar:
    """The module: the names the engine uses, and a record of every call made."""

    PulsarException = PulsarException
    Timeout = Timeout
    ConnectError = ConnectError

    class ConsumerType:
        Shared = "Shared"

    class InitialPosition:
        Earliest = "Earliest"

    def __init__(self) -> None:
        self.broker = Broker()
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        #: What ``Consumer.is_connected`` says (False: the broker is away, the client
        #: reconnects in the background and ``receive`` only times out).
        self.connected = True
        fake = self

        class ConsumerDeadLetterPolicy:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                fake.calls.append(("ConsumerDeadLetterPolicy", args, kwargs))
                bound = inspect.signature(self._init).bind(*args, **kwargs)
                self._init(*bound.args, **bound.kwargs)

            def _init(
                self,
                max_redeliver_count: int,
                dead_letter_topic: Optional[str] = None,
                initial_subscription_name: Optional[str] = None,
            ) -> None:
                self.max_redeliver_count = max_redeliver_count
                self.dead_letter_topic = dead_letter_topic
                self.initial_subscription_name = initial_subscription_name

        class Client:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                fake.calls.append(("Client", args, kwargs))

            def subscribe(self, topic: str, subscription_name: str, **kwargs: Any) -> Any:
                fake.calls.append(("Client.subscribe", (topic, subscription_name), kwargs))
                assert kwargs.get("consumer_type") == "Shared"
                with fake.broker.lock:
                    key = (topic, subscription_name)
                    policy = kwargs.get("dead_letter_policy")
                    sub = fake.broker.subscriptions.setdefault(key, Subscription(fake.broker, None))
                    delay = kwargs.get("negative_ack_redelivery_delay_ms", 60000) / 1000
                return Consumer(fake, sub, topic, policy, delay)

            def create_producer(self, topic: str, **kwargs: Any) -> Any:
                fake.calls.append(("Client.create_producer", (topic,), kwargs))
                return Producer(fake, topic)

            def close(self) -> None:
                fake.calls.append(("Client.close", (), {}))

        class Producer:
            def __init__(self, fake: FakePulsar, topic: str) -> None:
                self.fake = fake
                self.topic = topic

            def send(self, content: bytes, properties: Optional[dict[str, str]] = None) -> int:
                self.fake.calls.append(("Producer.send", (content,), {"properties": properties}))
                assert isinstance(content, bytes)
                return self.fake.broker.publish(self.topic, content, properties or {})

            def flush(self) -> None:
                self.fake.calls.append(("Producer.flush", (), {}))

            def close(self) -> None:
                self.fake.calls.append(("Producer.close", (), {}))

        class Consumer:
            def __init__(self, fake: FakePulsar, sub: Subscription, topic: str, policy: Any,
                         delay: float) -> None:
                self.fake = fake
                self.sub = sub
                self.topic = topic
                self.policy = policy
                self.delay = delay

            def receive(self, timeout_millis: Optional[int] = None) -> FakeMessage:
                self.fake.calls.append(("Consumer.receive", (), {"timeout_millis": timeout_millis}))
                assert isinstance(timeout_millis, int)  # the real client checks the type
                broker = self.fake.broker
                deadline = time.monotonic() + timeout_millis / 1000
                with broker.lock:
                    while True:
                        now = time.monotonic()
                        for due, item in list(self.sub.delayed):
                            if due <= now:
                                self.sub.delayed.remove((due, item))
                                self.sub.ready.append(item)
                        if self.sub.ready:
                            item = self.sub.ready.popleft()
                            self.sub.unacked[item[0]] = (item, self)
                            return FakeMessage(item[1], item[2], item[0], item[3])
                        if now >= deadline:
                            raise Timeout("Pulsar error: TimeOut")
                        broker.lock.wait(min(deadline - now, 0.01))

            def is_connected(self) -> bool:
                self.fake.calls.append(("Consumer.is_connected", (), {}))
                return self.fake.connected

            def acknowledge(self, message: FakeMessage) -> None:
                self.fake.calls.append(("Consumer.acknowledge", (message,), {}))
                with self.fake.broker.lock:
                    item, _ = self.sub.unacked.pop(message._id)
                    self.fake.broker.acked.append((self.topic, item[1]))

            def negative_acknowledge(self, message: FakeMessage) -> None:
                self.fake.calls.append(("Consumer.negative_acknowledge", (message,), {}))
                broker = self.fake.broker
                with broker.lock:
                    (msg_id, data, props, count), _ = self.sub.unacked.pop(message._id)
                    policy = self.policy
                    if policy is not None and count >= policy.max_redeliver_count:
                        # What the client does: the next redelivery goes to the DLQ,
                        # whose initial subscription it creates (else it would be lost).
                        if policy.initial_subscription_name:
                            key = (policy.dead_letter_topic, policy.initial_subscription_name)
                            broker.subscriptions.setdefault(key, Subscription(broker, None))
                        broker.lock.release()
                        try:
                            broker.publish(policy.dead_letter_topic, data, props)
                        finally:
                            broker.lock.acquire()
                        return
                    item = (msg_id, data, props, count + 1)
                    self.sub.delayed.append((time.monotonic() + self.delay, item))
                    broker.lock.notify_all()

            def close(self) -> None:
                self.fake.calls.append(("Consumer.close", (), {}))
                with self.fake.broker.lock:  # what this consumer held comes back
                    for msg_id, (item, owner) in list(self.sub.unacked.items()):
                        if owner is self:
                            del self.sub.unacked[msg_id]
                            self.sub.ready.append((*item[:3], item[3] + 1))
                    self.fake.broker.lock.notify_all()

        self.Client = Client
        self.ConsumerDeadLetterPolicy = ConsumerDeadLetterPolicy


def engine(fake: FakePulsar, **kwargs: Any) -> PulsarEngine:
    options: dict[str, Any] = {"topic": "params", "nack_delay": 0.0, "module": fake}
    options.update(kwargs)
    return PulsarEngine(**options)


@pytest.fixture
def fake() -> FakePulsar:
    return FakePulsar()


# -- behaviour -----------------------------------------------------------------------------


def test_empty_topic_is_waiting_not_a_crash(fake: FakePulsar) -> None:
    minion = engine(fake)
    minion.open()
    started = time.monotonic()
    assert minion.take(4, 0.2) == []
    assert 0.15 < time.monotonic() - started < 2
    minion.close()


def test_fill_subscribes_first_so_nothing_is_lost(fake: FakePulsar) -> None:
    client = fake.Client("pulsar://x")
    client.create_producer("params").send(b"lost")  # no subscription yet: dropped
    assert engine(fake).fill(["a", "b"]) == (2, 0)
    minion = engine(fake)
    minion.open()
    assert [d.param for d in minion.take(5, 0.1)] == ["a", "b"]


def test_two_minions_share_the_params_each_acked_once(fake: FakePulsar) -> None:
    engine(fake, decoder="json").fill(range(200))
    done: list[int] = []
    lock = threading.Lock()

    def minion() -> None:
        me = engine(fake, decoder="json")
        me.open()
        while True:
            batch = me.take(3, 0.1)
            if not batch:
                break
            for delivery in batch:
                with lock:
                    done.append(delivery.param)
                me.ack(delivery)
        me.close()

    threads = [threading.Thread(target=minion) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(done) == list(range(200))
    assert len(fake.broker.acked) == 200
    assert fake.broker.backlog("params", "minionize") == []


def test_retry_counts_attempts_then_dead_letter_keeps_the_reason(fake: FakePulsar) -> None:
    engine(fake).fill(["bad"])
    minion = engine(fake, max_attempts=3)
    minion.open()
    attempts = []
    for _ in range(3):
        (delivery,) = minion.take(1, 1)
        attempts.append(delivery.attempt)
        if delivery.attempt < 3:
            minion.retry(delivery, "exit code 1")
    assert attempts == [1, 2, 3]
    minion.dead_letter(delivery, "exit code 1")
    assert minion.take(1, 0.1) == []

    reader = fake.Client("x").subscribe("params-minionize-DLQ", "minionize",
                                         consumer_type="Shared")
    message = reader.receive(timeout_millis=100)
    assert message.data() == b"bad"
    assert message.properties()["minion-reason"] == "exit code 1"
    assert message.properties()["minion-attempt"] == "3"
    reader.close()  # unacked: it stays a dead letter

    assert minion.requeue_dead() == 1  # replayable, counted afresh, without the reason
    (again,) = minion.take(1, 1)
    assert (again.param, again.attempt) == ("bad", 1)
    assert "minion-reason" not in again.handle.properties()


def test_release_gives_the_message_back_without_counting_an_attempt(fake: FakePulsar) -> None:
    engine(fake).fill(["x"])
    minion = engine(fake)
    minion.open()
    (delivery,) = minion.take(1, 1)
    minion.retry(delivery, "failed")  # attempt 1 ran and counts
    (second,) = minion.take(1, 1)
    assert second.attempt == 2
    minion.release(second)  # a graceful stop: attempt 2 did not count
    (back,) = minion.take(1, 1)
    assert (back.param, back.id, back.attempt) == ("x", delivery.id, 2)
    minion.release(back)
    (again,) = minion.take(1, 1)
    assert (again.id, again.attempt) == (delivery.id, 2)
    minion.ack(again)
    assert minion.take(1, 0.1) == []
    assert fake.broker.backlog("params", "minionize") == []


def test_client_policy_is_the_backstop_for_too_many_redeliveries(fake: FakePulsar) -> None:
    engine(fake).fill(["x"])
    for _ in range(2):  # two minions die holding it: two attempts counted
        dying = engine(fake, max_attempts=2)
        dying.open()
        dying.take(1, 1)
        dying.close()
    minion = engine(fake, max_attempts=2)
    minion.open()
    (delivery,) = minion.take(1, 1)
    assert delivery.attempt == 3 and "MINION_MAX_ATTEMPTS=2" in (delivery.error or "")
    minion.retry(delivery, "too often")  # the client's policy now routes it to the DLQ
    assert minion.take(1, 0.1) == []
    assert fake.broker.backlog("params-minionize-DLQ", "minionize") == [b"x"]


class Flaky:
    """Make ``fake``'s ``Client.subscribe`` fail with ConnectError ``times`` times."""

    def __init__(self, fake: FakePulsar, times: int) -> None:
        self.left = times
        real = fake.Client.subscribe
        flaky = self

        def subscribe(client: Any, *args: Any, **kwargs: Any) -> Any:
            if flaky.left > 0:
                flaky.left -= 1
                raise ConnectError("Pulsar error: ConnectError")
            return real(client, *args, **kwargs)

        fake.Client.subscribe = subscribe


def test_an_outage_at_start_is_ridden_out(fake: FakePulsar) -> None:
    engine(fake).fill(["x"])
    Flaky(fake, times=3)
    minion = engine(fake, outage_timeout=30)
    minion.open()  # the broker is back after three failures: no error
    assert [d.param for d in minion.take(1, 1)] == ["x"]


def test_an_outage_longer_than_the_timeout_is_an_error(fake: FakePulsar) -> None:
    Flaky(fake, times=1000)
    minion = engine(fake, outage_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(EngineError, match="MINION_OUTAGE_TIMEOUT"):
        minion.open()
    assert 0.4 < time.monotonic() - started < 5


def test_a_consumer_that_lost_its_broker_is_an_outage_never_an_empty_topic(
        fake: FakePulsar) -> None:
    minion = engine(fake, outage_timeout=30)
    minion.open()
    assert minion.reachable_since() is not None
    fake.connected = False  # the broker restarts: receive only times out meanwhile
    came_back: list[float] = []
    seen_down: list[Optional[float]] = []

    def broker_back() -> None:
        seen_down.append(minion.reachable_since())  # the take below rides it out now
        came_back.append(time.monotonic())
        fake.connected = True

    timer = threading.Timer(0.8, broker_back)
    timer.start()
    try:
        assert minion.take(1, 0.05) == []  # only once the consumer is connected again
    finally:
        timer.join()
    assert seen_down == [None]  # an outage while it lasted, never "empty"
    # A broker that just restarted redelivers in its own time: idle time counts only
    # once it had its operation timeout to do so (or a message came).
    since = minion.reachable_since()
    assert since is not None and since >= came_back[0] + minion.client.operation_timeout
    engine(fake).fill(["x"])
    assert [d.param for d in minion.take(1, 1)] == ["x"]
    since = minion.reachable_since()
    assert since is not None and since <= time.monotonic()


def test_a_dead_minion_messages_come_back(fake: FakePulsar) -> None:
    engine(fake).fill(["held"])
    first = engine(fake)
    first.open()
    (delivery,) = first.take(1, 1)
    first.close()  # its connection drops: the broker redelivers
    second = engine(fake)
    second.open()
    (again,) = second.take(1, 1)
    assert (again.param, again.attempt) == ("held", 2)


def test_decoders(fake: FakePulsar) -> None:
    engine(fake).fill(["plain", '{"x": 1}'])
    producer = fake.Client("x").create_producer("params")
    producer.send(b"\xff\xfe")
    as_text = engine(fake)
    as_text.open()
    taken = as_text.take(3, 0.5)
    assert [d.param for d in taken[:2]] == ["plain", '{"x": 1}']
    assert "not UTF-8" in (taken[2].error or "")
    for delivery in taken:
        as_text.release(delivery)
    as_json = engine(fake, decoder="json")
    as_json.open()
    by_param = {repr(d.param): d for d in as_json.take(3, 0.5)}
    assert by_param["{'x': 1}"].error is None
    assert "not JSON" in (by_param["'plain'"].error or "")


def test_the_minion_loop_on_the_stand_in(fake: FakePulsar) -> None:
    engine(fake).fill(["1", "2", "boom", "3"])
    ran: list[str] = []

    def work(param: str) -> None:
        ran.append(param)
        if param == "boom":
            raise RuntimeError("boom")

    settings = Settings.from_env(
        {"MINION_ENGINE": "pulsar", "PULSAR_TOPIC": "params", "MINION_IDLE_TIMEOUT": "0.5",
         "MINION_MAX_ATTEMPTS": "2", "MINION_CONCURRENCY": "2"}
    )
    callback = FuncCallback(work, mode="thread")
    code = Minion(callback, engine=engine(fake, max_attempts=2), settings=settings).run()
    assert code == 1  # one dead letter
    assert sorted(ran) == ["1", "2", "3", "boom", "boom"]
    assert fake.broker.backlog("params-minionize-DLQ", "minionize") == [b"boom"]


def test_settings(fake: FakePulsar) -> None:
    with pytest.raises(ConfigError, match="PULSAR_TOPIC is not set"):
        PulsarEngine.from_settings(Settings.from_env({"MINION_ENGINE": "pulsar"}))
    with pytest.raises(ConfigError, match="PULSAR_DECODER"):
        PulsarEngine.from_settings(
            Settings.from_env({"PULSAR_TOPIC": "t", "PULSAR_DECODER": "xml"})
        )
    built = PulsarEngine.from_settings(
        Settings.from_env({"PULSAR_TOPIC": "t", "PULSAR_SUBSCRIPTION": "s",
                           "MINION_MAX_ATTEMPTS": "5", "PULSAR_DECODER": "json"})
    )
    assert (built.client.topic, built.client.subscription, built.decoder, built.max_attempts) == (
        "t", "s", "json", 5)
    assert built.client.connection == "pulsar://localhost:6650"
    assert built.client.dead_letter_topic == "t-s-DLQ"
    assert engine_class("pulsar") is PulsarEngine


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pulsar", None)  # import pulsar -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'minionize\[pulsar\]'"):
        PulsarEngine(topic="t")


# -- the real client's signatures ------------------------------------------------------------


def exercise_everything(fake: FakePulsar) -> None:
    """Every engine operation, so that every call it makes is recorded."""
    engine(fake, decoder="json").fill([1, 2, 3])
    minion = engine(fake, decoder="json")
    minion.open()
    a, b, c = minion.take(3, 0.5)
    minion.ack(a)
    minion.retry(b, "failed")
    minion.release(c)
    minion.take(1, 0.5)
    d = minion.take(1, 0.5)[0]
    minion.dead_letter(d, "dead")
    assert minion.take(1, 0.05) == []  # an empty topic: is the consumer connected?
    minion.requeue_dead()
    minion.close()


def test_every_call_exists_in_the_real_client(fake: FakePulsar) -> None:
    pulsar = pytest.importorskip("pulsar")
    exercise_everything(fake)
    real = {
        "Client": pulsar.Client,
        "ConsumerDeadLetterPolicy": pulsar.ConsumerDeadLetterPolicy,
        "Client.subscribe": pulsar.Client.subscribe,
        "Client.create_producer": pulsar.Client.create_producer,
        "Client.close": pulsar.Client.close,
        "Consumer.receive": pulsar.Consumer.receive,
        "Consumer.acknowledge": pulsar.Consumer.acknowledge,
        "Consumer.negative_acknowledge": pulsar.Consumer.negative_acknowledge,
        "Consumer.is_connected": pulsar.Consumer.is_connected,
        "Consumer.close": pulsar.Consumer.close,
        "Producer.send": pulsar.Producer.send,
        "Producer.flush": pulsar.Producer.flush,
        "Producer.close": pulsar.Producer.close,
    }
    used = {name for name, _, _ in fake.calls}
    assert used == set(real), f"calls not checked: {used ^ set(real)}"
    for name, args, kwargs in fake.calls:
        signature = inspect.signature(real[name])
        self_arg = () if name in ("Client", "ConsumerDeadLetterPolicy") else (None,)
        try:
            signature.bind(*self_arg, *args, **kwargs)
        except TypeError as exc:
            raise AssertionError(f"pulsar.{name}{signature} rejects {args} {kwargs}: {exc}") from None

    # What the engine reads of a message, and the names it uses from the module.
    for method in ("data", "properties", "message_id", "redelivery_count"):
        assert list(inspect.signature(getattr(pulsar.Message, method)).parameters) == ["self"]
    assert pulsar.ConsumerType.Shared is not None
    assert pulsar.InitialPosition.Earliest is not None
    assert issubclass(pulsar.Timeout, pulsar.PulsarException)
    assert issubclass(pulsar.PulsarException, Exception)
    # The real policy accepts the engine's arguments (it is built offline).
    for name, args, kwargs in fake.calls:
        if name == "ConsumerDeadLetterPolicy":
            policy = pulsar.ConsumerDeadLetterPolicy(*args, **kwargs)
            assert policy.max_redeliver_count == 3
            assert policy.dead_letter_topic == "params-minionize-DLQ"


def test_real_client_unreachable_broker_is_a_clean_error() -> None:
    """The real client takes the engine's arguments (its type checks pass) and an
    unreachable broker, once MINION_OUTAGE_TIMEOUT is over, becomes one EngineError
    naming the variables to check."""
    pytest.importorskip("pulsar")
    minion = PulsarEngine(
        topic="params", connection=f"pulsar://127.0.0.1:{free_port()}", operation_timeout=1,
        outage_timeout=1,
    )
    started = time.monotonic()
    with pytest.raises(EngineError, match="PULSAR_CONNECTION.*MINION_OUTAGE_TIMEOUT|"
                                          "MINION_OUTAGE_TIMEOUT.*PULSAR_CONNECTION"):
        minion.open()
    assert time.monotonic() - started < 10
    minion.close()
    with pytest.raises(ConfigError, match="PULSAR_CONNECTION"):
        PulsarEngine(topic="t", connection="http//nope").open()


def test_the_client_never_logs_through_python_logging(fake: FakePulsar) -> None:
    """A Python logger given to pulsar-client makes the process abort now and then at
    exit ("terminate called without an active exception", apache/pulsar-client-python
    issue 256; seen here with real minions): the client gets its own C++ logger."""
    pulsar = pytest.importorskip("pulsar")
    fake.FileLogger = pulsar.FileLogger  # type: ignore[attr-defined]
    fake.LoggerLevel = pulsar.LoggerLevel  # type: ignore[attr-defined]
    minion = engine(fake)
    minion.open()
    minion.close()
    [(_, _, kwargs)] = [call for call in fake.calls if call[0] == "Client"]
    assert not isinstance(kwargs.get("logger"), logging.Logger)
    assert isinstance(kwargs.get("logger"), pulsar.FileLogger)
