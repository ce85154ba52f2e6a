"""An in-memory engine, for tests of minionize and of your own callbacks.

>>> from minionize.testing import MemoryEngine
>>> engine = MemoryEngine([1, 2, 3])
>>> minionizer(FuncCallback(f), engine=engine).run()   # doctest: +SKIP
>>> engine.done, engine.dead                             # doctest: +SKIP
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Optional

from .engines.base import Delivery, Engine
from .params import Param, canonical_json
from .task_result import decode_result

if TYPE_CHECKING:
    from .config import Settings


class MemoryEngine(Engine):
    """A finite queue in memory that records every settle, in order.

    It keeps the contract of every engine (tests/integration/test_engine_contract.py):
    ``fill`` skips a param already present (equal canonical JSON), ``status`` and
    ``list`` give the shared keys. Ids are ``"0"``, ``"1"``, ... in fill order.
    """

    name = "memory"
    keeps_results = True

    def __init__(self, params: Iterable[Param] = ()) -> None:
        self._lock = threading.Lock()
        self._todo: collections.deque[Delivery] = collections.deque()
        self._next_id = 0
        self.in_flight: dict[str, Delivery] = {}
        self.done: list[Param] = []
        self.dead: list[tuple[Param, str]] = []
        #: Canonical JSON of every param ever added -> its id (fill's de-duplication).
        self._known: dict[str, str] = {}
        #: (id, param, attempts that ran, reason) of settled params, for ``list``.
        self._records: dict[str, list[tuple[str, Param, int, str]]] = {"done": [], "dead": []}
        #: id -> the JSON text of its task's result.
        self._results: dict[str, str] = {}
        self.events: list[tuple[str, str, int]] = []
        self.extended = 0
        self.fill(params)

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryEngine:
        return cls()

    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        with self._lock:
            out: list[Delivery] = []
            while self._todo and len(out) < max_count:
                delivery = self._todo.popleft()
                self.in_flight[delivery.id] = delivery
                out.append(delivery)
            return out

    def exhausted(self) -> bool:
        with self._lock:
            return not self._todo and not self.in_flight

    def peek(self, limit: int) -> list[Param]:
        with self._lock:
            return [d.param for d in list(self._todo)[:limit]]

    def _settle(self, delivery: Delivery, event: str) -> None:
        self.events.append((event, delivery.id, delivery.attempt))
        if self.in_flight.pop(delivery.id, None) is None:
            raise AssertionError(f"{event} of {delivery.id}, which is not in flight")

    def ack(self, delivery: Delivery, result: Optional[str] = None) -> None:
        with self._lock:
            self._settle(delivery, "ack")
            if result is not None:
                self._results[delivery.id] = result
            self.done.append(delivery.param)
            self._records["done"].append((delivery.id, delivery.param, delivery.attempt, ""))

    def retry(self, delivery: Delivery, reason: str) -> None:
        with self._lock:
            self._settle(delivery, "retry")
            self._todo.append(Delivery(delivery.param, delivery.id, delivery.attempt + 1))

    def release(self, delivery: Delivery) -> None:
        with self._lock:
            self._settle(delivery, "release")
            self._todo.appendleft(Delivery(delivery.param, delivery.id, delivery.attempt))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        with self._lock:
            self._settle(delivery, "dead")
            self.dead.append((delivery.param, reason))
            self._records["dead"].append((delivery.id, delivery.param, delivery.attempt, reason))

    def lease_renewal_interval(self) -> float:
        return 0.2

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            self.extended += 1

    def fill(self, params: Iterable[Param]) -> tuple[int, int]:
        """Add params; one equal to a param already added (done or not) is skipped.
        Raises ValueError for what standard JSON cannot hold (NaN, infinities)."""
        added = skipped = 0
        with self._lock:
            for param in params:
                text = canonical_json(param)
                if text in self._known:
                    skipped += 1
                    continue
                self._known[text] = str(self._next_id)
                self._todo.append(Delivery(param, str(self._next_id)))
                self._next_id += 1
                added += 1
        return added, skipped

    def status(self) -> dict[str, Any]:
        with self._lock:
            counts = {
                "todo": len(self._todo),
                "in_flight": len(self.in_flight),
                "expired": 0,  # no leases: a process owns its memory
                "done": len(self.done),
                "dead": len(self.dead),
            }
        counts["total"] = sum(counts.values())
        return counts

    def list(self, kind: str) -> Iterator[dict[str, Any]]:
        """``done`` or ``dead`` params: id, param, attempts (that ran), and the reason of
        a dead letter."""
        with self._lock:
            records = []
            for id_, param, attempts, reason in self._records[kind]:
                record: dict[str, Any] = {"id": id_, "param": param, "attempts": attempts}
                if kind == "dead":
                    record["reason"] = reason
                records.append(record)
        return iter(records)

    def results(self) -> Iterator[dict[str, Any]]:
        """Done params in fill order, with what their task returned."""
        with self._lock:
            done = sorted(self._records["done"], key=lambda record: int(record[0]))
            rows = [{"id": id_, "param": param, "result": decode_result(self._results.get(id_))}
                    for id_, param, _, _ in done]
        yield from rows
