"""The connection of the pubsub engine to one subscription, which the engine and its
administration share (:class:`PubSubClient`): the subscriber and publisher clients,
the topic and subscription names, pull, ack, modify, publish, the topic and the
subscription made when missing, and the one translation of the library's errors
(``errors``)."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from ...errors import ConfigError, EngineError, MinionizeError
from ..base import Delivery
from ..kit import Calls, Outage, Unreachable, optional_import, redact

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


def quietly(action: Any, *args: Any) -> None:
    """``action(*args)``, a failure said, not raised: while taking, a failed ack or nack
    is harmless (the message comes back when its lease ends)."""
    try:
        action(*args)
    except EngineError as exc:
        warn(str(exc))


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


class PubSubClient:
    """The clients of one subscription on one topic (``projects/...`` paths), made on
    first use; every call goes through :attr:`calls` (errors translated, the worker's
    verbs ridden out under the outage policy)."""

    def __init__(self, *, topic: str, subscription: str, outage_timeout: float) -> None:
        self.topic, self.subscription = topic, subscription
        self._subscriber: Any = None
        self._publisher: Any = None
        self._lock = threading.Lock()
        self._closed = False
        self.calls = Calls(self.errors, Outage(f"pubsub subscription {subscription}", outage_timeout))

    def subscriber(self) -> Any:
        """The subscriber client, made on first use."""
        return self._made("subscriber")

    def publisher(self) -> Any:
        """The publisher client, made on first use."""
        return self._made("publisher")

    def _made(self, kind: str) -> Any:
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

    def close(self) -> None:
        """Flush the publisher and close the subscriber; nothing is made after."""
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
    def errors(self, what: str) -> Iterator[None]:
        """The library's errors become ours: Unreachable while the service cannot be
        reached (unavailable, internal error, aborted), else EngineError."""
        errors = api_errors()
        try:
            yield
        except (errors.ServiceUnavailable, errors.InternalServerError, errors.Aborted) as exc:
            raise Unreachable(f"cannot {what}: {redact(str(exc))}") from None
        except errors.GoogleAPICallError as exc:
            raise EngineError(f"cannot {what}: {redact(str(exc))}") from None

    def pull(self, max_count: int, deadline: float) -> list[Any]:
        """One unary Pull of at most ``max_count`` messages, waiting until ``deadline``
        (``time.monotonic()``; a second at least): the received messages, [] if none."""
        errors = api_errors()
        request = {"subscription": self.subscription, "max_messages": max(1, max_count)}

        def pull() -> list[Any]:
            try:
                response = self.subscriber().pull(
                    request=request, timeout=max(deadline - time.monotonic(), 1.0), retry=None
                )
            except errors.DeadlineExceeded:
                return []
            except errors.NotFound:
                raise EngineError(f"the subscription {self.subscription} no longer exists") from None
            return list(response.received_messages)

        return self.calls(f"pull from {self.subscription}", pull, interruptible=True)

    def create_topic(self, topic: str) -> None:
        errors = api_errors()

        def create() -> None:
            with contextlib.suppress(errors.AlreadyExists):
                self.publisher().create_topic(request={"name": topic})

        self.calls(f"create the topic {topic}", create, ride_out=False)

    def acknowledge(self, handle: Handle) -> None:
        request = {"subscription": self.subscription, "ack_ids": [handle.ack_id]}
        self.calls(f"ack on {self.subscription}", lambda: self.subscriber().acknowledge(request=request))

    def modify(self, ack_ids: Sequence[str], seconds: int, what: str) -> None:
        request = {"subscription": self.subscription, "ack_ids": list(ack_ids),
                   "ack_deadline_seconds": seconds}
        self.calls(f"{what} {len(ack_ids)} message(s)",
                   lambda: self.subscriber().modify_ack_deadline(request=request))

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> None:
        errors = api_errors()

        def publish() -> None:
            try:
                self.publisher().publish(topic, data, **attributes).result(
                    timeout=PUBLISH_TIMEOUT
                )
            except (MinionizeError, errors.GoogleAPICallError):
                raise  # ours already, or said by errors
            except Exception as exc:  # a bad attribute, a timeout...
                raise EngineError(f"cannot publish to {topic}: {redact(str(exc))}") from None

        self.calls(f"publish to {topic}", publish)

    def ensure_subscription(self, name: str) -> Any:
        """The subscription ``name`` on the topic, both created when missing.

        Returns None when the credentials may not read the subscription's settings.
        """
        errors = api_errors()
        subscriber = self.subscriber()

        def read() -> Any:
            try:
                return subscriber.get_subscription(request={"subscription": name}, timeout=30)
            except errors.NotFound:
                return None
            except errors.PermissionDenied:
                return errors.PermissionDenied

        info = self.calls(f"reach Pub/Sub for {name}", read, ride_out=False)
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
        self.create_topic(self.topic)

        def create() -> Any:
            request = {"name": name, "topic": self.topic, "ack_deadline_seconds": CREATED_ACK_DEADLINE}
            try:
                return subscriber.create_subscription(request=request)
            except errors.AlreadyExists:  # another minion was quicker
                return subscriber.get_subscription(request={"subscription": name})

        return self.calls(f"create the subscription {name}", create, ride_out=False)

    def requeue_copy(
        self, delivery: Delivery, extra: dict[str, str], what: str, nack: str, cost: str
    ) -> None:
        """Publish a copy of the message for this subscription, carrying ``extra``, then
        ack the original; if the copy cannot be published, nack the original (``cost``
        says what that costs)."""
        handle: Handle = delivery.handle
        attributes = {**handle.attributes, ID_ATTRIBUTE: delivery.id,
                      SUBSCRIPTION_ATTRIBUTE: self.subscription, **extra}
        try:
            self.publish(self.topic, handle.data, attributes)
        except EngineError as exc:
            warn(f"could not publish the {what} of param {delivery.id} ({redact(str(exc))}): "
                 f"nacked, {cost}")
            self.modify([handle.ack_id], 0, nack)
            return
        self.acknowledge(handle)
