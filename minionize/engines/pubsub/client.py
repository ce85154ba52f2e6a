"""The Pub/Sub client calls that the pubsub engine and its administration share:
:class:`PubSubClients`, the subscriber and publisher clients, ack, modify, publish,
creating topics, and the one translation of the library's errors (``_errors``);
:class:`PubSubCalls`, the subscription made and its policy read, a message decoded, a
copy of a message published back to the subscription (a retry, a release)."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from ...errors import ConfigError, EngineError, MinionizeError
from ...params import decode_param
from ..base import Delivery
from ..kit import ClientCalls, Unreachable, optional_import, redact

log = logging.getLogger("minionize.engines.pubsub")

#: Attributes minionize writes on the messages it publishes.
ATTEMPT_ATTRIBUTE = "minion_attempt"
#: With a dead-letter policy: attempts counted before this copy of the message existed.
TRIES_ATTRIBUTE = "minion_tries"
ID_ATTRIBUTE = "minion_id"
SUBSCRIPTION_ATTRIBUTE = "minion_subscription"
REASON_ATTRIBUTE = "reason"
#: Ack deadline of the subscriptions minionize creates.
CREATED_ACK_DEADLINE = 60
PUBLISH_TIMEOUT = 60.0
#: The service refuses attribute values longer than 1024 bytes.
MAX_ATTRIBUTE_BYTES = 1024
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")


def api_errors() -> Any:
    """``google.api_core.exceptions`` (imported once the client library is known there)."""
    from google.api_core import exceptions

    return exceptions


def warn(message: str) -> None:
    log.warning("pubsub: %s", redact(message))


def path(kind: str, project: str, name: str, variable: str) -> str:
    """``projects/<project>/<kind>/<name>``; a full path is accepted as it is."""
    if name.startswith("projects/"):
        parts = name.split("/")
        if len(parts) != 4 or parts[2] != kind or not _NAME.match(parts[3]):
            raise ConfigError(f"{variable}={name!r} is not a path projects/<project>/{kind}/<name>")
        return name
    if not _NAME.match(name) or name.startswith("goog"):
        raise ConfigError(
            f"{variable}={name!r} is not a valid Pub/Sub name: 3 to 255 letters, digits or"
            " - _ . ~ + %, starting with a letter (and not with goog)"
        )
    return f"projects/{project}/{kind}/{name}"


def short(text: str, limit: int = MAX_ATTRIBUTE_BYTES) -> str:
    """``text`` cut to what an attribute value may hold."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "..."


def as_int(text: Optional[str]) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


@dataclass
class Handle:
    """A delivery's handle: the message it came from."""

    ack_id: str
    data: bytes
    attributes: dict[str, str]


class PubSubClients(ClientCalls):
    """The subscriber and publisher clients, made on first use, and the calls on
    messages and topics; the engine sets the names and the outage policy."""

    subscription: str

    def _start_clients(self) -> None:
        self._subscriber: Any = None
        self._publisher: Any = None
        self._lock = threading.Lock()
        self._closed = False

    def _client(self, kind: str = "subscriber") -> Any:
        """The ``subscriber`` or ``publisher`` client, made on first use."""
        with self._lock:
            if self._closed:
                raise EngineError("the pubsub engine is closed")
            client = self._subscriber if kind == "subscriber" else self._publisher
            if client is not None:
                return client
            pubsub_v1 = optional_import("google.cloud.pubsub_v1", "the pubsub engine", "pubsub",
                                        "google-cloud-pubsub")
            from google.auth.exceptions import DefaultCredentialsError

            try:
                if kind == "subscriber":
                    client = self._subscriber = pubsub_v1.SubscriberClient()
                else:
                    client = self._publisher = pubsub_v1.PublisherClient()
            except DefaultCredentialsError as exc:
                raise ConfigError(
                    "no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service"
                    " account key file (or PUBSUB_EMULATOR_HOST=host:port for the emulator)"
                    f" ({redact(str(exc))})"
                ) from None
            return client

    def _close_clients(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # The process ends anyway: a failure is said, not raised.
        for client, stop, what in ((self._publisher, "stop", "flush the publisher"),
                                   (self._subscriber, "close", "close the subscriber")):
            if client is not None:
                try:
                    getattr(client, stop)()
                except Exception as exc:
                    warn(f"could not {what}: {redact(str(exc))}")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """The library's errors become ours: Unreachable while the service cannot be
        reached (unavailable, internal error, aborted), else EngineError."""
        errors = api_errors()
        try:
            yield
        except (errors.ServiceUnavailable, errors.InternalServerError, errors.Aborted) as exc:
            raise Unreachable(f"cannot {what}: {redact(str(exc))}") from None
        except errors.GoogleAPICallError as exc:
            raise EngineError(f"cannot {what}: {redact(str(exc))}") from None

    def _create_topic(self, topic: str) -> None:
        errors = api_errors()

        def create() -> None:
            with contextlib.suppress(errors.AlreadyExists):
                self._client("publisher").create_topic(request={"name": topic})

        self._call(f"create the topic {topic}", create, ride_out=False)

    def _acknowledge(self, handle: Handle) -> None:
        request = {"subscription": self.subscription, "ack_ids": [handle.ack_id]}
        self._call(f"ack on {self.subscription}", lambda: self._client().acknowledge(request=request))

    def _modify(self, ack_ids: Sequence[str], seconds: int, what: str) -> None:
        request = {"subscription": self.subscription, "ack_ids": list(ack_ids),
                   "ack_deadline_seconds": seconds}
        self._call(f"{what} {len(ack_ids)} message(s)",
                   lambda: self._client().modify_ack_deadline(request=request))

    def _publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> None:
        errors = api_errors()

        def publish() -> None:
            try:
                self._client("publisher").publish(topic, data, **attributes).result(
                    timeout=PUBLISH_TIMEOUT
                )
            except (MinionizeError, errors.GoogleAPICallError):
                raise  # ours already, or said by _errors
            except Exception as exc:  # a bad attribute, a timeout...
                raise EngineError(f"cannot publish to {topic}: {redact(str(exc))}") from None

        self._call(f"publish to {topic}", publish)

    def _quietly(self, action: Any, *args: Any) -> None:
        """While taking, a failed ack or nack is said, not raised: the message comes
        back when its lease ends."""
        try:
            action(*args)
        except EngineError as exc:
            warn(str(exc))


class PubSubCalls(PubSubClients):
    """What the engine and its administration do with the clients: the subscription
    made and its policy read, a message made a delivery, and a copy of it published
    back in its place."""

    project: str
    topic: str
    decoder: str
    max_attempts: int
    dead_letter_topic: Optional[str]
    #: Set by open() from the subscription: its ack deadline and dead-letter policy.
    ack_deadline: int
    policy_topic: Optional[str]
    policy_max_deliveries: Optional[int]

    def dead_topic(self) -> Optional[str]:
        """Where dead letters go: the dead-letter policy's topic, else
        MINION_DEAD_LETTER_TOPIC, else nowhere (they stay on the subscription)."""
        return self.policy_topic or self.dead_letter_topic

    def _decode(self, received: Any) -> Optional[Delivery]:
        message = received.message
        attributes = dict(message.attributes)
        handle = Handle(received.ack_id, bytes(message.data), attributes)
        target = attributes.get(SUBSCRIPTION_ATTRIBUTE)
        if target is not None and target != self.subscription:
            # A retry copy meant for another subscription of the same topic.
            self._quietly(self._acknowledge, handle)
            return None
        if self.policy_topic is not None:
            # The server counts the deliveries of this copy; a release's copy carries
            # the attempts counted before it.
            attempt = as_int(attributes.get(TRIES_ATTRIBUTE)) + max(1, int(received.delivery_attempt or 1))
        else:
            attempt = max(1, as_int(attributes.get(ATTEMPT_ATTRIBUTE, "1")))
        param_id = attributes.get(ID_ATTRIBUTE) or str(message.message_id)
        if self.policy_topic is not None and attempt > self.max_attempts:
            # Failed MINION_MAX_ATTEMPTS times already: the server moves it to the
            # dead-letter topic after its max_delivery_attempts; do not run it again.
            self._quietly(self._modify, [handle.ack_id], 0, "nack")
            return None
        delivery = Delivery(param=None, id=param_id, attempt=attempt, handle=handle)
        delivery.param, delivery.error = decode_param(handle.data, self.decoder, "GOOGLE_DECODER")
        return delivery

    def _requeue_copy(
        self, delivery: Delivery, extra: dict[str, str], what: str, nack: str, cost: str
    ) -> None:
        """Publish a copy of the message for this subscription, carrying ``extra``, then
        ack the original; if the copy cannot be published, nack the original (``cost``
        says what that costs)."""
        handle: Handle = delivery.handle
        attributes = {**handle.attributes, ID_ATTRIBUTE: delivery.id,
                      SUBSCRIPTION_ATTRIBUTE: self.subscription, **extra}
        try:
            self._publish(self.topic, handle.data, attributes)
        except EngineError as exc:
            warn(f"could not publish the {what} of param {delivery.id} ({redact(str(exc))}): "
                 f"nacked, {cost}")
            self._modify([handle.ack_id], 0, nack)
            return
        self._acknowledge(handle)

    def _read_policy(self, info: Any) -> None:
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
        if self.max_attempts > deliveries:
            warn(
                f"MINION_MAX_ATTEMPTS={self.max_attempts} but the dead-letter policy of"
                f" {self.subscription} moves a message after {deliveries} deliveries: that comes first"
            )
        if self.dead_letter_topic is not None:
            warn(
                f"{self.subscription} has a dead-letter policy: it is used, not"
                f" MINION_DEAD_LETTER_TOPIC={self.dead_letter_topic}"
            )

    def _ensure_subscription(self, name: str) -> Any:
        """The subscription ``name`` on the topic, both created when missing.

        Returns None when the credentials may not read the subscription's settings.
        """
        errors = api_errors()
        subscriber = self._client()

        def read() -> Any:
            try:
                return subscriber.get_subscription(request={"subscription": name}, timeout=30)
            except errors.NotFound:
                return None
            except errors.PermissionDenied:
                return errors.PermissionDenied

        info = self._call(f"reach Pub/Sub for {name}", read, ride_out=False)
        if info is errors.PermissionDenied:
            warn(f"may not read the settings of {name}: assuming it exists, without dead-letter policy")
            return None
        if info is not None:
            if str(info.topic) != self.topic:
                raise ConfigError(
                    f"GOOGLE_SUBSCRIPTION={name} reads the topic {info.topic}, not"
                    f" GOOGLE_TOPIC_ID={self.topic}: name another subscription"
                )
            return info
        self._create_topic(self.topic)

        def create() -> Any:
            request = {"name": name, "topic": self.topic, "ack_deadline_seconds": CREATED_ACK_DEADLINE}
            try:
                return subscriber.create_subscription(request=request)
            except errors.AlreadyExists:  # another minion was quicker
                return subscriber.get_subscription(request={"subscription": name})

        return self._call(f"create the subscription {name}", create, ride_out=False)

    def _ensure_reader(self, topic: str) -> None:
        """Pub/Sub drops what reaches a topic without subscription: give a dead-letter
        topic that has none a subscription of the same name (where minion-queue reads)."""
        errors = api_errors()

        def ensure() -> None:
            self._create_topic(topic)
            request = {"topic": topic}
            if not list(self._client("publisher").list_topic_subscriptions(request=request)):
                name = topic.replace("/topics/", "/subscriptions/")
                with contextlib.suppress(errors.AlreadyExists):
                    self._client().create_subscription(request={"name": name, "topic": topic})

        try:
            self._call(f"check the subscriptions of {topic}", ensure, ride_out=False)
        except EngineError as exc:
            warn(
                f"could not check that the dead-letter topic {topic} has a subscription"
                f" (without one, dead letters are dropped): {redact(str(exc))}"
            )
