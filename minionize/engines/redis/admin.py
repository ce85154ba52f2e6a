"""``minion-queue``'s verbs on a Redis stream (fill, list, requeue_dead, reset_expired,
status, results): :class:`RedisAdmin`, over the engine's :class:`~.client.RedisClient`,
to which :class:`~minionize.engines.redis.engine.RedisEngine` hands them; the worker's
verbs stay in ``engine.py``. A command fails at once when the server cannot be reached."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from ...errors import EngineError, UnsupportedOperation
from ...params import Param, canonical_json
from ..base import Admin
from .client import RedisClient

#: Params added per fill script.
FILL_BATCH = 1000
#: Entries read or moved per round trip.
PAGE = 500
#: Results read per round trip stop once they hold this many bytes (one reply stays
#: small, whatever their size: a result may be MINION_RESULT_MAX_BYTES).
RESULTS_PAGE_BYTES = 4 << 20


def encode_param(param: Param, decoder: str) -> str:
    """The ``param`` field for a param: canonical JSON, or the string itself (identity).
    Raises ValueError for what standard JSON cannot hold (NaN, infinities)."""
    if decoder == "identity" and isinstance(param, str):
        return param
    return canonical_json(param)


def stream_param_id(param: Param) -> str:
    """The id under which a stream keeps a param in ``<stream>:ids`` (what makes fill
    skip a param already added): sha256 of its canonical JSON, 16 hex digits; equal
    params, one id. The sweep queue names its params with another hash, its own: each
    id is stored by its engine, and queues already filled depend on it, so neither
    changes (a param filled again after a change would be added twice)."""
    return hashlib.sha256(canonical_json(param).encode("utf-8")).hexdigest()[:16]


class RedisAdmin(Admin):
    """The administration of the stream of ``client``, whose params are ``decoder``
    text (``json`` or ``identity``) and whose leases last ``lease`` seconds."""

    def __init__(self, client: RedisClient, *, decoder: str, lease: float) -> None:
        super().__init__("redis")
        self.client = client
        self.decoder = decoder
        self.lease = lease

    def fill(self, params: Iterable[Param]) -> tuple[int, int]:
        """Add params; a param already added to this stream (todo, in flight, done or
        dead) is skipped. Raises ValueError for NaN or infinities (not standard JSON)."""
        client = self.client
        client.create_group()  # first, so that no reader can miss what is added
        script = client.script("fill")
        keys = [client.stream, client.ids_key]
        added = skipped = 0
        batch: list[str] = []

        def flush() -> None:
            nonlocal added, skipped
            n = int(client.calls("XADD", lambda: script(keys=keys, args=batch), ride_out=False))
            added += n
            skipped += len(batch) // 2 - n
            batch.clear()

        for param in params:
            batch += [stream_param_id(param), encode_param(param, self.decoder)]
            if len(batch) >= 2 * FILL_BATCH:
                flush()
        if batch:
            flush()
        return added, skipped

    def status(self) -> dict[str, Any]:
        """Counters: ``todo`` = length - pending (settled entries are deleted)."""
        length, pending, expired, dead, done = self.client.calls("status", self._counters, ride_out=False)
        todo = max(0, length - pending)
        return {
            "todo": todo,
            "in_flight": pending,
            "expired": expired,
            "done": done,
            "dead": dead,
            "total": todo + pending + done + dead,
        }

    def _counters(self) -> tuple[int, int, int, int, int]:
        client, redis = self.client, self.client.redis
        length = int(redis.xlen(client.stream))
        pending = expired = 0
        if length:
            with contextlib.suppress(client.module.exceptions.ResponseError):
                pending = int(redis.xpending(client.stream, client.group)["pending"])
        if pending:
            idle = int(self.lease * 1000)
            expired = len(redis.xpending_range(client.stream, client.group, "-", "+", pending, idle=idle))
        dead, done = int(redis.xlen(client.dead_stream)), int(redis.get(client.done_key) or 0)
        return length, pending, expired, dead, done

    def requeue_dead(self) -> int:
        """Move every dead letter back to the stream, its attempts counted afresh."""
        client = self.client
        client.create_group()
        script = client.script("requeue_dead")
        keys = [client.dead_stream, client.stream]
        moved = 0
        while True:
            n = int(client.calls("requeueing dead letters",
                                 lambda: script(keys=keys, args=[PAGE]), ride_out=False))
            if n == 0:
                return moved
            moved += n

    def reset_expired(self) -> int:
        """Put the entries whose lease expired back at the end of the stream now."""
        client = self.client
        script = client.script("reset_expired")
        idle = int(self.lease * 1000)

        def reset() -> int:
            cursor, total = "0-0", 0
            if not client.redis.exists(client.stream):
                return 0
            while True:
                cursor, n = script(keys=[client.stream], args=[client.group, idle, cursor, PAGE])
                total += int(n)
                if cursor == "0-0":
                    return total

        return client.calls("resetting expired leases", reset, ride_out=False)

    def list(self, kind: str) -> Iterator[dict[str, Any]]:
        """Dead letters, with their reason (done params are counted, not kept; those
        that returned a value are in :meth:`results`)."""
        if kind != "dead":
            raise UnsupportedOperation(
                f"the redis engine cannot list {kind} params: it counts them and keeps only "
                "those whose task returned a value (`minion-queue results` lists them)"
            )
        client = self.client
        start = "-"
        while True:
            entries = client.calls(
                "XRANGE", lambda: client.redis.xrange(client.dead_stream, min=start, count=PAGE),  # noqa: B023
                ride_out=False,
            )
            for entry_id, fields in entries:
                yield self._dead_row(entry_id, fields)
            if len(entries) < PAGE:
                return
            start = "(" + entries[-1][0]

    def results(self) -> Iterator[dict[str, Any]]:
        """Done params whose task returned a value, in the order they were filled (their
        first entry's id), with their results, read a page at a time (``<stream>:results:order``, then
        ``<stream>:results``). A result stored and deleted since, or a record that is
        not one, is an EngineError naming the key (and the entry), never a row that
        vanishes nor a traceback."""
        self._check_results_count()
        client = self.client
        script = client.script("results")
        keys = [client.order_key, client.results_key]
        start = "-"
        while True:
            args = [start, PAGE, RESULTS_PAGE_BYTES]
            reply = client.calls(
                "reading results", lambda: script(keys=keys, args=args), ride_out=False,  # noqa: B023
            )
            if not reply:
                return
            for key, record in zip(reply[::2], reply[1::2]):
                if record is None:
                    raise self._lost(f"the entry {key!r} of {client.results_key!r}")
                yield self._result_row(key, record)
            start = "(" + reply[-2]

    def _check_results_count(self) -> None:
        """Raise if fewer results are kept than acks stored (in one transaction)."""
        client = self.client

        def counts() -> Any:
            pipe = client.redis.pipeline(transaction=True)
            pipe.zcard(client.order_key).hlen(client.results_key).get(client.results_count_key)
            return pipe.execute()

        ordered, kept, stored = client.calls("reading results", counts, ride_out=False)
        stored = int(stored or 0)  # none: a queue filled before the count was kept
        for key, have in ((client.results_key, int(kept)), (client.order_key, int(ordered))):
            if have < stored:
                raise self._lost(f"{stored - have} of the {stored} entries of {key!r}")

    def _lost(self, what: str) -> EngineError:
        return EngineError(
            f"Redis lacks {what}: results stored by acks were deleted outside minionize "
            "and are lost; restore those keys from a backup (or run those params again "
            "on a new stream)"
        )

    def _result_row(self, key: str, record: str) -> dict[str, Any]:
        """A record of the results hash as a row; EngineError naming it if damaged."""
        try:
            row = json.loads(record)
            if not (isinstance(row, dict) and isinstance(row.get("id"), str)
                    and isinstance(row.get("param"), str) and "result" in row):
                raise ValueError("not an object with id, param and result")
        except (ValueError, RecursionError) as exc:
            why = "nested too deep to read" if isinstance(exc, RecursionError) else str(exc)
            client = self.client
            raise EngineError(
                f"Redis hash {client.results_key!r} entry {key!r} is not a result record "
                f"({why[:100]}): it was changed outside minionize; restore it from a "
                f"backup, or drop it (HDEL {client.results_key} {key}, ZREM {client.order_key} "
                f"{key}, DECR {client.results_count_key}) to list the others"
            ) from None
        return {"id": row["id"], "param": self._param(row["param"]), "result": row["result"]}

    def _param(self, text: str) -> Any:
        """A ``param`` field as the engine hands it out (its text if not JSON)."""
        if self.decoder == "json":
            with contextlib.suppress(ValueError):
                return json.loads(text)
        return text

    def _dead_row(self, entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
        param = self._param(fields.get("param", ""))
        try:
            attempts = int(fields.get("attempt", "0"))
        except ValueError:
            attempts = 0
        return {
            "id": fields.get("origin", entry_id),
            "param": param,
            "attempts": attempts,
            "reason": fields.get("reason", ""),
        }
