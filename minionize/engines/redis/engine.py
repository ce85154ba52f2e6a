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
* ack: XACK + XDEL, a counter ``<stream>:done`` is incremented, and, when its task
  returned a result, the param's record (a JSON object: ``id``, ``param``, and
  ``result``, the JSON text of what its task returned) goes into the hash
  ``<stream>:results`` under its order key, which goes into the sorted set
  ``<stream>:results:order``, and ``<stream>:results:count`` counts them: a record
deleted outside minionize is an error naming the key that lacks it, never a row that
vanishes. The order key is the id of the param's first entry
  (zero-padded): ``minion-queue results`` lists the done params that returned a result
  in the order they were filled, a page at a time. A param done without a result is
  counted only, as before (keeping it would cost Redis memory for every program task).
  A record stays in Redis, using memory (its param and its result), until those keys
  are deleted.
* retry / release: the entry is acked, deleted and added again at the end of the stream
  with ``tries`` = attempt (retry) or attempt - 1 (release: not counted), so it is
  available to every minion at once. A copy keeps ``first``, its first entry's id.
* dead_letter: XADD to ``<stream>:dead`` with the param and the reason; XACK + XDEL.

Each settlement is one Lua script, so it is atomic and happens only if this minion still
owns the entry (a minion that lost its lease cannot requeue a param that another one now
runs). An ack from such a minion still counts if it comes first (the work is done), and
its result with it; one that comes after the entry was settled writes nothing, so it
never replaces the result that settled it. A settle or a lease renewal that cannot
reach the server is retried under the outage policy (``MINION_OUTAGE_TIMEOUT``, see
``kit.Outage``) until it lands: the
scripts check the entry is still pending, so a settle that landed before its reply was
lost is not applied twice. A success is therefore never turned into a dead letter by
a server restart. Settled entries are deleted: the stream holds only what is to do or in flight,
which keeps it small and makes ``todo`` = length - pending. So the stream belongs to one
consumer group. Needs Redis 6.2 or newer (XAUTOCLAIM).

This module holds the worker's verbs. The engine holds a :class:`~.client.RedisClient`
(``client.py``: the connection, the names of the stream and its keys, the consumer
group, the translation of errors; the Lua scripts are files in ``lua/``) and hands
``minion-queue``'s verbs (fill, list, requeue_dead, reset_expired, status, results) to a
:class:`~.admin.RedisAdmin` over that client (``admin.py``).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from ...errors import EngineError
from ...params import Param
from ..base import Delivery, Engine
from ..kit import DEFAULT_OUTAGE_SECONDS, Interrupted, Unreachable, redact
from .admin import RedisAdmin
from .client import BOOK_FIELDS, HeldEntries, RedisClient, entry_delivery, entry_of, result_record

if TYPE_CHECKING:
    from ...config import Settings

__all__ = ["BOOK_FIELDS", "RedisEngine", "Unreachable"]

log = logging.getLogger("minionize.engines.redis")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "minionize"
DEFAULT_GROUP = "minionize"
#: Longest BLOCK of one XREADGROUP (the socket timeout must exceed it).
MAX_BLOCK = 10.0


class RedisEngine(Engine):
    """Params in a Redis Stream, consumed through a consumer group."""

    name = "redis"
    keeps_results = True
    #: The stream's connection and names; the administration of the stream over it.
    client: RedisClient
    admin: RedisAdmin

    def __init__(
        self,
        *,
        url: str = DEFAULT_URL,
        stream: str = DEFAULT_STREAM,
        group: str = DEFAULT_GROUP,
        decoder: str = "json",
        lease: float = 300.0,
        max_attempts: int = 3,
        consumer: Optional[str] = None,
        outage_timeout: float = DEFAULT_OUTAGE_SECONDS,
    ) -> None:
        self.decoder, self.lease, self.max_attempts = decoder, lease, max_attempts
        consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.client = RedisClient(url=url, stream=stream, group=group, consumer=consumer,
                                  outage_timeout=outage_timeout)
        self.admin = RedisAdmin(self.client, decoder=decoder, lease=lease)
        #: Entry ids delivered by this minion and not settled yet.
        self._running = HeldEntries()
        self._cursor = "-"
        self._next_claim = 0.0

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
        try:
            return self.client.outage.call(lambda: self._take(max_count, timeout),
                                           interruptible=True)
        except Interrupted:
            return []

    def stop_waiting(self) -> None:
        self.client.outage.stopping.set()

    def _take(self, max_count: int, timeout: float) -> list[Delivery]:
        deliveries = self._take_expired(max_count)
        free = max_count - len(deliveries)
        if free > 0:
            block = None if deliveries else int(min(timeout, MAX_BLOCK) * 1000)
            for _stream, entries in self.client.read_new(free, block) or []:
                for entry_id, fields in entries:
                    if fields is not None:
                        deliveries.append(self._decode(entry_id, fields, 1))
        self._running.add(entry_of(d).entry_id for d in deliveries)
        return deliveries

    def _take_expired(self, max_count: int) -> list[Delivery]:
        """Entries whose owner let the lease expire (it died or hung): take them over."""
        now = time.monotonic()
        if now < self._next_claim:
            return []
        reply = self.client.claim_expired(int(self.lease * 1000), self._cursor, max_count,
                                          self._running.sorted())
        if reply is None:
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
        return entry_delivery(entry_id, fields, count, stream=self.client.stream,
                              decoder=self.decoder, max_attempts=self.max_attempts)

    def peek(self, limit: int) -> list[Param]:
        return [self._decode(entry_id, fields, 1).param
                for entry_id, fields in self.client.undelivered(limit)]

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery, result: Optional[str] = None) -> None:
        entry = entry_of(delivery)
        # Without a result nothing is kept but the count (as before results): a done
        # param's record would cost Redis memory for every program task.
        record = "" if result is None else result_record(
            delivery.id, entry.fields.get("param", ""), result)
        # The record is written by the script that acks, or not at all.
        client = self.client
        keys = [client.stream, client.done_key, client.results_key, client.order_key,
                client.results_count_key]
        if self._run_settle(delivery, "", "done", keys, [entry.order_key(), record]) == 0:
            log.warning("redis: %s was already settled elsewhere", delivery.id)

    def retry(self, delivery: Delivery, reason: str) -> None:
        self._requeue(delivery, counted=delivery.attempt, reason=reason)

    def release(self, delivery: Delivery) -> None:
        self._requeue(delivery, counted=delivery.attempt - 1, reason="released")

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        entry, client = entry_of(delivery), self.client
        fields = entry.copy(delivery.id, reason=reason, attempt=str(delivery.attempt),
                            entry=entry.entry_id, consumer=client.consumer,
                            time=f"{time.time():.3f}")
        self._run_settle(delivery, client.consumer, "add", [client.stream, client.dead_stream], fields)

    def _requeue(self, delivery: Delivery, counted: int, reason: str) -> None:
        fields = entry_of(delivery).copy(delivery.id, tries=str(max(0, counted)), reason=reason)
        client = self.client
        self._run_settle(delivery, client.consumer, "add", [client.stream, client.stream], fields)

    def _run_settle(
        self, delivery: Delivery, owner: str, action: str, keys: list[str], tail: list[str]
    ) -> int:
        """Run settle.lua on the delivery's entry (``tail``: the ARGV after the action)."""
        entry = entry_of(delivery)
        args = [self.client.group, entry.entry_id, owner, action, *tail]
        try:
            done = self.client.settle(entry.entry_id, keys, args)
        finally:
            self._running.discard(entry.entry_id)
        if done < 0:
            log.warning(
                "redis: %s was taken over by another minion (lease expired): left to it",
                delivery.id,
            )
        return done

    # -- leases ----------------------------------------------------------------------
    def lease_renewal_interval(self) -> Optional[float]:
        return self.lease / 3

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        ids = [entry_of(d).entry_id for d in deliveries]
        if not ids:
            return
        kept = self.client.extend(ids)
        if kept < len(ids):
            log.warning("redis: %d running entries were taken over by others", len(ids) - kept)

    def reachable_since(self) -> Optional[float]:
        return self.client.calls.reachable_since()

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        self.client.create_group()

    def close(self) -> None:
        try:
            self.client.close(int(self.lease * 1000))
        except EngineError as exc:
            log.warning("redis: %s", redact(str(exc)))

    def describe(self) -> str:
        client = self.client
        return f"redis stream {client.stream!r} (group {client.group!r}) at {redact(client.url)}"

    # -- administration (minion-queue): RedisAdmin, in admin.py ----------------------
    def administration(self) -> RedisAdmin:
        return self.admin
