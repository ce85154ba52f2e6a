"""The connection of the pulsar engine to one topic, which the engine and its
administration share (:class:`PulsarClient`): the client library's client, the names
of the topic, its subscription and dead-letter topic, subscribing, the consumer, the
producers, receiving, and the one translation of the library's errors (``errors``)."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

from ...errors import ConfigError, EngineError
from ..kit import Calls, Outage, Unreachable, redact

log = logging.getLogger("minionize.engines.pulsar")

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


class PulsarClient:
    """The client of one topic and subscription, made on :meth:`connect`; every call
    goes through :attr:`calls` (errors translated, the worker's verbs ridden out under
    the outage policy). ``module`` is the pulsar module, or a stand-in with the same
    calls (tests)."""

    def __init__(self, *, module: Any, topic: str, connection: str, subscription: str,
                 max_attempts: int, dead_letter_topic: str, nack_delay: float,
                 operation_timeout: int, client_log: Optional[str],
                 outage_timeout: float) -> None:
        self.module = module
        self.topic, self.connection, self.subscription = topic, connection, subscription
        self.max_attempts, self.dead_letter_topic = max_attempts, dead_letter_topic
        self.nack_delay, self.operation_timeout = nack_delay, operation_timeout
        self.client_log = client_log
        #: The library's client (None until connect), the consumer of the subscription,
        #: and the producers of releases and of dead letters, made on first use.
        self.pulsar: Any = None
        self.consumer: Any = None
        self._dead_producer: Any = None
        self._release_producer: Any = None
        #: Messages handed out by the current consumer (see drop_idle_consumer).
        self._handed_out = 0
        self._lock = threading.Lock()
        self._transient = tuple(getattr(module, name) for name in TRANSIENT
                                if isinstance(getattr(module, name, None), type))
        #: The consumer was seen disconnected and has not answered since.
        self._reconnecting = False
        #: After a reconnection: idle time counts from then at the earliest (monotonic).
        self._settled_after = 0.0
        self.calls = Calls(self.errors, Outage(f"pulsar topic {topic!r} at {redact(connection)}",
                                               outage_timeout))

    def receive(self, consumer: Any, wait_ms: int) -> Any:
        """A message of ``consumer`` within ``wait_ms``, or None: nothing now."""
        try:
            message = consumer.receive(timeout_millis=wait_ms)
        except self.module.Timeout:
            # While the broker is down, receive just times out (the client reconnects
            # in the background): that is an outage, not an empty topic, so that a
            # minion does not end idle while its broker restarts.
            connected = getattr(consumer, "is_connected", None)
            if connected is not None and not connected():
                self._reconnecting = True
                raise self.module.ConnectError("the consumer is not connected to the broker") from None
            if self._reconnecting:
                # Connected again: a broker that just restarted redelivers in its own
                # time, so nothing within its operation timeout is not "empty" yet.
                self._reconnecting = False
                self._settled_after = time.monotonic() + self.operation_timeout
            return None
        self._reconnecting, self._settled_after = False, 0.0  # it dispatches again
        return message

    def next_message(self, consumer: Any, wait_ms: int) -> Any:
        """:meth:`receive` for the worker: ridden out, and counted as handed out."""
        message = self.calls("receive", lambda: self.receive(consumer, wait_ms), interruptible=True)
        if message is not None:
            self._handed_out += 1
        return message

    def reachable_since(self) -> Optional[float]:
        """The outage policy's answer, and not before a reconnected consumer got a
        message or its broker had ``operation_timeout`` seconds to send one."""
        since = self.calls.reachable_since()
        return None if since is None else max(since, self._settled_after)

    def producer_for_releases(self) -> Any:
        with self._lock:
            if self._release_producer is None:
                self._release_producer = self.calls(
                    "create_producer", lambda: self.pulsar.create_producer(self.topic))
            return self._release_producer

    def dead_letter_producer(self) -> Any:
        with self._lock:
            if self._dead_producer is None:
                # A subscription on the dead-letter topic keeps what is sent there.
                self.subscribe(self.dead_letter_topic, dead_letter_policy=False).close()
                self._dead_producer = self.calls(
                    "create_producer", lambda: self.pulsar.create_producer(self.dead_letter_topic))
            return self._dead_producer

    def connect(self) -> None:
        if self.pulsar is not None:
            return
        try:
            self.pulsar = self.module.Client(
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
        pulsar = self.module
        file_logger = getattr(pulsar, "FileLogger", None)
        if file_logger is None:  # a stand-in without loggers
            return None
        if self.client_log:
            return file_logger(pulsar.LoggerLevel.Info, self.client_log)
        return file_logger(pulsar.LoggerLevel.Error, os.devnull)

    def subscribe(self, topic: str, dead_letter_policy: bool) -> Any:
        pulsar = self.module
        policy = None
        if dead_letter_policy:
            policy = pulsar.ConsumerDeadLetterPolicy(
                max_redeliver_count=self.max_attempts,
                dead_letter_topic=self.dead_letter_topic,
                initial_subscription_name=self.subscription,
            )
        client = self.pulsar
        return self.calls(f"subscribe to {topic!r}", lambda: client.subscribe(
            topic,
            self.subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
            receiver_queue_size=1,
            negative_ack_redelivery_delay_ms=int(self.nack_delay * 1000),
            dead_letter_policy=policy,
        ))

    def open_consumer(self) -> None:
        """Connect and subscribe: the consumer of the worker's verbs."""
        self.connect()
        self.consumer = self.subscribe(self.topic, dead_letter_policy=True)

    def consumer_for_take(self) -> Any:
        """The consumer, subscribed again if :meth:`drop_idle_consumer` closed it."""
        if self.consumer is None and self.pulsar is not None:
            self.consumer = self.subscribe(self.topic, dead_letter_policy=True)
        return self.require_consumer()

    def require_consumer(self) -> Any:
        if self.consumer is None:
            raise EngineError("the pulsar engine is not open")
        return self.consumer

    def drop_idle_consumer(self) -> None:
        """Close our consumer if it never handed out a message (``minion-queue`` opens
        the engine): the broker then puts back what it had prefetched. A take opens a
        new one if needed."""
        with self._lock:
            consumer, handed = self.consumer, self._handed_out
            if consumer is None or handed:
                return
            self.consumer = None
        self.calls("close", consumer.close)

    def close(self) -> None:
        """Close the producers, the consumer and the client; a failure is logged."""
        for thing in (self._release_producer, self._dead_producer, self.consumer, self.pulsar):
            if thing is not None:
                try:
                    thing.close()
                except Exception as exc:  # closing must not hide the run's outcome
                    log.warning("pulsar: closing: %s", redact(str(exc)))
        self._release_producer = self._dead_producer = self.consumer = self.pulsar = None

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
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
        except self.module.PulsarException as exc:
            raise EngineError(
                f"Pulsar {what} on {self.topic!r} failed ({type(exc).__name__}: "
                f"{redact(str(exc))}): check PULSAR_CONNECTION and PULSAR_TOPIC"
            ) from None
