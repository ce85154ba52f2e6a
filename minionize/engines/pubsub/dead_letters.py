"""Where a pubsub engine's failed params go (:class:`DeadLetters`), first that applies:
the subscription's dead-letter policy, read when the engine opens (with its ack
deadline); ``MINION_DEAD_LETTER_TOPIC``; else the subscription itself, the message
hidden for a while. The engine settles a dead letter here; its administration reads
the dead letters where this says."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

from ...errors import EngineError
from ..base import Delivery
from ..kit import redact
from .client import (
    ATTEMPT_ATTRIBUTE,
    CREATED_ACK_DEADLINE,
    ID_ATTRIBUTE,
    REASON_ATTRIBUTE,
    SUBSCRIPTION_ATTRIBUTE,
    Handle,
    PubSubClient,
    api_errors,
    short,
    warn,
)

#: How long a failed message with nowhere to go stays hidden before it comes back.
KEEP_SECONDS = 60


class DeadLetters:
    """The dead-letter route of the subscription of ``client``. ``topic`` is
    ``MINION_DEAD_LETTER_TOPIC`` (a path, or None); :meth:`read` learns the
    subscription's own policy, which comes first."""

    def __init__(self, client: PubSubClient, topic: Optional[str]) -> None:
        self.client = client
        self.topic = topic
        #: From the subscription (see :meth:`read`): its ack deadline and dead-letter policy.
        self.ack_deadline: int = CREATED_ACK_DEADLINE
        self.policy_topic: Optional[str] = None
        self.policy_max_deliveries: Optional[int] = None

    def dead_topic(self) -> Optional[str]:
        """Where dead letters go: the dead-letter policy's topic, else
        MINION_DEAD_LETTER_TOPIC, else nowhere (they stay on the subscription)."""
        return self.policy_topic or self.topic

    def read(self, info: Any, max_attempts: int) -> None:
        """The subscription's ack deadline and dead-letter policy (``info`` None: unknown)."""
        if info is None:
            return
        self.ack_deadline = int(info.ack_deadline_seconds or 10)
        policy = info.dead_letter_policy
        if policy is None or not policy.dead_letter_topic:
            return
        self.policy_topic = str(policy.dead_letter_topic)
        # The service's default when the field is 0.
        self.policy_max_deliveries = deliveries = int(policy.max_delivery_attempts or 5)
        if max_attempts > deliveries:
            warn(
                f"MINION_MAX_ATTEMPTS={max_attempts} but the dead-letter policy of"
                f" {self.client.subscription} moves a message after {deliveries} deliveries: that comes first"
            )
        if self.topic is not None:
            warn(
                f"{self.client.subscription} has a dead-letter policy: it is used, not"
                f" MINION_DEAD_LETTER_TOPIC={self.topic}"
            )

    def settle(self, delivery: Delivery, reason: str) -> None:
        """The engine's dead_letter: by the policy (a nack: the server moves it after its
        deliveries), else to the topic (a copy with the reason, then an ack), else kept."""
        handle: Handle = delivery.handle
        if self.policy_topic is not None:
            self.client.modify([handle.ack_id], 0, "nack")
            warn(
                f"param {delivery.id} failed attempt {delivery.attempt} ({reason}): the"
                f" subscription's dead-letter policy moves it to {self.policy_topic} after"
                f" {self.policy_max_deliveries} deliveries"
            )
            return
        if self.topic is not None:
            attributes = dict(handle.attributes)
            attributes.pop(SUBSCRIPTION_ATTRIBUTE, None)
            attributes.update(
                {
                    REASON_ATTRIBUTE: short(reason),
                    ATTEMPT_ATTRIBUTE: str(delivery.attempt),
                    ID_ATTRIBUTE: delivery.id,
                    "minion_source_subscription": self.client.subscription,
                }
            )
            try:
                self.client.publish(self.topic, handle.data, attributes)
            except EngineError as exc:
                self._keep(delivery, reason,
                           f"publishing it to {self.topic} failed: {redact(str(exc))}")
                return
            self.client.acknowledge(handle)
            return
        self._keep(
            delivery,
            reason,
            "neither the subscription has a dead-letter policy nor MINION_DEAD_LETTER_TOPIC is set",
        )

    def _keep(self, delivery: Delivery, reason: str, why: str) -> None:
        """Never ack a failure: leave it on the subscription, hidden for a while."""
        self.client.modify([delivery.handle.ack_id], KEEP_SECONDS, "keep")
        warn(
            f"PARAM {delivery.id} FAILED {delivery.attempt} ATTEMPTS ({reason}) AND STAYS ON"
            f" {self.client.subscription}: {why}; it comes back in {KEEP_SECONDS}s"
        )

    def ensure_reader(self) -> None:
        """Pub/Sub drops what reaches a topic without subscription: give the dead-letter
        topic, if any, a subscription of the same name if it has none (where
        minion-queue reads)."""
        topic = self.dead_topic()
        if topic is None:
            return
        client, errors = self.client, api_errors()

        def ensure() -> None:
            client.create_topic(topic)
            request = {"topic": topic}
            if not list(client.publisher().list_topic_subscriptions(request=request)):
                name = topic.replace("/topics/", "/subscriptions/")
                with contextlib.suppress(errors.AlreadyExists):
                    client.subscriber().create_subscription(request={"name": name, "topic": topic})

        try:
            client.calls(f"check the subscriptions of {topic}", ensure, ride_out=False)
        except EngineError as exc:
            warn(
                f"could not check that the dead-letter topic {topic} has a subscription"
                f" (without one, dead letters are dropped): {redact(str(exc))}"
            )
