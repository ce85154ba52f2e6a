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
timeout errors) is retried for ``MINION_OUTAGE_TIMEOUT`` seconds (:class:`.kit.Outage`),
then is an EngineError; meanwhile the client reconnects by itself and the broker keeps
the messages of the subscription. ``receive`` times out both on an empty topic and while
the client reconnects: a timeout while the consumer is not connected
(``Consumer.is_connected()``) is an outage, so the idle timeout never counts it; once
connected again, it counts only after a message came or the broker had its operation
timeout to redeliver (a broker that just restarted dispatches in its own time).

The engine holds a :class:`~.client.PulsarClient` (``client.py``: the client library's
client, the consumer and producers, the translation of errors) and hands the
administration to a :class:`~.admin.PulsarAdmin` over it (``admin.py``): ``fill``
creates the subscription first (Pulsar keeps a topic's messages only for its
subscriptions), then publishes; ``requeue_dead`` moves the dead letters back; ``status``
reads the broker's REST admin API.

Tested against an in-memory stand-in of the client (tests/unit) and against a real
Apache Pulsar standalone broker (tests/integration/test_pulsar_broker.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ...params import decode_param
from ..base import Delivery, Engine
from ..kit import DEFAULT_OUTAGE_SECONDS, Interrupted, optional_import, redact
from .admin import PulsarAdmin
from .client import ATTEMPT, COUNTED, ORIGIN, PARAM_ID, REASON, PulsarClient, keep_sockets_from_tasks

if TYPE_CHECKING:
    from ...config import Settings

DEFAULT_CONNECTION = "pulsar://localhost:6650"
DEFAULT_SUBSCRIPTION = "minionize"


class PulsarEngine(Engine):
    """Params from a Pulsar topic through a Shared subscription."""

    name = "pulsar"
    #: The topic's connection and names; the administration of the topic over it.
    client: PulsarClient
    admin: PulsarAdmin

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
        self.decoder, self.max_attempts = decoder, max_attempts
        self.client = PulsarClient(
            module=module if module is not None else optional_import("pulsar", "the pulsar engine", "pulsar"),
            topic=topic, connection=connection, subscription=subscription,
            max_attempts=max_attempts,
            dead_letter_topic=dead_letter_topic or f"{topic}-{subscription}-DLQ",
            nack_delay=nack_delay,
            # A client call must give up within the outage limit, or the limit means nothing.
            operation_timeout=max(1, min(operation_timeout, int(outage_timeout))),
            client_log=client_log, outage_timeout=outage_timeout,
        )
        self.admin = PulsarAdmin(self.client, decoder=decoder, admin_url=admin_url)

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
        client = self.client
        consumer = client.consumer_for_take()
        keep_sockets_from_tasks()  # the client may have reconnected: new sockets
        deliveries: list[Delivery] = []
        wait_ms = max(1, int(timeout * 1000))
        while len(deliveries) < max_count:
            try:
                message = client.next_message(consumer, wait_ms)
            except Interrupted:
                break  # the minion stops while the broker is away
            if message is None:
                break  # nothing now: an empty topic is waiting, not an error
            deliveries.append(self._decode(message))
            wait_ms = 1  # more only if already here
        return deliveries

    def stop_waiting(self) -> None:
        self.client.calls.outage.stopping.set()

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

    def reachable_since(self) -> Optional[float]:
        return self.client.reachable_since()

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery, result: Optional[str] = None) -> None:
        consumer = self.client.require_consumer()
        self.client.calls("acknowledge", lambda: consumer.acknowledge(delivery.handle))

    def retry(self, delivery: Delivery, reason: str) -> None:
        consumer = self.client.require_consumer()
        self.client.calls("negative_acknowledge",
                          lambda: consumer.negative_acknowledge(delivery.handle))

    def release(self, delivery: Delivery) -> None:
        # A nack would count an attempt (see the module docstring): send a copy that
        # says how many attempts ran before this one, then drop the original.
        client, message = self.client, delivery.handle
        properties = {k: v for k, v in (message.properties() or {}).items()
                      if k not in (PARAM_ID, COUNTED)}
        properties.update({PARAM_ID: delivery.id, COUNTED: str(max(0, delivery.attempt - 1))})
        producer = client.producer_for_releases()
        client.calls("release (send)",
                     lambda: producer.send(bytes(message.data()), properties=properties))
        consumer = client.require_consumer()
        client.calls("acknowledge", lambda: consumer.acknowledge(message))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        client, message = self.client, delivery.handle
        properties = dict(message.properties() or {})
        properties.update(
            {REASON: reason, ATTEMPT: str(delivery.attempt), ORIGIN: delivery.id}
        )
        producer = client.dead_letter_producer()
        client.calls(f"send to the dead-letter topic {client.dead_letter_topic!r}",
                     lambda: producer.send(bytes(message.data()), properties=properties))
        consumer = client.require_consumer()
        client.calls("acknowledge", lambda: consumer.acknowledge(message))

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        self.client.open_consumer()
        keep_sockets_from_tasks()

    def close(self) -> None:
        self.client.close()

    def describe(self) -> str:
        client = self.client
        return (
            f"pulsar topic {client.topic!r} (subscription {client.subscription!r}) "
            f"at {redact(client.connection)}"
        )

    # -- administration (minion-queue): PulsarAdmin, in admin.py ---------------------
    def administration(self) -> PulsarAdmin:
        return self.admin
