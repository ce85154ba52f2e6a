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
the messages of the subscription. ``receive`` times out both on an empty topic and while
the client reconnects: a timeout while the consumer is not connected
(``Consumer.is_connected()``) is an outage, so the idle timeout never counts it; once
connected again, it counts only after a message came or the broker had its operation
timeout to redeliver (a broker that just restarted dispatches in its own time).

Administration (``_pulsar_admin.py``): ``fill`` creates the subscription first (Pulsar
keeps a topic's messages only for its subscriptions), then publishes; ``requeue_dead``
moves the dead letters back; ``status`` reads the broker's REST admin API.

Tested against an in-memory stand-in of the client (tests/unit) and against a real
Apache Pulsar standalone broker (tests/integration/test_pulsar_broker.py).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Optional

from ..base import Delivery, Engine
from ..kit import DEFAULT_OUTAGE_SECONDS, Outage, optional_import, redact
from .admin import PulsarAdmin
from .client import ATTEMPT, COUNTED, ORIGIN, PARAM_ID, REASON, TRANSIENT, keep_sockets_from_tasks

if TYPE_CHECKING:
    from ...config import Settings

log = logging.getLogger("minionize.engines.pulsar")

DEFAULT_CONNECTION = "pulsar://localhost:6650"
DEFAULT_SUBSCRIPTION = "minionize"


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
        keep_sockets_from_tasks()  # the client may have reconnected: new sockets
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

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery, result: Optional[str] = None) -> None:
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
        self._call("release (send)",
                   lambda: producer.send(bytes(message.data()), properties=properties))
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

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        self._connect()
        self._consumer = self._subscribe(self.topic, dead_letter_policy=True)
        keep_sockets_from_tasks()

    def close(self) -> None:
        for thing in (self._release_producer, self._dead_producer, self._consumer, self._client):
            if thing is not None:
                try:
                    thing.close()
                except Exception as exc:  # closing must not hide the run's outcome
                    log.warning("pulsar: closing: %s", redact(str(exc)))
        self._release_producer = self._dead_producer = self._consumer = self._client = None

    def describe(self) -> str:
        return (
            f"pulsar topic {self.topic!r} (subscription {self.subscription!r}) "
            f"at {redact(self.connection)}"
        )

    # -- administration (minion-queue): PulsarAdmin, in _pulsar_admin.py -------------
