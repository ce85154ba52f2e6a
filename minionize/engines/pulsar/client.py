"""The Pulsar calls that the pulsar engine and its administration share: the client,
subscribing, the producers, receiving, and the one translation of the library's errors
(``_errors``)."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

from ...errors import ConfigError, EngineError
from ...params import decode_param
from ..base import Delivery
from ..kit import ClientCalls, Unreachable, redact

#: Properties the engine adds to a dead letter (removed when it is requeued).
REASON = "minion-reason"
ATTEMPT = "minion-attempt"
ORIGIN = "minion-origin"
#: Properties of a released copy: the param's id, and how many attempts already ran.
PARAM_ID = "minion-id"
COUNTED = "minion-counted"
#: Client errors that mean "the broker cannot be reached now" (ridden out, see Outage).
TRANSIENT = ("ConnectError", "Timeout", "NotConnected", "LookupError", "ServiceUnitNotReady",
             "BrokerMetadataError", "BrokerPersistenceError", "TooManyLookupRequestException",
             "AlreadyClosed")


def keep_sockets_from_tasks() -> None:
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


class PulsarCalls(ClientCalls):
    """The client and the calls; the engine sets the names and the outage policy."""

    topic: str
    connection: str
    subscription: str
    decoder: str
    max_attempts: int
    dead_letter_topic: str
    nack_delay: float
    operation_timeout: int
    client_log: Optional[str]
    _pulsar: Any
    _transient: tuple[type[BaseException], ...]
    _client: Any
    _consumer: Any
    _dead_producer: Any
    _release_producer: Any
    _lock: threading.Lock
    #: The consumer was seen disconnected and has not answered since.
    _reconnecting = False
    #: After a reconnection: idle time counts from then at the earliest (monotonic).
    _settled_after = 0.0

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

    def _receive(self, consumer: Any, wait_ms: int) -> Any:
        try:
            message = consumer.receive(timeout_millis=wait_ms)
        except self._pulsar.Timeout:
            # While the broker is down, receive just times out (the client reconnects
            # in the background): that is an outage, not an empty topic, so that a
            # minion does not end idle while its broker restarts.
            connected = getattr(consumer, "is_connected", None)
            if connected is not None and not connected():
                self._reconnecting = True
                raise self._pulsar.ConnectError("the consumer is not connected to the broker") from None
            if self._reconnecting:
                # Connected again: a broker that just restarted redelivers in its own
                # time, so nothing within its operation timeout is not "empty" yet.
                self._reconnecting = False
                self._settled_after = time.monotonic() + self.operation_timeout
            return None
        self._reconnecting, self._settled_after = False, 0.0  # it dispatches again
        return message

    def reachable_since(self) -> Optional[float]:
        """The outage policy's answer, and not before a reconnected consumer got a
        message or its broker had ``operation_timeout`` seconds to send one."""
        since = super().reachable_since()
        return None if since is None else max(since, self._settled_after)

    def _producer_for_releases(self) -> Any:
        with self._lock:
            if self._release_producer is None:
                self._release_producer = self._call(
                    "create_producer", lambda: self._client.create_producer(self.topic))
            return self._release_producer

    def _dead_letter_producer(self) -> Any:
        with self._lock:
            if self._dead_producer is None:
                # A subscription on the dead-letter topic keeps what is sent there.
                self._subscribe(self.dead_letter_topic, dead_letter_policy=False).close()
                self._dead_producer = self._call(
                    "create_producer", lambda: self._client.create_producer(self.dead_letter_topic))
            return self._dead_producer

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
        return self._call(f"subscribe to {topic!r}", lambda: client.subscribe(
            topic,
            self.subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
            receiver_queue_size=1,
            negative_ack_redelivery_delay_ms=int(self.nack_delay * 1000),
            dead_letter_policy=policy,
        ))

    def _require_consumer(self) -> Any:
        if self._consumer is None:
            raise EngineError("the pulsar engine is not open")
        return self._consumer

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Client errors become ours: Unreachable while the broker cannot be reached
        (the outage policy rides it out), else EngineError."""
        try:
            yield
        except self._transient as exc:
            raise Unreachable(
                f"cannot reach the Pulsar broker at {redact(self.connection)} to {what} "
                f"({type(exc).__name__}: {redact(str(exc))}): check PULSAR_CONNECTION and that "
                "the broker runs"
            ) from None
        except self._pulsar.PulsarException as exc:
            raise EngineError(
                f"Pulsar {what} on {self.topic!r} failed ({type(exc).__name__}: "
                f"{redact(str(exc))}): check PULSAR_CONNECTION and PULSAR_TOPIC"
            ) from None
