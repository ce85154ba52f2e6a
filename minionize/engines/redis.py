"""The ``redis`` engine: a queue of params in a Redis Stream, shared through a consumer group.

Every minion is a consumer of one group (``MINION_REDIS_GROUP``) on one stream
(``MINION_REDIS_STREAM``). An entry holds the param in its ``param`` field (canonical
JSON, as ``minion-queue fill`` writes it) and, once it went round, bookkeeping fields:
``origin`` (the id of the first entry, the param's stable id) and ``tries`` (attempts
already counted before this entry existed).

* fill: each param is added once: its id (a hash of its canonical JSON) goes into the
  set ``<stream>:ids`` in the same Lua script as the XADD, so a param already present
  (todo, in flight, done or dead) is skipped, even by two fills at once.
* take: first XCLAIM entries whose lease expired and that this minion is not running
  (a dead minion's work comes back, counting an attempt: the delivery count grows),
  then XREADGROUP ``>`` with COUNT = the free slots and BLOCK = the timeout.
  attempt = ``tries`` + the delivery count. A minion never claims an entry it runs
  itself (after an outage its own lease may look expired): that would count an
  attempt that never started.
* extend: XCLAIM ... JUSTID on the entries this minion still owns resets their idle time
  (the lease), every MINION_LEASE / 3 seconds.
* ack: XACK + XDEL, and a counter ``<stream>:done`` is incremented.
* retry / release: the entry is acked, deleted and added again at the end of the stream
  with ``tries`` = attempt (retry) or attempt - 1 (release: not counted), so it is
  available to every minion at once.
* dead_letter: XADD to ``<stream>:dead`` with the param and the reason; XACK + XDEL.

Each settlement is one Lua script, so it is atomic and happens only if this minion still
owns the entry (a minion that lost its lease cannot requeue a param that another one now
runs). A settle or a lease renewal that cannot reach the server is retried under the
outage policy (``MINION_OUTAGE_TIMEOUT``, see ``_kit.Outage``) until it lands: the
scripts check the entry is still pending, so a settle that landed before its reply was
lost is not applied twice. A success is therefore never turned into a dead letter by
a server restart. Settled entries are deleted: the stream holds only what is to do or in flight,
which keeps it small and makes ``todo`` = length - pending. So the stream belongs to one
consumer group. Needs Redis 6.2 or newer (XAUTOCLAIM).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from ..errors import ConfigError, EngineError, UnsupportedOperation
from ._kit import DEFAULT_OUTAGE_SECONDS, Outage, canonical_json, optional_import, redact
from .base import Delivery, Engine, Param, decode_param

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "minionize"
DEFAULT_GROUP = "minionize"
#: Longest BLOCK of one XREADGROUP (the socket timeout must exceed it).
MAX_BLOCK = 10.0
SOCKET_TIMEOUT = 30.0
#: Params added per fill script.
FILL_BATCH = 1000
#: Fields the engine writes; the others of an entry are kept as they are.
BOOK_FIELDS = ("origin", "tries", "reason")

# KEYS: stream, target. ARGV: group, entry id, owner ('' = any), action, field, value...
# action: done (INCR target), add (XADD target the fields), drop (nothing more).
# Returns 1 when settled, 0 when the entry is no longer pending, -1 when another owns it.
SETTLE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return 0 end
if ARGV[3] ~= '' and p[1][2] ~= ARGV[3] then return -1 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[4] == 'done' then
  redis.call('INCR', KEYS[2])
elseif ARGV[4] == 'add' then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
end
return 1
"""

# KEYS: stream, ids set. ARGV: param id, text, param id, text... Adds each param whose
# id is new (SADD and XADD together); returns how many were added.
FILL = """
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'param', ARGV[i + 1], 'origin', ARGV[i])
    added = added + 1
  end
end
return added
"""

# KEYS: stream. ARGV: group, consumer, min idle ms, start id, count, then the ids this
# consumer runs (never claimed: claiming raises the delivery count, that is, an attempt).
# Claims up to count entries idle that long; returns {next start, {id, fields, delivery
# count}, ...}; next start is '' when the whole pending list was scanned. Entries
# deleted meanwhile are acked away.
CLAIM = """
local mine = {}
for i = 6, #ARGV do mine[ARGV[i]] = true end
local want = tonumber(ARGV[5])
local scan = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', want * 4 + 10)
local out = {''}
local taken = 0
for _, p in ipairs(scan) do
  if taken >= want then out[1] = p[1]; return out end
  if not (p[2] == ARGV[2] and mine[p[1]]) then
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], p[1])
    if #c > 0 then
      if c[1][2] then
        local q = redis.call('XPENDING', KEYS[1], ARGV[1], p[1], p[1], 1)
        table.insert(out, {c[1][1], c[1][2], q[1][4]})
        taken = taken + 1
      else
        redis.call('XACK', KEYS[1], ARGV[1], p[1])
      end
    end
  end
end
if #scan >= want * 4 + 10 then out[1] = '(' .. scan[#scan][1] end
return out
"""

# KEYS: stream. ARGV: group, consumer, id... Resets the idle time of the entries this
# consumer still owns; returns how many.
EXTEND = """
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"""

# KEYS: dead stream, stream. ARGV: count. Moves up to count dead letters back, attempts
# reset; returns how many.
REQUEUE_DEAD = """
local drop = {reason=1, attempt=1, entry=1, consumer=1, time=1, tries=1}
local n = 0
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])) do
  if redis.call('XDEL', KEYS[1], e[1]) == 1 then
    local fields = {}
    for i = 1, #e[2], 2 do
      if not drop[e[2][i]] then
        table.insert(fields, e[2][i]); table.insert(fields, e[2][i + 1])
      end
    end
    table.insert(fields, 'tries'); table.insert(fields, '0')
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    n = n + 1
  end
end
return n
"""

# KEYS: stream. ARGV: group, min idle ms, cursor, count. Puts entries whose lease expired
# back at the end of the stream, the lost attempt counted; returns {next cursor, n}.
RESET = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], 'minion-queue', ARGV[2], ARGV[3],
                    'COUNT', ARGV[4])
local n = 0
for _, e in ipairs(r[2]) do
  if e[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    local fields, tries, origin = {}, 0, e[1]
    for i = 1, #e[2], 2 do
      local k, v = e[2][i], e[2][i + 1]
      if k == 'tries' then tries = tonumber(v) or 0
      elseif k == 'origin' then origin = v
      else table.insert(fields, k); table.insert(fields, v) end
    end
    local counted = tries + p[1][4] - 1
    table.insert(fields, 'origin'); table.insert(fields, origin)
    table.insert(fields, 'tries'); table.insert(fields, tostring(counted))
    redis.call('XACK', KEYS[1], ARGV[1], e[1])
    redis.call('XDEL', KEYS[1], e[1])
    redis.call('XADD', KEYS[1], '*', unpack(fields))
    n = n + 1
  end
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], 'minion-queue')
return {r[1], n}
"""

# KEYS: stream. ARGV: group, min idle ms. Forgets consumers that own nothing and were
# idle that long (minions that ended or died); a live one is recreated by its next read.
FORGET = """
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    n = n + 1
  end
end
return n
"""


class Unreachable(EngineError):
    """The server does not answer (refused, reset, timed out)."""


def _import_redis() -> Any:
    return optional_import("redis", "the redis engine", "redis")


def encode_param(param: Param, decoder: str) -> str:
    """The ``param`` field for a param: canonical JSON, or the string itself (identity).
    Raises ValueError for what standard JSON cannot hold (NaN, infinities)."""
    if decoder == "identity" and isinstance(param, str):
        return param
    return canonical_json(param)


def param_id(param: Param) -> str:
    """A param's stable id: a hash of its canonical JSON (equal params, one id)."""
    return hashlib.sha256(canonical_json(param).encode("utf-8")).hexdigest()[:16]


@dataclass
class _Entry:
    """A delivery's handle: the stream entry it came from."""

    entry_id: str
    fields: dict[str, str]


class RedisEngine(Engine):
    """Params in a Redis Stream, consumed through a consumer group."""

    name = "redis"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        stream: str = DEFAULT_STREAM,
        group: str = DEFAULT_GROUP,
        decoder: str = "json",
        lease: float = 300.0,
        max_attempts: int = 3,
        consumer: Optional[str] = None,
        outage_timeout: float = DEFAULT_OUTAGE_SECONDS,
    ) -> None:
        self.url = url
        self.stream = stream
        self.group = group
        self.decoder = decoder
        self.lease = lease
        self.max_attempts = max_attempts
        self.dead_stream = f"{stream}:dead"
        self.done_key = f"{stream}:done"
        self.ids_key = f"{stream}:ids"
        self.consumer = consumer or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self._redis = _import_redis()
        try:
            self._client: Any = self._redis.Redis.from_url(
                url,
                decode_responses=True,
                encoding_errors="surrogateescape",
                socket_connect_timeout=5,
                socket_timeout=SOCKET_TIMEOUT,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise ConfigError(
                f"MINION_REDIS_URL={redact(url)!r} is not a Redis URL ({redact(str(exc))}): "
                "use e.g. redis://127.0.0.1:6379/0"
            ) from None
        self._settle = self._client.register_script(SETTLE)
        self._claim = self._client.register_script(CLAIM)
        self._extend = self._client.register_script(EXTEND)
        self._lock = threading.Lock()
        #: Entry ids delivered by this minion and not settled yet.
        self._running: set[str] = set()
        self._cursor = "-"
        self._next_claim = 0.0
        self._outage = Outage(
            f"redis stream {stream!r} at {redact(url)}", outage_timeout
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisEngine:
        env = settings.env
        return cls(
            url=env.str("MINION_REDIS_URL", DEFAULT_URL) or DEFAULT_URL,
            stream=env.str("MINION_REDIS_STREAM", DEFAULT_STREAM) or DEFAULT_STREAM,
            group=env.str("MINION_REDIS_GROUP", DEFAULT_GROUP) or DEFAULT_GROUP,
            decoder=env.choice("MINION_REDIS_DECODER", "json", ("json", "identity")),
            lease=settings.lease,
            max_attempts=settings.max_attempts,
            outage_timeout=settings.outage_timeout,
        )

    # -- taking ----------------------------------------------------------------------
    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        if max_count < 1:
            return []
        # Ride out a restart of the server (a pod rescheduled, a failover): nothing is
        # lost meanwhile, pending entries stay pending. Give up after the outage timeout.
        return self._retried(lambda: self._take(max_count, timeout))

    def _retried(self, call: Callable[[], T]) -> T:
        """``call()`` under the outage policy: retried while the server is unreachable."""
        return self._outage.call(call, (Unreachable,))

    def _take(self, max_count: int, timeout: float) -> list[Delivery]:
        deliveries = self._take_expired(max_count)
        free = max_count - len(deliveries)
        if free > 0:
            block = None if deliveries else int(min(timeout, MAX_BLOCK) * 1000)
            with self._errors("XREADGROUP"):
                try:
                    reply = self._read(free, block)
                except self._redis.exceptions.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    self._create_group()  # the stream was deleted, or the server restarted
                    reply = self._read(free, block)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    if fields is not None:
                        deliveries.append(self._decode(entry_id, fields, 1))
        with self._lock:
            self._running.update(self._entry(d).entry_id for d in deliveries)
        return deliveries

    def _read(self, count: int, block: Optional[int]) -> Any:
        return self._client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block or None
        )

    def _take_expired(self, max_count: int) -> list[Delivery]:
        """Entries whose owner let the lease expire (it died or hung): take them over."""
        now = time.monotonic()
        if now < self._next_claim:
            return []
        with self._lock:
            running = sorted(self._running)
        with self._errors("XCLAIM"):
            try:
                reply = self._claim(
                    keys=[self.stream],
                    args=[self.group, self.consumer, int(self.lease * 1000), self._cursor,
                          max_count, *running],
                )
            except self._redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._create_group()  # the stream was deleted, or the server restarted
                return []
        self._cursor = reply[0] or "-"
        claimed = reply[1:]
        if not reply[0] and len(claimed) < max_count:
            self._next_claim = now + min(1.0, self.lease / 4)
        deliveries = []
        for entry_id, flat, count in claimed:
            log.warning("redis: took over %s, whose lease expired", entry_id)
            fields = dict(zip(flat[::2], flat[1::2]))
            deliveries.append(self._decode(entry_id, fields, int(count)))
        return deliveries

    def _decode(self, entry_id: str, fields: dict[str, str], count: int) -> Delivery:
        try:
            tries = int(fields.get("tries", "0"))
        except ValueError:
            tries = 0
        attempt = tries + count
        delivery = Delivery(
            param=None,
            id=fields.get("origin", entry_id),
            attempt=attempt,
            handle=_Entry(entry_id, fields),
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

    def peek(self, limit: int) -> list[Param]:
        start = "-"
        with self._errors("XINFO GROUPS"):
            if self._client.exists(self.stream):
                for info in self._client.xinfo_groups(self.stream):
                    if info["name"] == self.group:
                        start = "(" + info["last-delivered-id"]
            entries = self._client.xrange(self.stream, min=start, count=limit)
        return [self._decode(entry_id, fields, 1).param for entry_id, fields in entries]

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery) -> None:
        if self._run_settle(delivery, "", "done", self.done_key, []) == 0:
            log.warning("redis: %s was already settled elsewhere", delivery.id)

    def retry(self, delivery: Delivery, reason: str) -> None:
        self._requeue(delivery, counted=delivery.attempt, reason=reason)

    def release(self, delivery: Delivery) -> None:
        self._requeue(delivery, counted=delivery.attempt - 1, reason="released")

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        entry = self._entry(delivery)
        fields = {k: v for k, v in entry.fields.items() if k not in BOOK_FIELDS}
        fields.update(
            origin=delivery.id,
            reason=reason,
            attempt=str(delivery.attempt),
            entry=entry.entry_id,
            consumer=self.consumer,
            time=f"{time.time():.3f}",
        )
        self._run_settle(delivery, self.consumer, "add", self.dead_stream, _flat(fields))

    def _requeue(self, delivery: Delivery, counted: int, reason: str) -> None:
        entry = self._entry(delivery)
        fields = {k: v for k, v in entry.fields.items() if k not in BOOK_FIELDS}
        fields.update(origin=delivery.id, tries=str(max(0, counted)), reason=reason)
        self._run_settle(delivery, self.consumer, "add", self.stream, _flat(fields))

    def _run_settle(
        self, delivery: Delivery, owner: str, action: str, target: str, fields: list[str]
    ) -> int:
        entry = self._entry(delivery)

        def settle() -> int:
            with self._errors(f"settling {entry.entry_id}"):
                return int(
                    self._settle(
                        keys=[self.stream, target],
                        args=[self.group, entry.entry_id, owner, action, *fields],
                    )
                )

        try:
            # Retried until it lands: the script acts only while the entry is pending
            # (and, but for an ack, ours), so a retry after a lost reply is harmless.
            done = self._retried(settle)
        finally:
            with self._lock:
                self._running.discard(entry.entry_id)
        if done < 0:
            log.warning(
                "redis: %s was taken over by another minion (lease expired): left to it",
                delivery.id,
            )
        return done

    @staticmethod
    def _entry(delivery: Delivery) -> _Entry:
        if not isinstance(delivery.handle, _Entry):
            raise EngineError(f"delivery {delivery.id} did not come from a redis engine")
        return delivery.handle

    # -- leases ----------------------------------------------------------------------
    def lease_renewal_interval(self) -> Optional[float]:
        return self.lease / 3

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        ids = [self._entry(d).entry_id for d in deliveries]
        if not ids:
            return
        def extend() -> int:
            with self._errors("XCLAIM"):
                return int(
                    self._extend(keys=[self.stream], args=[self.group, self.consumer, *ids])
                )

        kept = self._retried(extend)
        if kept < len(ids):
            log.warning("redis: %d running entries were taken over by others", len(ids) - kept)

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        self._create_group()

    def close(self) -> None:
        try:
            with self._errors("closing"):
                self._client.register_script(FORGET)(
                    keys=[self.stream], args=[self.group, int(self.lease * 1000)]
                )
                pending = self._client.xpending_range(
                    self.stream, self.group, "-", "+", 1, consumername=self.consumer
                )
                if not pending:
                    self._client.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except EngineError as exc:
            log.warning("redis: %s", redact(str(exc)))
        finally:
            self._client.close()

    def describe(self) -> str:
        return (
            f"redis stream {self.stream!r} (group {self.group!r}) at {redact(self.url)}"
        )

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
        """Redis errors become EngineError naming the variable to fix."""
        exceptions = self._redis.exceptions
        try:
            yield
        except exceptions.AuthenticationError as exc:
            raise ConfigError(
                f"Redis at {redact(self.url)} refused the credentials ({redact(str(exc))}): "
                "check the password in MINION_REDIS_URL"
            ) from None
        except (exceptions.ConnectionError, exceptions.TimeoutError) as exc:
            raise Unreachable(
                f"cannot reach Redis at {redact(self.url)} ({redact(str(exc))}): check "
                "MINION_REDIS_URL and that the server runs"
            ) from None
        except exceptions.RedisError as exc:
            text = redact(str(exc))
            if "NOAUTH" in text or "WRONGPASS" in text:
                raise ConfigError(
                    f"Redis at {redact(self.url)} refused the credentials ({text}): "
                    "check the password in MINION_REDIS_URL"
                ) from None
            raise EngineError(
                f"Redis {what} on stream {self.stream!r} failed: {text}"
            ) from None

    # -- administration (minion-queue) -----------------------------------------------
    def fill(self, params: Iterable[Param]) -> tuple[int, int]:
        """Add params; a param already added to this stream (todo, in flight, done or
        dead) is skipped. Raises ValueError for NaN or infinities (not standard JSON)."""
        self._create_group()  # first, so that no reader can miss what is added
        script = self._client.register_script(FILL)
        added = skipped = 0
        batch: list[str] = []

        def flush() -> None:
            nonlocal added, skipped
            with self._errors("XADD"):
                n = int(script(keys=[self.stream, self.ids_key], args=batch))
            added += n
            skipped += len(batch) // 2 - n
            batch.clear()

        for param in params:
            batch += [param_id(param), encode_param(param, self.decoder)]
            if len(batch) >= 2 * FILL_BATCH:
                flush()
        if batch:
            flush()
        return added, skipped

    def status(self) -> dict[str, Any]:
        with self._errors("status"):
            length = int(self._client.xlen(self.stream))
            pending = 0
            if length:
                with contextlib.suppress(self._redis.exceptions.ResponseError):
                    pending = int(self._client.xpending(self.stream, self.group)["pending"])
            expired = 0
            if pending:
                expired = len(
                    self._client.xpending_range(
                        self.stream, self.group, "-", "+", pending, idle=int(self.lease * 1000)
                    )
                )
            dead = int(self._client.xlen(self.dead_stream))
            done = int(self._client.get(self.done_key) or 0)
        todo = max(0, length - pending)
        return {
            "todo": todo,
            "in_flight": pending,
            "expired": expired,
            "done": done,
            "dead": dead,
            "total": todo + pending + done + dead,
        }

    def requeue_dead(self) -> int:
        self._create_group()
        script = self._client.register_script(REQUEUE_DEAD)
        moved = 0
        while True:
            with self._errors("requeueing dead letters"):
                n = int(script(keys=[self.dead_stream, self.stream], args=[500]))
            if n == 0:
                return moved
            moved += n

    def reset_expired(self) -> int:
        script = self._client.register_script(RESET)
        cursor, reset = "0-0", 0
        with self._errors("resetting expired leases"):
            if not self._client.exists(self.stream):
                return 0
            while True:
                cursor, n = script(
                    keys=[self.stream], args=[self.group, int(self.lease * 1000), cursor, 500]
                )
                reset += int(n)
                if cursor == "0-0":
                    return reset

    def list(self, kind: str) -> Iterator[dict[str, Any]]:
        if kind != "dead":
            raise UnsupportedOperation(
                f"the redis engine cannot list {kind} params: it counts done params "
                f"(key {self.done_key!r}) but does not keep them"
            )
        start = "-"
        while True:
            with self._errors("XRANGE"):
                entries = self._client.xrange(self.dead_stream, min=start, count=500)
            for entry_id, fields in entries:
                text = fields.get("param", "")
                param: Any = text
                if self.decoder == "json":
                    with contextlib.suppress(ValueError):
                        param = json.loads(text)
                try:
                    attempts = int(fields.get("attempt", "0"))
                except ValueError:
                    attempts = 0
                yield {
                    "id": fields.get("origin", entry_id),
                    "param": param,
                    "attempts": attempts,
                    "reason": fields.get("reason", ""),
                }
            if len(entries) < 500:
                return
            start = "(" + entries[-1][0]


def _flat(fields: dict[str, str]) -> list[str]:
    flat: list[str] = []
    for key, value in fields.items():
        flat += [key, value]
    return flat
