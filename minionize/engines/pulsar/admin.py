"""``minion-queue``'s verbs on a Pulsar topic (fill, list, requeue_dead, status):
:class:`PulsarAdmin`, over the engine's :class:`~.client.PulsarClient`, to which
:class:`~minionize.engines.pulsar.engine.PulsarEngine` hands them; the worker's verbs
stay in ``engine.py``. The client library has no admin API: ``status`` reads the broker's REST
admin API (``PULSAR_ADMIN_URL``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any, Optional

from ...errors import EngineError, UnsupportedOperation
from ...params import Param, canonical_json, decode_param
from ..base import Admin
from ..kit import Unreachable, redact
from .client import ATTEMPT, COUNTED, ORIGIN, PARAM_ID, REASON, PulsarClient

DEAD_PROPERTIES = (REASON, ATTEMPT, ORIGIN, PARAM_ID, COUNTED)


def encode_param(param: Param, decoder: str) -> bytes:
    """A message's payload for a param: a string as is (identity) or canonical JSON."""
    if decoder == "identity" and isinstance(param, str):
        return param.encode("utf-8")
    return canonical_json(param).encode("utf-8")


class PulsarAdmin(Admin):
    """The administration of the topic of ``client``, whose params are ``decoder``
    text (``identity`` or ``json``); ``admin_url`` is the broker's REST admin API
    (None: the web port of the first host of the connection)."""

    def __init__(self, client: PulsarClient, *, decoder: str, admin_url: Optional[str]) -> None:
        super().__init__("pulsar")
        self.client = client
        self.decoder = decoder
        self.admin_url = admin_url

    def fill(self, params: Iterable[Param]) -> tuple[int, int]:
        """Publish every param, after subscribing: messages sent to a topic nobody
        subscribes to are dropped. Cannot skip params already sent."""
        client = self.client
        client.connect()
        client.subscribe(client.topic, dead_letter_policy=True).close()

        def send() -> int:
            sent = 0
            producer = client.pulsar.create_producer(client.topic)
            try:
                for param in params:
                    producer.send(encode_param(param, self.decoder))
                    sent += 1
                producer.flush()
            finally:
                producer.close()
            return sent

        return client.calls("send", send, ride_out=False), 0

    def requeue_dead(self) -> int:
        """Move every dead letter back to the topic, its attempts counted afresh."""
        client = self.client
        client.connect()
        client.subscribe(client.topic, dead_letter_policy=True).close()
        dead = client.subscribe(client.dead_letter_topic, dead_letter_policy=False)

        def move() -> int:
            moved = 0
            producer = client.pulsar.create_producer(client.topic)
            try:
                while True:
                    try:
                        message = dead.receive(timeout_millis=1000)
                    except client.module.Timeout:
                        return moved
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

        return client.calls("requeue", move, ride_out=False)

    def status(self) -> dict[str, Any]:
        """From the broker's admin API (``PULSAR_ADMIN_URL``): ``todo`` and ``in_flight``
        (delivered to a minion, not yet acknowledged) of the subscription, ``dead`` the
        backlog of the dead-letter topic. ``expired``, ``done`` and ``total`` are None:
        Pulsar has no leases and keeps no count of acknowledged messages."""
        self.client.drop_idle_consumer()  # else the message it prefetched would count as in flight
        backlog, unacked = self._backlog(self.client.topic)
        in_flight = min(unacked, backlog)
        dead, _ = self._backlog(self.client.dead_letter_topic)
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
        client = self.client
        client.connect()
        dead = client.subscribe(client.dead_letter_topic, dead_letter_policy=False)
        rows = []
        try:
            while True:
                message = client.calls("receive", lambda: client.receive(dead, 1000))
                if message is None:
                    break
                rows.append(self._dead_row(message))
        finally:
            dead.close()  # unacknowledged: every dead letter stays
        yield from rows

    def _dead_row(self, message: Any) -> dict[str, Any]:
        properties = message.properties() or {}
        param, _ = decode_param(bytes(message.data()), self.decoder, "PULSAR_DECODER")
        try:
            attempts: Optional[int] = int(properties.get(ATTEMPT, ""))
        except ValueError:
            attempts = None  # sent there by the client's own policy
        return {
            "id": properties.get(PARAM_ID) or properties.get(ORIGIN) or str(message.message_id()),
            "param": param,
            "attempts": attempts,
            "reason": properties.get(REASON, "delivered too often (the client's dead-letter policy)"),
        }

    def _backlog(self, topic: str) -> tuple[int, int]:
        """(msgBacklog, unackedMessages) of our subscription on ``topic``; (0, 0) when the
        topic or the subscription does not exist."""
        stats = self.client.calls("stats", lambda: self._admin_get(self._admin_path(topic) + "/stats"))
        subscription = (stats or {}).get("subscriptions", {}).get(self.client.subscription) or {}
        return int(subscription.get("msgBacklog", 0)), int(subscription.get("unackedMessages", 0))

    def _admin_base(self) -> str:
        if self.admin_url:
            return self.admin_url.rstrip("/")
        # pulsar://host:6650[,host2:6650] -> http://host:8080 (Pulsar's default web port)
        first = self.client.connection.split("://", 1)[-1].split(",", 1)[0].split("/", 1)[0]
        host = first.rsplit(":", 1)[0] if ":" in first else first
        scheme = "https" if self.client.connection.startswith("pulsar+ssl") else "http"
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
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise Unreachable(
                f"cannot reach the Pulsar admin API at {redact(self._admin_base())} "
                f"({redact(str(exc))}): check PULSAR_ADMIN_URL"
            ) from None
