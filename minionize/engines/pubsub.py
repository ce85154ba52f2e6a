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
  message stays on the subscription, hidden for a minute, and stderr says so every time.
* outages: a call that fails because the service cannot be reached (unavailable,
  internal error, aborted) is retried under the one outage policy
  (``MINION_OUTAGE_TIMEOUT``, see ``_kit.Outage``), then the minion stops (exit 2).
* what it cannot do: ``fill`` cannot skip params already published (Pub/Sub keeps no
  record of them); ``status`` has the shared keys but all None (the API does not tell
  the backlog); without a dead-letter policy an expired lease (a minion killed while
  running the param) does not count an attempt (the server gives no delivery count).
"""

from __future__ import annotations

import builtins
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError, EngineError, UnsupportedOperation
from ._kit import DEFAULT_OUTAGE_SECONDS, Outage, canonical_json, optional_import, redact
from .base import STATUS_KEYS, Delivery, Engine, Param, decode_param

if TYPE_CHECKING:
    from ..config import Settings

DECODERS = ("identity", "json")
#: Attributes minionize writes on the messages it publishes.
ATTEMPT_ATTRIBUTE = "minion_attempt"
#: With a dead-letter policy: attempts counted before this copy of the message existed.
TRIES_ATTRIBUTE = "minion_tries"
ID_ATTRIBUTE = "minion_id"
SUBSCRIPTION_ATTRIBUTE = "minion_subscription"
REASON_ATTRIBUTE = "reason"
#: Ack deadline of the subscriptions minionize creates.
CREATED_ACK_DEADLINE = 60
#: Lease bounds of the service (seconds).
MIN_LEASE, MAX_LEASE = 10, 600
#: How long a failed message with nowhere to go stays hidden before it comes back.
KEEP_SECONDS = 60
#: Wait between two pulls that came back empty at once.
POLL_SECONDS = 0.25
PUBLISH_TIMEOUT = 60.0
#: The service refuses attribute values longer than 1024 bytes.
MAX_ATTRIBUTE_BYTES = 1024
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")


def _pubsub() -> Any:
    return optional_import("google.cloud.pubsub_v1", "the pubsub engine", "pubsub",
                           "google-cloud-pubsub")


def _api_errors() -> Any:
    from google.api_core import exceptions

    return exceptions


def _transient() -> tuple[type[BaseException], ...]:
    """The errors of a service that cannot be reached right now (the outage policy)."""
    errors = _api_errors()
    return (errors.ServiceUnavailable, errors.InternalServerError, errors.Aborted)


def _warn(message: str) -> None:
    print(f"minionize: pubsub: {redact(message)}", file=sys.stderr, flush=True)


def _path(kind: str, project: str, name: str, variable: str) -> str:
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


def _short(text: str, limit: int = MAX_ATTRIBUTE_BYTES) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "..."


def _int(text: Optional[str]) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


@dataclass
class _Handle:
    ack_id: str
    data: bytes
    attributes: dict[str, str]


class PubSubEngine(Engine):
    """A Pub/Sub subscription as a queue of params (see the module docstring)."""

    name = "pubsub"

    def __init__(
        self,
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
        self.topic = _path("topics", project, topic, "GOOGLE_TOPIC_ID")
        self.subscription = _path("subscriptions", project, subscription, "GOOGLE_SUBSCRIPTION")
        self.decoder = decoder
        self.max_attempts = max_attempts
        self.lease_setting = lease
        self.dead_letter_topic = (
            _path("topics", project, dead_letter_topic, "MINION_DEAD_LETTER_TOPIC")
            if dead_letter_topic
            else None
        )
        #: Set by open() from the subscription: its dead-letter policy, if any.
        self.policy_topic: Optional[str] = None
        self.policy_max_deliveries: Optional[int] = None
        self.ack_deadline: int = CREATED_ACK_DEADLINE
        self.lease: int = CREATED_ACK_DEADLINE
        self._subscriber: Any = None
        self._publisher: Any = None
        self._lock = threading.Lock()
        self._closed = False
        self._outage = Outage(f"pubsub subscription {self.subscription}", outage_timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> PubSubEngine:
        from ..config import Settings as SettingsClass

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
            project,
            topic,
            subscription,
            decoder=env.choice("GOOGLE_DECODER", "identity", DECODERS),
            max_attempts=settings.max_attempts,
            lease=settings.lease if explicit_lease else None,
            dead_letter_topic=env.str("MINION_DEAD_LETTER_TOPIC"),
            outage_timeout=settings.outage_timeout,
        )

    # -- taking ----------------------------------------------------------------------
    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        """Pull at most ``max_count`` messages, polling until one comes or ``timeout``."""
        errors = _api_errors()
        deadline = time.monotonic() + timeout
        received: list[Any] = []
        def pull() -> list[Any]:
            remaining = deadline - time.monotonic()
            try:
                response = self._client().pull(
                    request={"subscription": self.subscription, "max_messages": max(1, max_count)},
                    timeout=max(remaining, 1.0),
                    retry=None,
                )
            except errors.DeadlineExceeded:
                return []
            return list(response.received_messages)

        while True:
            try:
                received = self._outage.call(pull, _transient())
            except errors.NotFound:
                raise EngineError(f"the subscription {self.subscription} no longer exists") from None
            except errors.GoogleAPICallError as exc:
                raise EngineError(f"cannot pull from {self.subscription}: {redact(str(exc))}") from None
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
                _warn(str(exc))
        return [d for d in (self._delivery(r) for r in received) if d is not None]

    def _delivery(self, received: Any) -> Optional[Delivery]:
        message = received.message
        attributes = dict(message.attributes)
        handle = _Handle(received.ack_id, bytes(message.data), attributes)
        target = attributes.get(SUBSCRIPTION_ATTRIBUTE)
        if target is not None and target != self.subscription:
            # A retry copy meant for another subscription of the same topic.
            self._quietly(self._acknowledge, handle)
            return None
        if self.policy_topic is not None:
            # The server counts the deliveries of this copy; a release's copy carries
            # the attempts counted before it.
            tries = _int(attributes.get(TRIES_ATTRIBUTE))
            attempt = tries + max(1, int(received.delivery_attempt or 1))
        else:
            try:
                attempt = max(1, int(attributes.get(ATTEMPT_ATTRIBUTE, "1")))
            except ValueError:
                attempt = 1
        param_id = attributes.get(ID_ATTRIBUTE) or str(message.message_id)
        if self.policy_topic is not None and attempt > self.max_attempts:
            # Failed MINION_MAX_ATTEMPTS times already: the server moves it to the
            # dead-letter topic after its max_delivery_attempts; do not run it again.
            self._quietly(self._modify, [handle.ack_id], 0, "nack")
            return None
        delivery = Delivery(param=None, id=param_id, attempt=attempt, handle=handle)
        delivery.param, delivery.error = decode_param(handle.data, self.decoder, "GOOGLE_DECODER")
        return delivery

    def _encode(self, param: Param) -> bytes:
        """A string as it is (identity decoder), else canonical JSON (ValueError for NaN)."""
        if isinstance(param, bytes):
            return param
        if isinstance(param, str) and self.decoder == "identity":
            return param.encode("utf-8")
        return canonical_json(param).encode("utf-8")

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery) -> None:
        self._acknowledge(delivery.handle)

    def retry(self, delivery: Delivery, reason: str) -> None:
        handle: _Handle = delivery.handle
        if self.policy_topic is not None:
            self._modify([handle.ack_id], 0, "nack")  # the server counts the delivery
            return
        attributes = dict(handle.attributes)
        attributes.update(
            {
                ATTEMPT_ATTRIBUTE: str(delivery.attempt + 1),
                ID_ATTRIBUTE: delivery.id,
                SUBSCRIPTION_ATTRIBUTE: self.subscription,
                REASON_ATTRIBUTE: _short(reason),
            }
        )
        try:
            self._publish(self.topic, handle.data, attributes)
        except EngineError as exc:
            _warn(
                f"could not publish the retry of param {delivery.id} ({redact(str(exc))}): nacked, "
                "this attempt will not be counted"
            )
            self._modify([handle.ack_id], 0, "nack")
            return
        self._acknowledge(handle)

    def release(self, delivery: Delivery) -> None:
        """A nack, which counts nothing without a dead-letter policy. With one, the
        server would count the delivery: publish a copy that carries the attempts
        counted so far instead, then ack the original."""
        handle: _Handle = delivery.handle
        if self.policy_topic is None:
            self._modify([handle.ack_id], 0, "release")
            return
        attributes = dict(handle.attributes)
        attributes.update(
            {
                TRIES_ATTRIBUTE: str(delivery.attempt - 1),
                ID_ATTRIBUTE: delivery.id,
                SUBSCRIPTION_ATTRIBUTE: self.subscription,
            }
        )
        try:
            self._publish(self.topic, handle.data, attributes)
        except EngineError as exc:
            _warn(
                f"could not publish the release of param {delivery.id} ({redact(str(exc))}): nacked, "
                "the dead-letter policy counts this delivery"
            )
            self._modify([handle.ack_id], 0, "release")
            return
        self._acknowledge(handle)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        handle: _Handle = delivery.handle
        if self.policy_topic is not None:
            self._modify([handle.ack_id], 0, "nack")
            _warn(
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
                    REASON_ATTRIBUTE: _short(reason),
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
        _warn(
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
        info = self._ensure_subscription(self.subscription)
        if info is not None:
            self.ack_deadline = int(info.ack_deadline_seconds or 10)
            policy = info.dead_letter_policy
            if policy is not None and policy.dead_letter_topic:
                self.policy_topic = str(policy.dead_letter_topic)
                # The service's default when the field is 0.
                self.policy_max_deliveries = int(policy.max_delivery_attempts or 5)
        lease = self.lease_setting if self.lease_setting is not None else self.ack_deadline
        self.lease = int(min(max(lease, MIN_LEASE), MAX_LEASE))
        if self.policy_max_deliveries is not None:
            if self.max_attempts > self.policy_max_deliveries:
                _warn(
                    f"MINION_MAX_ATTEMPTS={self.max_attempts} but the dead-letter policy of"
                    f" {self.subscription} moves a message after"
                    f" {self.policy_max_deliveries} deliveries: that comes first"
                )
            if self.dead_letter_topic is not None:
                _warn(
                    f"{self.subscription} has a dead-letter policy: it is used, not"
                    f" MINION_DEAD_LETTER_TOPIC={self.dead_letter_topic}"
                )
        dead_topic = self.dead_topic()
        if dead_topic is not None:
            self._ensure_reader(dead_topic)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            publisher, subscriber = self._publisher, self._subscriber
        if publisher is not None:
            try:
                publisher.stop()
            except Exception as exc:  # the process ends anyway: say it, do not raise
                _warn(f"could not flush the publisher: {redact(str(exc))}")
        if subscriber is not None:
            try:
                subscriber.close()
            except Exception as exc:
                _warn(f"could not close the subscriber: {redact(str(exc))}")

    def describe(self) -> str:
        return f"pubsub subscription {self.subscription} (topic {self.topic})"

    def dead_topic(self) -> Optional[str]:
        """Where dead letters go: the dead-letter policy's topic, else
        MINION_DEAD_LETTER_TOPIC, else nowhere (they stay on the subscription)."""
        return self.policy_topic or self.dead_letter_topic

    # -- administration (minion-queue) -----------------------------------------------
    def fill(self, params: Iterable[Param]) -> tuple[int, int]:
        """Publish every param (JSON text; a string as it is with the identity decoder),
        after creating the topic and the subscription: Pub/Sub drops what is published
        to a topic that has no subscription yet."""
        payloads = [self._encode(param) for param in params]  # refuse NaN before any publish
        self._ensure_subscription(self.subscription)
        publisher = self._client("publisher")
        futures = [publisher.publish(self.topic, payload) for payload in payloads]
        errors = 0
        first_error: Optional[BaseException] = None
        for future in futures:
            try:
                future.result(timeout=PUBLISH_TIMEOUT)
            except Exception as exc:
                errors += 1
                first_error = first_error or exc
        if first_error is not None:
            raise EngineError(
                f"{errors} of {len(futures)} params could not be published to {self.topic}: "
                f"{redact(str(first_error))}"
            )
        return len(futures), 0

    def status(self) -> dict[str, Any]:
        """The shared keys, all None: the Pub/Sub API tells no backlog (see the Cloud
        Monitoring metric subscription/num_undelivered_messages; the emulator has none).
        Checks that the subscription can be read; an empty subscription that does not
        exist yet counts zero."""
        errors = _api_errors()
        unknown: dict[str, Any] = dict.fromkeys(STATUS_KEYS)
        try:
            self._client().get_subscription(request={"subscription": self.subscription})
        except errors.NotFound:
            return dict.fromkeys(unknown, 0)  # minion-queue fill creates it
        except errors.GoogleAPICallError as exc:
            raise EngineError(f"cannot read {self.subscription}: {redact(str(exc))}") from None
        return unknown

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
            self._publish(self.topic, bytes(received.message.data), attributes)
            self._client().acknowledge(
                request={"subscription": self._dead_subscription(), "ack_ids": [received.ack_id]}
            )
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
            yield {
                "param": param,
                "id": attributes.get(ID_ATTRIBUTE) or str(message.message_id),
                "reason": attributes.get(
                    REASON_ATTRIBUTE,
                    f"moved by the dead-letter policy after"
                    f" {attributes.get('CloudPubSubDeadLetterSourceDeliveryCount', '?')} deliveries",
                ),
                "attempts": _int(attributes.get(ATTEMPT_ATTRIBUTE)
                                 or attributes.get("CloudPubSubDeadLetterSourceDeliveryCount")),
            }

    def _dead_subscription(self) -> str:
        """The subscription named like the dead-letter topic, which open() creates."""
        topic = self.dead_topic()
        if topic is None:
            raise UnsupportedOperation(
                f"{self.subscription} has no dead-letter policy and MINION_DEAD_LETTER_TOPIC"
                " is not set: failed params stay on the subscription"
            )
        return topic.replace("/topics/", "/subscriptions/")

    def _dead_letters(self, hold: bool) -> Iterator[Any]:
        """Every message of the dead-letter subscription. ``hold``: keep each one leased
        until all were read, then give them all back (so none is read twice)."""
        errors = _api_errors()
        path = self._dead_subscription()
        held: builtins.list[str] = []
        try:
            while True:
                try:
                    response = self._client().pull(
                        request={"subscription": path, "max_messages": 100},
                        timeout=1.0,
                        retry=None,
                    )
                except errors.DeadlineExceeded:
                    return
                except errors.NotFound:
                    raise UnsupportedOperation(
                        f"no subscription {path} to read the dead letters from: create it on"
                        f" {self.dead_topic()}"
                    ) from None
                except errors.GoogleAPICallError as exc:
                    raise EngineError(f"cannot read the dead letters of {path}: {redact(str(exc))}") from None
                if not response.received_messages:
                    return
                for received in response.received_messages:
                    if hold:
                        held.append(received.ack_id)
                    yield received
        finally:
            if held:
                self._client().modify_ack_deadline(
                    request={"subscription": path, "ack_ids": held, "ack_deadline_seconds": 0}
                )

    # -- the client library ------------------------------------------------------------
    def _client(self, kind: str = "subscriber") -> Any:
        with self._lock:
            if self._closed:
                raise EngineError("the pubsub engine is closed")
            if kind == "subscriber" and self._subscriber is not None:
                return self._subscriber
            if kind == "publisher" and self._publisher is not None:
                return self._publisher
            pubsub_v1 = _pubsub()
            from google.auth.exceptions import DefaultCredentialsError

            try:
                if kind == "subscriber":
                    self._subscriber = pubsub_v1.SubscriberClient()
                    return self._subscriber
                self._publisher = pubsub_v1.PublisherClient()
                return self._publisher
            except DefaultCredentialsError as exc:
                raise ConfigError(
                    "no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service"
                    " account key file (or PUBSUB_EMULATOR_HOST=host:port for the emulator)"
                    f" ({redact(str(exc))})"
                ) from None

    def _ensure_subscription(self, path: str) -> Any:
        """The subscription ``path`` on the topic, both created when missing.

        Returns None when the credentials may not read the subscription's settings.
        """
        errors = _api_errors()
        subscriber = self._client()
        try:
            info = subscriber.get_subscription(request={"subscription": path}, timeout=30)
        except errors.NotFound:
            info = None
        except errors.PermissionDenied:
            _warn(f"may not read the settings of {path}: assuming it exists, without dead-letter policy")
            return None
        except errors.GoogleAPICallError as exc:
            raise EngineError(f"cannot reach Pub/Sub for {path}: {redact(str(exc))}") from None
        if info is not None:
            if str(info.topic) != self.topic:
                raise ConfigError(
                    f"GOOGLE_SUBSCRIPTION={path} reads the topic {info.topic}, not"
                    f" GOOGLE_TOPIC_ID={self.topic}: name another subscription"
                )
            return info
        self._create_topic(self.topic)
        try:
            return subscriber.create_subscription(
                request={"name": path, "topic": self.topic, "ack_deadline_seconds": CREATED_ACK_DEADLINE}
            )
        except errors.AlreadyExists:  # another minion was quicker
            return subscriber.get_subscription(request={"subscription": path})
        except errors.GoogleAPICallError as exc:
            raise EngineError(f"cannot create the subscription {path}: {redact(str(exc))}") from None

    def _ensure_reader(self, topic: str) -> None:
        """Pub/Sub drops what reaches a topic without subscription: give a dead-letter
        topic that has none a subscription of the same name (where minion-queue reads)."""
        errors = _api_errors()
        try:
            self._create_topic(topic)
            readers = list(self._client("publisher").list_topic_subscriptions(request={"topic": topic}))
            if not readers:
                self._client().create_subscription(
                    request={"name": topic.replace("/topics/", "/subscriptions/"), "topic": topic}
                )
        except errors.AlreadyExists:
            pass
        except (errors.GoogleAPICallError, EngineError) as exc:
            _warn(
                f"could not check that the dead-letter topic {topic} has a subscription"
                f" (without one, dead letters are dropped): {redact(str(exc))}"
            )

    def _create_topic(self, topic: str) -> None:
        errors = _api_errors()
        try:
            self._client("publisher").create_topic(request={"name": topic})
        except errors.AlreadyExists:
            pass
        except errors.GoogleAPICallError as exc:
            raise EngineError(f"cannot create the topic {topic}: {redact(str(exc))}") from None

    @staticmethod
    def _quietly(action: Any, *args: Any) -> None:
        """While taking, a failed ack or nack is said, not raised: the message comes
        back when its lease ends."""
        try:
            action(*args)
        except EngineError as exc:
            _warn(str(exc))

    def _acknowledge(self, handle: _Handle) -> None:
        errors = _api_errors()
        try:
            self._outage.call(
                lambda: self._client().acknowledge(
                    request={"subscription": self.subscription, "ack_ids": [handle.ack_id]}
                ),
                _transient(),
            )
        except errors.GoogleAPICallError as exc:
            raise EngineError(f"cannot ack on {self.subscription}: {redact(str(exc))}") from None

    def _modify(self, ack_ids: Sequence[str], seconds: int, what: str) -> None:
        errors = _api_errors()
        try:
            self._outage.call(
                lambda: self._client().modify_ack_deadline(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": list(ack_ids),
                        "ack_deadline_seconds": seconds,
                    }
                ),
                _transient(),
            )
        except errors.GoogleAPICallError as exc:
            raise EngineError(
                f"cannot {what} {len(ack_ids)} message(s): {redact(str(exc))}"
            ) from None

    def _publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> None:
        def publish() -> None:
            self._client("publisher").publish(topic, data, **attributes).result(
                timeout=PUBLISH_TIMEOUT
            )

        try:
            self._outage.call(publish, _transient())
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"cannot publish to {topic}: {redact(str(exc))}") from None
