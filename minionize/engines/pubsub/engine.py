"""The ``pubsub`` engine (``google`` is an alias): params are messages of a Google Cloud
Pub/Sub subscription shared by every minion.

``GOOGLE_PROJECT_ID``, ``GOOGLE_TOPIC_ID`` and ``GOOGLE_SUBSCRIPTION`` name the queue;
the topic and the subscription are created when missing (``PUBSUB_EMULATOR_HOST`` and
``GOOGLE_APPLICATION_CREDENTIALS`` are read by the client library itself).

* take: a unary Pull asking for exactly the free task slots, so a minion never holds a
  message it cannot run. The client library's streaming pull was measured to hold far
  more than its ``FlowControl.max_messages`` (the emulator ignores the limit the client
  sends; the service treats it as a hint), leasing the surplus away from idle minions.
* lease: every message taken is leased for ``MINION_LEASE`` seconds when it is set (10 to
  600), else for the subscription's ack deadline; :meth:`PubSubEngine.extend` renews the
  leases of running messages every third of that (ModifyAckDeadline). A dead minion's
  messages come back when their lease runs out.
* attempt: the server's ``delivery_attempt`` when the subscription has a dead-letter
  policy; otherwise the ``minion_attempt`` attribute, which a retry sets on the copy it
  publishes (the failed message is acked once the copy is published).
* ack on success; ModifyAckDeadline 0 (a nack) on retry with a dead-letter policy, and
  on release without one. With a policy the server counts every delivery, so a release
  publishes a copy carrying the attempts counted so far (``minion_tries``; attempt =
  that + ``delivery_attempt``) and acks the original: a graceful stop costs no attempt.
* dead letter, first that applies: the subscription's dead-letter policy (nack: the
  server moves the message after its ``max_delivery_attempts`` deliveries; a message
  delivered more than ``MINION_MAX_ATTEMPTS`` times is nacked unrun meanwhile);
  ``MINION_DEAD_LETTER_TOPIC`` (a copy with a ``reason`` attribute, then ack); else the
  message stays on the subscription, hidden for a minute, and a warning says so every time.
* outages: a call that fails because the service cannot be reached (unavailable,
  internal error, aborted) is retried under the one outage policy
  (``MINION_OUTAGE_TIMEOUT``, see ``kit.Outage``), then the minion stops (exit 2).
* what it cannot do: ``fill`` cannot skip params already published (Pub/Sub keeps no
  record of them); ``status`` has the shared keys but all None (the API does not tell
  the backlog); without a dead-letter policy an expired lease (a minion killed while
  running the param) does not count an attempt (the server gives no delivery count).

The engine holds a :class:`~.client.PubSubClient` (``client.py``: the clients, the
calls, the translation of errors) and the subscription's :class:`~.policy.DeadLetters`
(``policy.py``), and hands ``minion-queue``'s verbs (fill, list, requeue_dead, status)
to a :class:`~.admin.PubSubAdmin` over both (``admin.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from ...errors import ConfigError, EngineError
from ...params import decode_param
from ..base import Delivery, Engine
from ..kit import DEFAULT_OUTAGE_SECONDS, Interrupted
from .admin import PubSubAdmin
from .client import (
    ATTEMPT_ATTRIBUTE,
    ID_ATTRIBUTE,
    REASON_ATTRIBUTE,
    SUBSCRIPTION_ATTRIBUTE,
    TRIES_ATTRIBUTE,
    Handle,
    PubSubClient,
    as_int,
    path,
    quietly,
    short,
    warn,
)
from .dead_letters import DeadLetters

if TYPE_CHECKING:
    from ...config import Settings

DECODERS = ("identity", "json")
#: Lease bounds of the service (seconds).
MIN_LEASE, MAX_LEASE = 10, 600
#: Wait between two pulls that came back empty at once.
POLL_SECONDS = 0.25


class PubSubEngine(Engine):
    """A Pub/Sub subscription as a queue of params (see the module docstring)."""

    name = "pubsub"
    #: The subscription's connection and names, where its failed params go, and the
    #: administration of the subscription over both.
    client: PubSubClient
    dead: DeadLetters
    admin: PubSubAdmin

    def __init__(
        self,
        *,
        project: str,
        topic: str,
        subscription: str,
        decoder: str = "identity",
        max_attempts: int = 3,
        lease: Optional[float] = None,
        dead_letter_topic: Optional[str] = None,
        outage_timeout: float = DEFAULT_OUTAGE_SECONDS,
    ) -> None:
        if decoder not in DECODERS:
            raise ConfigError(f"GOOGLE_DECODER={decoder!r} is not one of {', '.join(DECODERS)}")
        self.project = project
        self.client = PubSubClient(
            topic=path("topics", project, topic, "GOOGLE_TOPIC_ID"),
            subscription=path("subscriptions", project, subscription, "GOOGLE_SUBSCRIPTION"),
            outage_timeout=outage_timeout,
        )
        self.dead = DeadLetters(self.client, path(
            "topics", project, dead_letter_topic, "MINION_DEAD_LETTER_TOPIC"
        ) if dead_letter_topic else None)
        self.admin = PubSubAdmin(self.client, self.dead, decoder=decoder)
        self.decoder = decoder
        self.max_attempts = max_attempts
        self.lease_setting = lease
        #: Set by open(): MINION_LEASE, else the subscription's ack deadline.
        self.lease: int = self.dead.ack_deadline

    @classmethod
    def from_settings(cls, settings: Settings) -> PubSubEngine:
        from ...config import Settings as SettingsClass

        env = settings.env
        project = env.required(
            "GOOGLE_PROJECT_ID", "set it to your Google Cloud project (any name with the emulator)"
        )
        topic = env.required("GOOGLE_TOPIC_ID", "set it to the topic that params are published to")
        subscription = env.required(
            "GOOGLE_SUBSCRIPTION",
            "set it to the subscription the minions share (it is created if missing)",
        )
        explicit_lease = env.raw("MINION_LEASE") is not None or settings.lease != SettingsClass.lease
        return cls(
            project=project,
            topic=topic,
            subscription=subscription,
            decoder=env.choice("GOOGLE_DECODER", "identity", DECODERS),
            max_attempts=settings.max_attempts,
            lease=settings.lease if explicit_lease else None,
            dead_letter_topic=env.str("MINION_DEAD_LETTER_TOPIC"),
            outage_timeout=settings.outage_timeout,
        )

    # -- taking ----------------------------------------------------------------------
    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        """Pull at most ``max_count`` messages, polling until one comes or ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                received = self.client.pull(max_count, deadline)
            except Interrupted:
                return []  # the minion stops while the server is away
            remaining = deadline - time.monotonic()
            if received or remaining <= 0:
                break
            time.sleep(min(POLL_SECONDS, remaining))
        if not received:
            return []
        if self.lease != self.dead.ack_deadline:
            try:
                self.client.modify([r.ack_id for r in received], self.lease, "lease")
            except EngineError as exc:  # the next heartbeat tries again
                warn(str(exc))
        return [d for d in (self._decode(r) for r in received) if d is not None]

    def stop_waiting(self) -> None:
        self.client.calls.outage.stopping.set()

    def _decode(self, received: Any) -> Optional[Delivery]:
        message = received.message
        attributes = dict(message.attributes)
        handle = Handle(received.ack_id, bytes(message.data), attributes)
        target = attributes.get(SUBSCRIPTION_ATTRIBUTE)
        if target is not None and target != self.client.subscription:
            # A retry copy meant for another subscription of the same topic.
            quietly(self.client.acknowledge, handle)
            return None
        if self.dead.policy_topic is not None:
            # The server counts the deliveries of this copy; a release's copy carries
            # the attempts counted before it.
            attempt = as_int(attributes.get(TRIES_ATTRIBUTE)) + max(1, int(received.delivery_attempt or 1))
        else:
            attempt = max(1, as_int(attributes.get(ATTEMPT_ATTRIBUTE, "1")))
        param_id = attributes.get(ID_ATTRIBUTE) or str(message.message_id)
        if self.dead.policy_topic is not None and attempt > self.max_attempts:
            # Failed MINION_MAX_ATTEMPTS times already: the server moves it to the
            # dead-letter topic after its max_delivery_attempts; do not run it again.
            quietly(self.client.modify, [handle.ack_id], 0, "nack")
            return None
        delivery = Delivery(param=None, id=param_id, attempt=attempt, handle=handle)
        delivery.param, delivery.error = decode_param(handle.data, self.decoder, "GOOGLE_DECODER")
        return delivery

    def reachable_since(self) -> Optional[float]:
        return self.client.calls.reachable_since()

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery, result: Optional[str] = None) -> None:
        self.client.acknowledge(delivery.handle)

    def retry(self, delivery: Delivery, reason: str) -> None:
        handle: Handle = delivery.handle
        if self.dead.policy_topic is not None:
            self.client.modify([handle.ack_id], 0, "nack")  # the server counts the delivery
            return
        extra = {ATTEMPT_ATTRIBUTE: str(delivery.attempt + 1), REASON_ATTRIBUTE: short(reason)}
        self.client.requeue_copy(delivery, extra, "retry", "nack", "this attempt will not be counted")

    def release(self, delivery: Delivery) -> None:
        """A nack, which counts nothing without a dead-letter policy. With one, the
        server would count the delivery: publish a copy that carries the attempts
        counted so far instead, then ack the original."""
        handle: Handle = delivery.handle
        if self.dead.policy_topic is None:
            self.client.modify([handle.ack_id], 0, "release")
            return
        extra = {TRIES_ATTRIBUTE: str(delivery.attempt - 1)}
        self.client.requeue_copy(delivery, extra, "release", "release",
                                 "the dead-letter policy counts this delivery")

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.dead.settle(delivery, reason)

    # -- leases ----------------------------------------------------------------------
    def lease_renewal_interval(self) -> Optional[float]:
        return self.lease / 3.0

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        ack_ids = [d.handle.ack_id for d in deliveries if d.handle is not None]
        if ack_ids:
            self.client.modify(ack_ids, self.lease, "extend the leases of")

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        """Connect; create the topic and the subscription when missing; read the
        subscription's ack deadline and dead-letter policy."""
        self.dead.read(self.client.ensure_subscription(self.client.subscription), self.max_attempts)
        lease = self.lease_setting if self.lease_setting is not None else self.dead.ack_deadline
        self.lease = int(min(max(lease, MIN_LEASE), MAX_LEASE))
        self.dead.ensure_reader()

    def close(self) -> None:
        self.client.close()

    def describe(self) -> str:
        return f"pubsub subscription {self.client.subscription} (topic {self.client.topic})"

    # -- administration (minion-queue): PubSubAdmin, in admin.py ---------------------
    def administration(self) -> PubSubAdmin:
        return self.admin
