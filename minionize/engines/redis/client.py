"""The connection of the redis engine to one stream, which the engine and its
administration share (:class:`RedisClient`: the client, the names of the stream and of
the keys beside it, the consumer group, the Lua scripts, and the one translation of the
library's errors); and the engine's bookkeeping of an entry: a delivery made of an
entry (:func:`entry_delivery`), the fields of the copy a settle adds
(:meth:`_Entry.copy`), and the entries a minion holds (:class:`HeldEntries`)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ...errors import ConfigError, EngineError
from ...params import decode_param
from ..base import Delivery
from ..kit import Calls, Outage, Unreachable, optional_import, redact
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


def entry_of(delivery: Delivery) -> _Entry:
    """The stream entry a delivery came from; EngineError if another engine made it."""
    if not isinstance(delivery.handle, _Entry):
        raise EngineError(f"delivery {delivery.id} did not come from a redis engine")
    return delivery.handle


def entry_delivery(entry_id: str, fields: dict[str, str], count: int, *, stream: str,
                   decoder: str, max_attempts: int) -> Delivery:
    """The delivery of an entry of ``stream`` delivered ``count`` times: attempt =
    ``tries`` + ``count``; ``error`` says why it cannot run (no ``param`` field, a param
    that does not decode, attempts past ``max_attempts``)."""
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
            f"entry {entry_id} of stream {stream!r} has no 'param' field "
            f"(fields: {', '.join(sorted(fields)) or 'none'})"
        )
    else:
        delivery.param, delivery.error = decode_param(fields["param"], decoder, "MINION_REDIS_DECODER")
    if delivery.error is None and attempt > max_attempts:
        delivery.error = (
            f"attempt {attempt} > MINION_MAX_ATTEMPTS={max_attempts}: the minions "
            "running it stopped without settling it (killed, lost, or hung past the lease)"
        )
    return delivery


class RedisClient:
    """The client of one stream and consumer group: every call goes through
    :attr:`calls` (errors translated, the worker's verbs ridden out under the outage
    policy), and the stream's keys are named here."""

    def __init__(self, *, url: str, stream: str, group: str, consumer: str,
                 outage_timeout: float) -> None:
        self.url, self.stream, self.group, self.consumer = url, stream, group, consumer
        #: Beside the stream: the dead letters, the count of done params, every param's id.
        self.dead_stream, self.done_key, self.ids_key = (f"{stream}:{key}" for key in ("dead", "done", "ids"))
        #: Done params' records by order key, those keys in queue order, and how many.
        self.results_key, self.order_key = f"{stream}:results", f"{stream}:results:order"
        self.results_count_key = f"{stream}:results:count"
        #: The redis module, and the connection.
        self.module = optional_import("redis", "the redis engine", "redis")
        self.redis: Any = self._connect()
        self._settle = self.redis.register_script(lua("settle"))
        self._claim = self.redis.register_script(lua("claim"))
        self._extend = self.redis.register_script(lua("extend"))
        self.outage = Outage(f"redis stream {stream!r} at {redact(url)}", outage_timeout)
        self.calls = Calls(self.errors, self.outage)

    def _connect(self) -> Any:
        try:
            return self.module.Redis.from_url(
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

    def script(self, name: str) -> Callable[..., Any]:
        """The Lua script ``<name>.lua`` (``fill``, ``results``, ...), registered now."""
        return self.redis.register_script(lua(name))  # type: ignore[no-any-return]

    # -- the worker's calls ------------------------------------------------------------
    def read_new(self, count: int, block: Optional[int]) -> Any:
        """XREADGROUP ``>``: up to ``count`` entries never delivered, waiting ``block``
        ms (None: not at all); the group made again if it is gone."""
        with self.errors("XREADGROUP"):
            try:
                return self._read(count, block)
            except self.module.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.create_group()  # the stream was deleted, or the server restarted
                return self._read(count, block)

    def _read(self, count: int, block: Optional[int]) -> Any:
        return self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block or None
        )

    def claim_expired(self, lease_ms: int, cursor: str, count: int, running: list[str]) -> Any:
        """claim.lua: up to ``count`` entries idle for ``lease_ms``, from ``cursor``, but
        those in ``running``; None when the group was gone (made again)."""
        with self.errors("XCLAIM"):
            try:
                return self._claim(keys=[self.stream],
                                   args=[self.group, self.consumer, lease_ms, cursor, count, *running])
            except self.module.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.create_group()  # the stream was deleted, or the server restarted
                return None

    def settle(self, entry_id: str, keys: list[str], args: list[str]) -> int:
        """settle.lua, retried until it lands: the script acts only while the entry is
        pending (and, but for an ack, ours), so a retry after a lost reply is harmless."""
        return int(self.calls(f"settling {entry_id}", lambda: self._settle(keys=keys, args=args)))

    def extend(self, ids: list[str]) -> int:
        """extend.lua: the leases of the entries ``ids`` this consumer owns; how many."""
        return int(self.calls(
            "XCLAIM", lambda: self._extend(keys=[self.stream], args=[self.group, self.consumer, *ids])
        ))

    def undelivered(self, limit: int) -> Any:
        """Up to ``limit`` entries the group has not delivered yet (a command's call)."""
        def entries() -> Any:
            start = "-"
            if self.redis.exists(self.stream):
                for info in self.redis.xinfo_groups(self.stream):
                    if info["name"] == self.group:
                        start = "(" + info["last-delivered-id"]
            return self.redis.xrange(self.stream, min=start, count=limit)

        return self.calls("XINFO GROUPS", entries, ride_out=False)

    # -- the group and the connection ----------------------------------------------------
    def create_group(self) -> None:
        """The consumer group, from the start of the stream (creating the stream)."""
        with self.errors("XGROUP CREATE"):
            try:
                self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except self.module.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def close(self, lease_ms: int) -> None:
        """Forget idle consumers that own nothing (idle for ``lease_ms``), this one too
        if it owns nothing; then close the connection."""
        try:
            self.calls("closing", lambda: self._forget_consumers(lease_ms), ride_out=False)
        finally:
            self.redis.close()

    def _forget_consumers(self, lease_ms: int) -> None:
        self.script("forget")(keys=[self.stream], args=[self.group, lease_ms])
        pending = self.redis.xpending_range(
            self.stream, self.group, "-", "+", 1, consumername=self.consumer
        )
        if not pending:
            self.redis.xgroup_delconsumer(self.stream, self.group, self.consumer)

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Redis errors become ours, naming the variable to fix."""
        exceptions = self.module.exceptions
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
