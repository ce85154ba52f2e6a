"""The Redis calls that the redis engine and its administration share: the client, the
consumer group, decoding an entry, a done param's record (written by an ack, read by
``minion-queue results``), and the one translation of the library's errors
(``_errors``); and the engine's bookkeeping of an entry: the fields of the copy a
settle adds (:meth:`_Entry.copy`), and the entries a minion holds (:class:`HeldEntries`)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

from ...errors import ConfigError, EngineError
from ...params import decode_param
from ..base import Delivery
from ..kit import ClientCalls, Unreachable, redact
from .lua import lua

SOCKET_TIMEOUT = 30.0
#: Fields the engine writes; the others of an entry are kept as they are.
BOOK_FIELDS = ("origin", "tries", "reason")


@dataclass
class _Entry:
    """A delivery's handle: the stream entry it came from."""

    entry_id: str
    fields: dict[str, str]

    @property
    def first(self) -> str:
        """The id of the param's first entry (the one fill added): a copy made by a
        retry, a release, a dead letter or reset-expired carries it in ``first``."""
        return self.fields.get("first", self.entry_id)

    def order_key(self) -> str:
        """The param's place in the queue, as text that sorts like stream ids: its first
        entry's id, both numbers zero-padded (a byte-wise order, for ZRANGEBYLEX)."""
        for entry_id in (self.first, self.entry_id):
            ms, _, seq = entry_id.partition("-")
            if ms.isdigit() and seq.isdigit():
                return f"{int(ms):020d}-{int(seq):020d}"
        return self.entry_id  # not a stream id: cannot happen for an entry Redis gave

    def copy(self, origin: str, **book: str) -> list[str]:
        """The fields of the copy of this entry that a retry, a release or a dead letter
        adds: its own fields but the engine's bookkeeping, then ``origin`` (the param's
        stable id), ``first`` and ``book``; flat (``field, value...``), as XADD takes them."""
        fields = {k: v for k, v in self.fields.items() if k not in BOOK_FIELDS}
        fields.update(origin=origin, first=self.first, **book)
        return [text for pair in fields.items() for text in pair]


class HeldEntries:
    """The ids of the entries delivered to this minion and not settled yet, shared by
    its threads: a take-over of expired leases skips them (after an outage this minion's
    own lease may look expired, and claiming it would count an attempt never started)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[str] = set()

    def add(self, ids: Iterable[str]) -> None:
        with self._lock:
            self._ids.update(ids)

    def discard(self, entry_id: str) -> None:
        with self._lock:
            self._ids.discard(entry_id)

    def sorted(self) -> list[str]:
        with self._lock:
            return sorted(self._ids)


def result_record(param_id: str, param_text: str, result: Optional[str]) -> str:
    """What the results hash holds for a done param: a JSON object with its ``id``, its
    ``param`` field as stored in the stream (a JSON string) and the ``result`` its task
    returned, the JSON text kept as given (``null``: none)."""
    return f'{{"id":{json.dumps(param_id)},"param":{json.dumps(param_text)},"result":{result or "null"}}}'


class RedisCalls(ClientCalls):
    """The client and the calls; the engine sets the names and the outage policy."""

    url: str
    stream: str
    group: str
    consumer: str
    decoder: str
    lease: float
    max_attempts: int
    _redis: Any
    _client: Any

    def _connect(self) -> Any:
        try:
            return self._redis.Redis.from_url(
                self.url,
                decode_responses=True,
                encoding_errors="surrogateescape",
                socket_connect_timeout=5,
                socket_timeout=SOCKET_TIMEOUT,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise ConfigError(
                f"MINION_REDIS_URL={redact(self.url)!r} is not a Redis URL ({redact(str(exc))}): "
                "use e.g. redis://127.0.0.1:6379/0"
            ) from None

    def _decode(self, entry_id: str, fields: dict[str, str], count: int) -> Delivery:
        try:
            tries = int(fields.get("tries", "0"))
        except ValueError:
            tries = 0
        attempt = tries + count
        delivery = Delivery(
            param=None, id=fields.get("origin", entry_id), attempt=attempt, handle=_Entry(entry_id, fields)
        )
        if "param" not in fields:
            delivery.param = fields
            delivery.error = (
                f"entry {entry_id} of stream {self.stream!r} has no 'param' field "
                f"(fields: {', '.join(sorted(fields)) or 'none'})"
            )
        else:
            delivery.param, delivery.error = decode_param(
                fields["param"], self.decoder, "MINION_REDIS_DECODER"
            )
        if delivery.error is None and attempt > self.max_attempts:
            delivery.error = (
                f"attempt {attempt} > MINION_MAX_ATTEMPTS={self.max_attempts}: the minions "
                "running it stopped without settling it (killed, lost, or hung past the lease)"
            )
        return delivery

    @staticmethod
    def _entry(delivery: Delivery) -> _Entry:
        if not isinstance(delivery.handle, _Entry):
            raise EngineError(f"delivery {delivery.id} did not come from a redis engine")
        return delivery.handle

    def _forget_consumers(self) -> None:
        """Forget idle consumers that own nothing, this one too if it owns nothing."""
        self._client.register_script(lua("forget"))(
            keys=[self.stream], args=[self.group, int(self.lease * 1000)]
        )
        pending = self._client.xpending_range(
            self.stream, self.group, "-", "+", 1, consumername=self.consumer
        )
        if not pending:
            self._client.xgroup_delconsumer(self.stream, self.group, self.consumer)

    def _create_group(self) -> None:
        """The consumer group, from the start of the stream (creating the stream)."""
        with self._errors("XGROUP CREATE"):
            try:
                self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except self._redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Redis errors become ours, naming the variable to fix."""
        exceptions = self._redis.exceptions
        try:
            yield
        except exceptions.AuthenticationError as exc:
            raise self._refused(redact(str(exc))) from None
        except (exceptions.ConnectionError, exceptions.TimeoutError) as exc:
            raise Unreachable(
                f"cannot reach Redis at {redact(self.url)} ({redact(str(exc))}): check "
                "MINION_REDIS_URL and that the server runs"
            ) from None
        except exceptions.RedisError as exc:
            text = redact(str(exc))
            if "NOAUTH" in text or "WRONGPASS" in text:
                raise self._refused(text) from None
            raise EngineError(f"Redis {what} on stream {self.stream!r} failed: {text}") from None

    def _refused(self, text: str) -> ConfigError:
        return ConfigError(
            f"Redis at {redact(self.url)} refused the credentials ({text}): "
            "check the password in MINION_REDIS_URL"
        )
