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

Administration: ``fill`` creates the subscription first (Pulsar keeps a topic's messages
only for its subscriptions), then publishes; ``requeue_dead`` moves the dead letters
back. The client library has no admin API, so there is no ``status``: use
``pulsar-admin topics stats``.

Tested against an in-memory stand-in of the client (tests/unit) and against a real
Apache Pulsar standalone broker (tests/integration/test_pulsar_broker.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from ..errors import ConfigError, EngineError, MissingExtraError, UnsupportedOperation
from ._kit import DEFAULT_OUTAGE_SECONDS, Outage, canonical_json, redact
from .base import Delivery, Engine, Param, decode_param

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CONNECTION = "pulsar://localhost:6650"
DEFAULT_SUBSCRIPTION = "minionize"
#: Properties the engine adds to a dead letter (removed when it is requeued).
REASON = "minion-reason"
ATTEMPT = "minion-attempt"
ORIGIN = "minion-origin"
#: Properties of a released copy: the param's id, and how many attempts already ran.
PARAM_ID = "minion-id"
COUNTED = "minion-counted"
DEAD_PROPERTIES = (REASON, ATTEMPT, ORIGIN, PARAM_ID, COUNTED)
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


def _import_pulsar() -> Any:
    try:
        import pulsar
    except ImportError:
        raise MissingExtraError("the pulsar engine", "pulsar", "pulsar") from None
    return pulsar


def encode_param(param: Param, decoder: str) -> bytes:
    """A message's payload for a param: a string as is (identity) or canonical JSON."""
    if decoder == "identity" and isinstance(param, str):
        return param.encode("utf-8")
    return canonical_json(param).encode("utf-8")


class PulsarEngine(Engine):
    """Params from a Pulsar topic through a Shared subscription."""

    name = "pulsar"

    def __init__(
        self,
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
        self.topic = topic
        self.connection = connection
        self.subscription = subscription
        self.decoder = decoder
        self.max_attempts = max_attempts
        self.dead_letter_topic = dead_letter_topic or f"{topic}-{subscription}-DLQ"
        self.nack_delay = nack_delay
        # A client call must give up within the outage limit, or the limit means nothing.
        self.operation_timeout = max(1, min(operation_timeout, int(outage_timeout)))
        self.client_log = client_log
        self.admin_url = admin_url
        #: The pulsar module, or a stand-in with the same calls (tests).
        self._pulsar = module if module is not None else _import_pulsar()
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
            message = self._do("receive", lambda: self._receive(consumer, wait))  # noqa: B023
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
        self._do("acknowledge", lambda: consumer.acknowledge(delivery.handle))

    def retry(self, delivery: Delivery, reason: str) -> None:
        consumer = self._require_consumer()
        self._do("negative_acknowledge", lambda: consumer.negative_acknowledge(delivery.handle))

    def release(self, delivery: Delivery) -> None:
        # A nack would count an attempt (see the module docstring): send a copy that
        # says how many attempts ran before this one, then drop the original.
        message = delivery.handle
        properties = {k: v for k, v in (message.properties() or {}).items()
                      if k not in (PARAM_ID, COUNTED)}
        properties.update({PARAM_ID: delivery.id, COUNTED: str(max(0, delivery.attempt - 1))})
        producer = self._producer_for_releases()
        self._do("release (send)", lambda: producer.send(bytes(message.data()),
                                                         properties=properties))
        consumer = self._require_consumer()
        self._do("acknowledge", lambda: consumer.acknowledge(message))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        message = delivery.handle
        properties = dict(message.properties() or {})
        properties.update(
            {REASON: reason, ATTEMPT: str(delivery.attempt), ORIGIN: delivery.id}
        )
        producer = self._dead_letter_producer()
        self._do(f"send to the dead-letter topic {self.dead_letter_topic!r}",
                 lambda: producer.send(bytes(message.data()), properties=properties))
        consumer = self._require_consumer()
        self._do("acknowledge", lambda: consumer.acknowledge(message))

    def _producer_for_releases(self) -> Any:
        with self._lock:
            if self._release_producer is None:
                self._release_producer = self._do(
                    "create_producer", lambda: self._client.create_producer(self.topic))
            return self._release_producer

    def _dead_letter_producer(self) -> Any:
        with self._lock:
            if self._dead_producer is None:
                # A subscription on the dead-letter topic keeps what is sent there.
                self._subscribe(self.dead_letter_topic, dead_letter_policy=False).close()
                self._dead_producer = self._do(
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
        try:
            return self._outage.call(lambda: client.subscribe(
                topic,
                self.subscription,
                consumer_type=pulsar.ConsumerType.Shared,
                initial_position=pulsar.InitialPosition.Earliest,
                receiver_queue_size=1,
                negative_ack_redelivery_delay_ms=int(self.nack_delay * 1000),
                dead_letter_policy=policy,
            ), self._transient)
        except EngineError as exc:  # unreachable for MINION_OUTAGE_TIMEOUT
            raise EngineError(f"{exc}: check PULSAR_CONNECTION and that the broker runs") from None
        except pulsar.PulsarException as exc:
            raise EngineError(
                f"cannot subscribe to Pulsar topic {topic!r} at {redact(self.connection)} "
                f"({type(exc).__name__}: {redact(str(exc))}): check PULSAR_CONNECTION and "
                "PULSAR_TOPIC and that the broker runs"
            ) from None

    def _require_consumer(self) -> Any:
        if self._consumer is None:
            raise EngineError("the pulsar engine is not open")
        return self._consumer

    def _do(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` through the outage policy; other client errors become EngineError."""
        try:
            return self._outage.call(fn, self._transient)
        except self._pulsar.PulsarException as exc:
            raise EngineError(f"Pulsar {what} on {self.topic!r} failed: {redact(str(exc))}") from None

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Pulsar client errors become EngineError."""
        try:
            yield
        except self._pulsar.PulsarException as exc:
            raise EngineError(f"Pulsar {what} on {self.topic!r} failed: {redact(str(exc))}") from None

    # -- administration (minion-queue) -----------------------------------------------
    def fill(self, params: Iterable[Param]) -> tuple[int, int]:
        self._connect()
        # First the subscription: messages sent to a topic nobody subscribes to are dropped.
        self._subscribe(self.topic, dead_letter_policy=True).close()
        sent = 0
        with self._call("send"):
            producer = self._client.create_producer(self.topic)
            try:
                for param in params:
                    producer.send(encode_param(param, self.decoder))
                    sent += 1
                producer.flush()
            finally:
                producer.close()
        return sent, 0

    def requeue_dead(self) -> int:
        """Move every dead letter back to the topic, its attempts counted afresh."""
        self._connect()
        self._subscribe(self.topic, dead_letter_policy=True).close()
        dead = self._subscribe(self.dead_letter_topic, dead_letter_policy=False)
        moved = 0
        with self._call("requeue"):
            producer = self._client.create_producer(self.topic)
            try:
                while True:
                    try:
                        message = dead.receive(timeout_millis=1000)
                    except self._pulsar.Timeout:
                        break
                    properties = {
                        k: v for k, v in (message.properties() or {}).items()
                        if k not in DEAD_PROPERTIES
                    }
                    producer.send(bytes(message.data()), properties=properties)
                    dead.acknowledge(message)
                    moved += 1
            finally:
                producer.close()
                dead.close()
        return moved


    def status(self) -> dict[str, Any]:
        """From the broker's admin API (``PULSAR_ADMIN_URL``): ``todo`` and ``in_flight``
        (delivered to a minion, not yet acknowledged) of the subscription, ``dead`` the
        backlog of the dead-letter topic. ``expired``, ``done`` and ``total`` are None:
        Pulsar has no leases and keeps no count of acknowledged messages."""
        self._drop_idle_consumer()  # else the message it prefetched would count as in flight
        backlog, unacked = self._backlog(self.topic)
        in_flight = min(unacked, backlog)
        dead, _ = self._backlog(self.dead_letter_topic)
        return {"todo": backlog - in_flight, "in_flight": in_flight, "expired": None,
                "done": None, "dead": dead, "total": None}

    def list(self, kind: str) -> Iterator[dict[str, Any]]:
        """Dead letters (read, never acknowledged: they stay). Done params cannot be
        listed: Pulsar keeps no record of acknowledged messages."""
        if kind != "dead":
            raise UnsupportedOperation(
                f"the pulsar engine cannot list {kind} params: Pulsar keeps no record of "
                "acknowledged messages"
            )
        self._connect()
        dead = self._subscribe(self.dead_letter_topic, dead_letter_policy=False)
        rows = []
        try:
            while True:
                message = self._do("receive", lambda: self._receive(dead, 1000))
                if message is None:
                    break
                properties = message.properties() or {}
                param, _ = decode_param(bytes(message.data()), self.decoder, "PULSAR_DECODER")
                try:
                    attempts: Optional[int] = int(properties.get(ATTEMPT, ""))
                except ValueError:
                    attempts = None  # sent there by the client's own policy
                rows.append({
                    "id": properties.get(PARAM_ID) or properties.get(ORIGIN)
                    or str(message.message_id()),
                    "param": param,
                    "attempts": attempts,
                    "reason": properties.get(
                        REASON, "delivered too often (the client's dead-letter policy)"),
                })
        finally:
            dead.close()  # unacknowledged: every dead letter stays
        yield from rows

    def _drop_idle_consumer(self) -> None:
        """Close our consumer if it never handed out a message (``minion-queue`` opens
        the engine): the broker then puts back what it had prefetched. take() opens a
        new one if needed."""
        with self._lock:
            consumer, handed = self._consumer, self._handed_out
            if consumer is None or handed:
                return
            self._consumer = None
        self._do("close", consumer.close)

    def _backlog(self, topic: str) -> tuple[int, int]:
        """(msgBacklog, unackedMessages) of our subscription on ``topic``; (0, 0) when the
        topic or the subscription does not exist."""
        stats = self._outage.call(lambda: self._admin_get(self._admin_path(topic) + "/stats"),
                                  (urllib.error.URLError, ConnectionError, TimeoutError))
        subscription = (stats or {}).get("subscriptions", {}).get(self.subscription) or {}
        return int(subscription.get("msgBacklog", 0)), int(subscription.get("unackedMessages", 0))

    def _admin_base(self) -> str:
        if self.admin_url:
            return self.admin_url.rstrip("/")
        # pulsar://host:6650[,host2:6650] -> http://host:8080 (Pulsar's default web port)
        first = self.connection.split("://", 1)[-1].split(",", 1)[0].split("/", 1)[0]
        host = first.rsplit(":", 1)[0] if ":" in first else first
        scheme = "https" if self.connection.startswith("pulsar+ssl") else "http"
        return f"{scheme}://{host or 'localhost'}:8080"

    @staticmethod
    def _admin_path(topic: str) -> str:
        """``params`` -> ``/admin/v2/persistent/public/default/params``."""
        kind, _, rest = topic.rpartition("://")
        parts = rest.split("/")
        if len(parts) == 1:
            parts = ["public", "default", parts[0]]
        quoted = "/".join(urllib.parse.quote(part, safe="") for part in parts)
        return f"/admin/v2/{kind or 'persistent'}/{quoted}"

    def _admin_get(self, path: str) -> Optional[dict[str, Any]]:
        url = self._admin_base() + path
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body: dict[str, Any] = json.loads(response.read())
                return body
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None  # no such topic yet: nothing in it
            raise EngineError(
                f"the Pulsar admin API at {redact(self._admin_base())} answered {exc.code} "
                f"for {path}: set PULSAR_ADMIN_URL to the broker's web service URL"
            ) from None
