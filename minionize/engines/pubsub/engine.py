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
  (``MINION_OUTAGE_TIMEOUT``, see ``_kit.Outage``), then the minion stops (exit 2).
* what it cannot do: ``fill`` cannot skip params already published (Pub/Sub keeps no
  record of them); ``status`` has the shared keys but all None (the API does not tell
  the backlog); without a dead-letter policy an expired lease (a minion killed while
  running the param) does not count an attempt (the server gives no delivery count).

The client calls it shares with ``minion-queue``'s verbs are in ``_pubsub_client.py``,
with the copy that a retry or a release publishes; those verbs (fill, list,
requeue_dead, status) are in ``_pubsub_admin.py``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from ...errors import ConfigError, EngineError
from ..base import Delivery, Engine
from ..kit import DEFAULT_OUTAGE_SECONDS, Outage, redact
from .admin import PubSubAdmin
from .client import (
    ATTEMPT_ATTRIBUTE,
    CREATED_ACK_DEADLINE,
    ID_ATTRIBUTE,
    REASON_ATTRIBUTE,
    SUBSCRIPTION_ATTRIBUTE,
    TRIES_ATTRIBUTE,
    Handle,
    api_errors,
    path,
    short,
    warn,
)

if TYPE_CHECKING:
    from ...config import Settings

DECODERS = ("identity", "json")
#: Lease bounds of the service (seconds).
MIN_LEASE, MAX_LEASE = 10, 600
#: How long a failed message with nowhere to go stays hidden before it comes back.
KEEP_SECONDS = 60
#: Wait between two pulls that came back empty at once.
POLL_SECONDS = 0.25


class PubSubEngine(PubSubAdmin, Engine):
    """A Pub/Sub subscription as a queue of params (see the module docstring)."""

    name = "pubsub"

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
        self.topic = path("topics", project, topic, "GOOGLE_TOPIC_ID")
        self.subscription = path("subscriptions", project, subscription, "GOOGLE_SUBSCRIPTION")
        self.decoder = decoder
        self.max_attempts = max_attempts
        self.lease_setting = lease
        self.dead_letter_topic = (
            path("topics", project, dead_letter_topic, "MINION_DEAD_LETTER_TOPIC")
            if dead_letter_topic
            else None
        )
        #: Set by open() from the subscription: its dead-letter policy, if any.
        self.policy_topic: Optional[str] = None
        self.policy_max_deliveries: Optional[int] = None
        self.ack_deadline: int = CREATED_ACK_DEADLINE
        self.lease: int = CREATED_ACK_DEADLINE
        self._start_clients()
        self._outage = Outage(f"pubsub subscription {self.subscription}", outage_timeout)

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
        errors = api_errors()
        deadline = time.monotonic() + timeout
        request = {"subscription": self.subscription, "max_messages": max(1, max_count)}

        def pull() -> list[Any]:
            try:
                response = self._client().pull(
                    request=request, timeout=max(deadline - time.monotonic(), 1.0), retry=None
                )
            except errors.DeadlineExceeded:
                return []
            except errors.NotFound:
                raise EngineError(f"the subscription {self.subscription} no longer exists") from None
            return list(response.received_messages)

        while True:
            received = self._call(f"pull from {self.subscription}", pull)
            remaining = deadline - time.monotonic()
            if received or remaining <= 0:
                break
            time.sleep(min(POLL_SECONDS, remaining))
        if not received:
            return []
        if self.lease != self.ack_deadline:
            try:
                self._modify([r.ack_id for r in received], self.lease, "lease")
            except EngineError as exc:  # the next heartbeat tries again
                warn(str(exc))
        return [d for d in (self._decode(r) for r in received) if d is not None]

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery, result: Optional[str] = None) -> None:
        self._acknowledge(delivery.handle)

    def retry(self, delivery: Delivery, reason: str) -> None:
        handle: Handle = delivery.handle
        if self.policy_topic is not None:
            self._modify([handle.ack_id], 0, "nack")  # the server counts the delivery
            return
        extra = {ATTEMPT_ATTRIBUTE: str(delivery.attempt + 1), REASON_ATTRIBUTE: short(reason)}
        self._requeue_copy(delivery, extra, "retry", "nack", "this attempt will not be counted")

    def release(self, delivery: Delivery) -> None:
        """A nack, which counts nothing without a dead-letter policy. With one, the
        server would count the delivery: publish a copy that carries the attempts
        counted so far instead, then ack the original."""
        handle: Handle = delivery.handle
        if self.policy_topic is None:
            self._modify([handle.ack_id], 0, "release")
            return
        extra = {TRIES_ATTRIBUTE: str(delivery.attempt - 1)}
        self._requeue_copy(delivery, extra, "release", "release",
                           "the dead-letter policy counts this delivery")

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        handle: Handle = delivery.handle
        if self.policy_topic is not None:
            self._modify([handle.ack_id], 0, "nack")
            warn(
                f"param {delivery.id} failed attempt {delivery.attempt} ({reason}): the"
                f" subscription's dead-letter policy moves it to {self.policy_topic} after"
                f" {self.policy_max_deliveries} deliveries"
            )
            return
        if self.dead_letter_topic is not None:
            attributes = dict(handle.attributes)
            attributes.pop(SUBSCRIPTION_ATTRIBUTE, None)
            attributes.update(
                {
                    REASON_ATTRIBUTE: short(reason),
                    ATTEMPT_ATTRIBUTE: str(delivery.attempt),
                    ID_ATTRIBUTE: delivery.id,
                    "minion_source_subscription": self.subscription,
                }
            )
            try:
                self._publish(self.dead_letter_topic, handle.data, attributes)
            except EngineError as exc:
                self._keep(delivery, reason,
                           f"publishing it to {self.dead_letter_topic} failed: {redact(str(exc))}")
                return
            self._acknowledge(handle)
            return
        self._keep(
            delivery,
            reason,
            "neither the subscription has a dead-letter policy nor MINION_DEAD_LETTER_TOPIC is set",
        )

    def _keep(self, delivery: Delivery, reason: str, why: str) -> None:
        """Never ack a failure: leave it on the subscription, hidden for a while."""
        self._modify([delivery.handle.ack_id], KEEP_SECONDS, "keep")
        warn(
            f"PARAM {delivery.id} FAILED {delivery.attempt} ATTEMPTS ({reason}) AND STAYS ON"
            f" {self.subscription}: {why}; it comes back in {KEEP_SECONDS}s"
        )

    # -- leases ----------------------------------------------------------------------
    def lease_renewal_interval(self) -> Optional[float]:
        return self.lease / 3.0

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        ack_ids = [d.handle.ack_id for d in deliveries if d.handle is not None]
        if ack_ids:
            self._modify(ack_ids, self.lease, "extend the leases of")

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        """Connect; create the topic and the subscription when missing; read the
        subscription's ack deadline and dead-letter policy."""
        self._read_policy(self._ensure_subscription(self.subscription))
        lease = self.lease_setting if self.lease_setting is not None else self.ack_deadline
        self.lease = int(min(max(lease, MIN_LEASE), MAX_LEASE))
        dead_topic = self.dead_topic()
        if dead_topic is not None:
            self._ensure_reader(dead_topic)

    def close(self) -> None:
        self._close_clients()

    def describe(self) -> str:
        return f"pubsub subscription {self.subscription} (topic {self.topic})"

    # -- administration (minion-queue): PubSubAdmin, in _pubsub_admin.py -----------
