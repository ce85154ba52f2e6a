"""The ``pulsar`` engine: params are the messages of an Apache Pulsar topic.

Every minion is a consumer of one Shared subscription (``PULSAR_SUBSCRIPTION``) on
``PULSAR_TOPIC``, so the broker spreads the messages over the minions.

* take: ``receive(timeout_millis=...)``; the client's Timeout means "nothing now", never
  a crash. The receiver queue holds one message, so a minion never hoards what others
  could run. attempt = ``redelivery_count() + 1``.
* ack: ``acknowledge``. retry: ``negative_acknowledge``; the broker redelivers the
  message after ``PULSAR_NACK_DELAY`` seconds with its redelivery count grown by one.
* release (SIGTERM): Pulsar counts every redelivery (a nack too), so a release sends a
  copy of the message to the topic, carrying its id (``minion-id``) and the attempts that
  already ran (``minion-counted``), then acknowledges the original: the param is back at
  once and its next attempt has the number of this one. A crash between the two leaves
  both (run twice at worst, never lost). attempt = ``minion-counted`` +
  ``redelivery_count()`` + 1.
* dead_letter: the message is sent to the dead-letter topic with the reason in its
  properties (``minion-reason``), then acknowledged. The subscription also carries the
  client's dead-letter policy (max redeliveries = MINION_MAX_ATTEMPTS, same topic) as a
  backstop for messages that come back too often through releases.
* leases: none. Pulsar redelivers a minion's unacknowledged messages when its
  connection drops (the minion died), and never while it runs (no ack timeout is set),
  however long the task.

Outages: a call that fails because the broker cannot be reached (connect, lookup,
timeout errors) is retried for ``MINION_OUTAGE_TIMEOUT`` seconds (:class:`._kit.Outage`),
then is an EngineError; meanwhile the client reconnects by itself and the broker keeps
the messages of the subscription.

Administration (``_pulsar_admin.py``): ``fill`` creates the subscription first (Pulsar
keeps a topic's messages only for its subscriptions), then publishes; ``requeue_dead``
moves the dead letters back; ``status`` reads the broker's REST admin API.

Tested against an in-memory stand-in of the client (tests/unit) and against a real
Apache Pulsar standalone broker (tests/integration/test_pulsar_broker.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError, EngineError
from ._kit import DEFAULT_OUTAGE_SECONDS, Outage, Unreachable, optional_import, redact
from ._pulsar_admin import ATTEMPT, COUNTED, ORIGIN, PARAM_ID, REASON, PulsarAdmin
from .base import Delivery, Engine, decode_param

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

DEFAULT_CONNECTION = "pulsar://localhost:6650"
DEFAULT_SUBSCRIPTION = "minionize"
#: Client errors that mean "the broker cannot be reached now" (ridden out, see Outage).
TRANSIENT = ("ConnectError", "Timeout", "NotConnected", "LookupError", "ServiceUnitNotReady",
             "BrokerMetadataError", "BrokerPersistenceError", "TooManyLookupRequestException",
             "AlreadyClosed")


def _keep_sockets_from_tasks() -> None:
    """Make this process's sockets close-on-exec. The C++ client opens its broker
    connections inheritable, and tasks are spawned without closing descriptors: a task
    would keep the connection of a minion that was SIGKILLed open, and the broker would
    never give that minion's messages to another one while the task lives."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # not Linux: nothing to do cheaply
        return
    for fd in fds:
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode) and os.get_inheritable(fd):
                os.set_inheritable(fd, False)
        except OSError:  # closed meanwhile (the listing's own descriptor, a reconnection)
            continue


class PulsarEngine(PulsarAdmin, Engine):
    """Params from a Pulsar topic through a Shared subscription."""

    name = "pulsar"

    def __init__(
        self,
        *,
        topic: str,
        connection: str = DEFAULT_CONNECTION,
        subscription: str = DEFAULT_SUBSCRIPTION,
        decoder: str = "identity",
        max_attempts: int = 3,
        dead_letter_topic: Optional[str] = None,
        nack_delay: float = 1.0,
        operation_timeout: int = 15,
        outage_timeout: float = DEFAULT_OUTAGE_SECONDS,
        client_log: Optional[str] = None,
        admin_url: Optional[str] = None,
        module: Any = None,
    ) -> None:
        self.topic, self.connection, self.subscription = topic, connection, subscription
        self.decoder, self.max_attempts, self.nack_delay = decoder, max_attempts, nack_delay
        self.dead_letter_topic = dead_letter_topic or f"{topic}-{subscription}-DLQ"
        # A client call must give up within the outage limit, or the limit means nothing.
        self.operation_timeout = max(1, min(operation_timeout, int(outage_timeout)))
        self.client_log, self.admin_url = client_log, admin_url
        #: The pulsar module, or a stand-in with the same calls (tests).
        self._pulsar = (
            module if module is not None else optional_import("pulsar", "the pulsar engine", "pulsar")
        )
        self._client: Any = None
        self._consumer: Any = None
        self._dead_producer: Any = None
        self._release_producer: Any = None
        #: Deliveries handed out by the current consumer (see _drop_idle_consumer).
        self._handed_out = 0
        self._lock = threading.Lock()
        pulsar = self._pulsar
        self._transient = tuple(getattr(pulsar, name) for name in TRANSIENT
                                if isinstance(getattr(pulsar, name, None), type))
        self._outage = Outage(f"pulsar topic {topic!r} at {redact(connection)}", outage_timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> PulsarEngine:
        env = settings.env
        return cls(
            topic=env.required(
                "PULSAR_TOPIC",
                "set it to the topic holding the params, e.g. persistent://public/default/params",
            ),
            connection=env.str("PULSAR_CONNECTION", DEFAULT_CONNECTION) or DEFAULT_CONNECTION,
            subscription=env.str("PULSAR_SUBSCRIPTION", DEFAULT_SUBSCRIPTION)
            or DEFAULT_SUBSCRIPTION,
            decoder=env.choice("PULSAR_DECODER", "identity", ("identity", "json")),
            max_attempts=settings.max_attempts,
            dead_letter_topic=env.str("PULSAR_DEAD_LETTER_TOPIC"),
            nack_delay=env.seconds("PULSAR_NACK_DELAY", 1.0, allow_zero=True) or 0.0,
            outage_timeout=settings.outage_timeout,
            client_log=env.str("PULSAR_CLIENT_LOG"),
            admin_url=env.str("PULSAR_ADMIN_URL"),
        )

    # -- taking ----------------------------------------------------------------------
    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        if self._consumer is None and self._client is not None:  # see _drop_idle_consumer
            self._consumer = self._subscribe(self.topic, dead_letter_policy=True)
        consumer = self._require_consumer()
        _keep_sockets_from_tasks()  # the client may have reconnected: new sockets
        deliveries: list[Delivery] = []
        wait_ms = max(1, int(timeout * 1000))
        while len(deliveries) < max_count:
            wait = wait_ms
            message = self._call("receive", lambda: self._receive(consumer, wait))  # noqa: B023
            if message is None:
                break  # nothing now: an empty topic is waiting, not an error
            deliveries.append(self._decode(message))
            self._handed_out += 1
            wait_ms = 1  # more only if already here
        return deliveries

    def _receive(self, consumer: Any, wait_ms: int) -> Any:
        try:
            return consumer.receive(timeout_millis=wait_ms)
        except self._pulsar.Timeout:
            # While the broker is down, receive just times out (the client reconnects
            # in the background): that is an outage, not an empty topic, so that a
            # minion does not end idle while its broker restarts.
            connected = getattr(consumer, "is_connected", None)
            if connected is not None and not connected():
                raise self._pulsar.ConnectError("the consumer is not connected to the broker") from None
            return None

    def _decode(self, message: Any) -> Delivery:
        properties = message.properties() or {}
        try:
            counted = max(0, int(properties.get(COUNTED, 0)))
        except ValueError:
            counted = 0
        attempt = counted + int(message.redelivery_count()) + 1
        param_id = properties.get(PARAM_ID) or str(message.message_id())
        delivery = Delivery(param=None, id=param_id, attempt=attempt, handle=message)
        delivery.param, delivery.error = decode_param(
            bytes(message.data()), self.decoder, "PULSAR_DECODER"
        )
        if delivery.error is None and attempt > self.max_attempts:
            delivery.error = (
                f"attempt {attempt} > MINION_MAX_ATTEMPTS={self.max_attempts}: delivered too "
                "often (minions released it, or died running it)"
            )
        return delivery

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery) -> None:
        consumer = self._require_consumer()
        self._call("acknowledge", lambda: consumer.acknowledge(delivery.handle))

    def retry(self, delivery: Delivery, reason: str) -> None:
        consumer = self._require_consumer()
        self._call("negative_acknowledge", lambda: consumer.negative_acknowledge(delivery.handle))

    def release(self, delivery: Delivery) -> None:
        # A nack would count an attempt (see the module docstring): send a copy that
        # says how many attempts ran before this one, then drop the original.
        message = delivery.handle
        properties = {k: v for k, v in (message.properties() or {}).items()
                      if k not in (PARAM_ID, COUNTED)}
        properties.update({PARAM_ID: delivery.id, COUNTED: str(max(0, delivery.attempt - 1))})
        producer = self._producer_for_releases()
        self._call("release (send)", lambda: producer.send(bytes(message.data()),
                                                         properties=properties))
        consumer = self._require_consumer()
        self._call("acknowledge", lambda: consumer.acknowledge(message))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        message = delivery.handle
        properties = dict(message.properties() or {})
        properties.update(
            {REASON: reason, ATTEMPT: str(delivery.attempt), ORIGIN: delivery.id}
        )
        producer = self._dead_letter_producer()
        self._call(f"send to the dead-letter topic {self.dead_letter_topic!r}",
                 lambda: producer.send(bytes(message.data()), properties=properties))
        consumer = self._require_consumer()
        self._call("acknowledge", lambda: consumer.acknowledge(message))

    def _producer_for_releases(self) -> Any:
        with self._lock:
            if self._release_producer is None:
                self._release_producer = self._call(
                    "create_producer", lambda: self._client.create_producer(self.topic))
            return self._release_producer

    def _dead_letter_producer(self) -> Any:
        with self._lock:
            if self._dead_producer is None:
                # A subscription on the dead-letter topic keeps what is sent there.
                self._subscribe(self.dead_letter_topic, dead_letter_policy=False).close()
                self._dead_producer = self._call(
                    "create_producer", lambda: self._client.create_producer(self.dead_letter_topic))
            return self._dead_producer

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        self._connect()
        self._consumer = self._subscribe(self.topic, dead_letter_policy=True)
        _keep_sockets_from_tasks()

    def close(self) -> None:
        for thing in (self._release_producer, self._dead_producer, self._consumer, self._client):
            if thing is not None:
                try:
                    thing.close()
                except Exception as exc:  # closing must not hide the run's outcome
                    log.warning("pulsar: closing: %s", exc)
        self._release_producer = self._dead_producer = self._consumer = self._client = None

    def describe(self) -> str:
        return (
            f"pulsar topic {self.topic!r} (subscription {self.subscription!r}) "
            f"at {redact(self.connection)}"
        )

    def _connect(self) -> None:
        if self._client is not None:
            return
        try:
            self._client = self._pulsar.Client(
                self.connection,
                operation_timeout_seconds=self.operation_timeout,
                connection_timeout_ms=5000,
                logger=self._client_logger(),
            )
        except ValueError as exc:
            raise ConfigError(
                f"PULSAR_CONNECTION={self.connection!r} is not a Pulsar URL ({exc}): "
                "use e.g. pulsar://localhost:6650"
            ) from None

    def _client_logger(self) -> Any:
        """The client's own C++ logger, never a Python one: with a Python logger the
        process aborts now and then at exit (pulsar-client-python issue 256). Its
        console logger writes to stdout, where task output goes, and it logs every
        reconnection attempt: so its log goes to ``PULSAR_CLIENT_LOG`` if set, else
        nowhere (failures reach the minion as exceptions, and outages are logged)."""
        pulsar = self._pulsar
        file_logger = getattr(pulsar, "FileLogger", None)
        if file_logger is None:  # a stand-in without loggers
            return None
        if self.client_log:
            return file_logger(pulsar.LoggerLevel.Info, self.client_log)
        return file_logger(pulsar.LoggerLevel.Error, os.devnull)

    def _subscribe(self, topic: str, dead_letter_policy: bool) -> Any:
        pulsar = self._pulsar
        policy = None
        if dead_letter_policy:
            policy = pulsar.ConsumerDeadLetterPolicy(
                max_redeliver_count=self.max_attempts,
                dead_letter_topic=self.dead_letter_topic,
                initial_subscription_name=self.subscription,
            )
        client = self._client
        return self._call(f"subscribe to {topic!r}", lambda: client.subscribe(
            topic,
            self.subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
            receiver_queue_size=1,
            negative_ack_redelivery_delay_ms=int(self.nack_delay * 1000),
            dead_letter_policy=policy,
        ))

    def _require_consumer(self) -> Any:
        if self._consumer is None:
            raise EngineError("the pulsar engine is not open")
        return self._consumer

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Client errors become ours: Unreachable while the broker cannot be reached
        (the outage policy rides it out), else EngineError."""
        try:
            yield
        except self._transient as exc:
            raise Unreachable(
                f"cannot reach the Pulsar broker at {redact(self.connection)} to {what} "
                f"({type(exc).__name__}: {redact(str(exc))}): check PULSAR_CONNECTION and that "
                "the broker runs"
            ) from None
        except self._pulsar.PulsarException as exc:
            raise EngineError(
                f"Pulsar {what} on {self.topic!r} failed ({type(exc).__name__}: "
                f"{redact(str(exc))}): check PULSAR_CONNECTION and PULSAR_TOPIC"
            ) from None

    # -- administration (minion-queue): PulsarAdmin, in _pulsar_admin.py -------------
