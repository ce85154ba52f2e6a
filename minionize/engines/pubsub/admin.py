"""``minion-queue``'s verbs on a Pub/Sub subscription (fill, list, requeue_dead,
status): :class:`PubSubAdmin`, over the engine's :class:`~.client.PubSubClient` and its
:class:`~.dead_letters.DeadLetters`, to which
:class:`~minionize.engines.pubsub.engine.PubSubEngine` hands them; the worker's verbs
stay in ``engine.py``. A command fails at once when the service cannot be reached."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator
from typing import Any, Optional

from ...errors import EngineError, UnsupportedOperation
from ...params import Param, canonical_json, decode_param
from ..base import STATUS_KEYS, Admin
from ..kit import redact
from .client import (
    ATTEMPT_ATTRIBUTE,
    ID_ATTRIBUTE,
    PUBLISH_TIMEOUT,
    REASON_ATTRIBUTE,
    PubSubClient,
    api_errors,
    as_int,
)
from .dead_letters import DeadLetters

#: Dead letters read per pull.
PAGE = 100


class PubSubAdmin(Admin):
    """The administration of the subscription of ``client``, whose dead letters are
    where ``dead`` says, and whose params are ``decoder`` text (``identity`` or ``json``)."""

    def __init__(self, client: PubSubClient, dead: DeadLetters, *, decoder: str) -> None:
        super().__init__("pubsub")
        self.client = client
        self.dead = dead
        self.decoder = decoder

    def fill(self, params: Iterable[Param]) -> tuple[int, int]:
        """Publish every param (JSON text; a string as it is with the identity decoder),
        after creating the topic and the subscription: Pub/Sub drops what is published
        to a topic that has no subscription yet."""
        payloads = [self._encode(param) for param in params]  # refuse NaN before any publish
        self.client.ensure_subscription(self.client.subscription)
        publisher = self.client.publisher()
        futures = [publisher.publish(self.client.topic, payload) for payload in payloads]
        failed = 0
        first_error: Optional[BaseException] = None
        for future in futures:
            try:
                future.result(timeout=PUBLISH_TIMEOUT)
            except Exception as exc:
                failed += 1
                first_error = first_error or exc
        if first_error is not None:
            raise EngineError(
                f"{failed} of {len(futures)} params could not be published to {self.client.topic}: "
                f"{redact(str(first_error))}"
            )
        return len(futures), 0

    def _encode(self, param: Param) -> bytes:
        """A string as it is (identity decoder), else canonical JSON (ValueError for NaN)."""
        if isinstance(param, bytes):
            return param
        if isinstance(param, str) and self.decoder == "identity":
            return param.encode("utf-8")
        return canonical_json(param).encode("utf-8")

    def status(self) -> dict[str, Any]:
        """The shared keys, all None: the Pub/Sub API tells no backlog (see the Cloud
        Monitoring metric subscription/num_undelivered_messages; the emulator has none).
        Checks that the subscription can be read; an empty subscription that does not
        exist yet counts zero."""
        errors = api_errors()

        def exists() -> bool:
            try:
                self.client.subscriber().get_subscription(request={"subscription": self.client.subscription})
            except errors.NotFound:
                return False  # minion-queue fill creates it
            return True

        found = self.client.calls(f"read {self.client.subscription}", exists, ride_out=False)
        return dict.fromkeys(STATUS_KEYS, None if found else 0)

    def requeue_dead(self) -> int:
        """Publish every dead letter to the topic again, as a first attempt."""
        count = 0
        for received in self._dead_letters(hold=False):
            attributes = {
                key: value
                for key, value in received.message.attributes.items()
                if not key.startswith(("minion_", "CloudPubSubDeadLetter")) and key != "reason"
            }
            identifier = received.message.attributes.get(ID_ATTRIBUTE)
            if identifier:
                attributes[ID_ATTRIBUTE] = identifier
            self.client.publish(self.client.topic, bytes(received.message.data), attributes)
            request = {"subscription": self._dead_subscription(), "ack_ids": [received.ack_id]}
            self.client.calls("ack a dead letter",
                              lambda: self.client.subscriber().acknowledge(request=request),  # noqa: B023
                              ride_out=False)
            count += 1
        return count

    def list(self, kind: str) -> Iterator[dict[str, Any]]:
        """Dead letters only (Pub/Sub forgets what was acked): read, then given back."""
        if kind != "dead":
            raise UnsupportedOperation("Pub/Sub keeps no record of acked (done) params")
        for received in self._dead_letters(hold=True):
            message = received.message
            attributes = dict(message.attributes)
            param, _ = decode_param(bytes(message.data), self.decoder, "GOOGLE_DECODER")
            deliveries = attributes.get("CloudPubSubDeadLetterSourceDeliveryCount")
            yield {
                "param": param,
                "id": attributes.get(ID_ATTRIBUTE) or str(message.message_id),
                "reason": attributes.get(
                    REASON_ATTRIBUTE,
                    f"moved by the dead-letter policy after {deliveries or '?'} deliveries",
                ),
                "attempts": as_int(attributes.get(ATTEMPT_ATTRIBUTE) or deliveries),
            }

    def _dead_subscription(self) -> str:
        """The subscription named like the dead-letter topic, which open() creates."""
        topic = self.dead.dead_topic()
        if topic is None:
            raise UnsupportedOperation(
                f"{self.client.subscription} has no dead-letter policy and MINION_DEAD_LETTER_TOPIC"
                " is not set: failed params stay on the subscription"
            )
        return topic.replace("/topics/", "/subscriptions/")

    def _dead_letters(self, hold: bool) -> Iterator[Any]:
        """Every message of the dead-letter subscription. ``hold``: keep each one leased
        until all were read, then give them all back (so none is read twice)."""
        path = self._dead_subscription()
        held: builtins.list[str] = []
        try:
            while True:
                received = self.client.calls(f"read the dead letters of {path}",
                                      lambda: self._pull_dead(path), ride_out=False)
                if not received:
                    return
                for message in received:
                    if hold:
                        held.append(message.ack_id)
                    yield message
        finally:
            if held:
                self.client.subscriber().modify_ack_deadline(
                    request={"subscription": path, "ack_ids": held, "ack_deadline_seconds": 0}
                )

    def _pull_dead(self, path: str) -> builtins.list[Any]:
        errors = api_errors()
        try:
            response = self.client.subscriber().pull(
                request={"subscription": path, "max_messages": PAGE}, timeout=1.0, retry=None
            )
        except errors.DeadlineExceeded:
            return []
        except errors.NotFound:
            raise UnsupportedOperation(
                f"no subscription {path} to read the dead letters from: create it on"
                f" {self.dead.dead_topic()}"
            ) from None
        return builtins.list(response.received_messages)
