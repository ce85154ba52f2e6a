"""The order in which a minion took its params, for ``--keep-order``.

The loop takes from the engine one call at a time, so numbering deliveries inside
``take`` is the order of the input as this minion received it (with the file engine, the
order of the lines). A param keeps its number across its attempts. :func:`numbered`
wraps any engine; every other method is the engine's own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Optional

from ..engines.base import Delivery, Engine
from ..params import Param

if TYPE_CHECKING:
    from ..config import Settings


class TakeOrder(Engine):
    """``inner`` with a number per param, in the order taken (see the module)."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.keeps_results = inner.keeps_results
        self._numbers: dict[str, int] = {}
        self._next = 1
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:  # pragma: no cover - wraps only
        raise NotImplementedError("TakeOrder wraps an engine: use numbered(engine)")

    def number(self, param_id: str) -> Optional[int]:
        """The number of a param taken and not yet forgotten."""
        with self._lock:
            return self._numbers.get(param_id)

    def forget(self, param_id: str) -> None:
        """The param is final (done or dead): its number is no longer needed."""
        with self._lock:
            self._numbers.pop(param_id, None)

    # -- taking ----------------------------------------------------------------------
    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        batch = self.inner.take(max_count, timeout)
        with self._lock:
            for delivery in batch:
                if str(delivery.id) not in self._numbers:
                    self._numbers[str(delivery.id)] = self._next
                    self._next += 1
        return batch

    def exhausted(self) -> bool:
        return self.inner.exhausted()

    def peek(self, limit: int) -> Iterable[Param]:
        return self.inner.peek(limit)

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery, result: Optional[str] = None) -> None:
        if result is None:
            self.inner.ack(delivery)  # an engine written before results
        else:
            self.inner.ack(delivery, result)

    def retry(self, delivery: Delivery, reason: str) -> None:
        self.inner.retry(delivery, reason)

    def release(self, delivery: Delivery) -> None:
        self.inner.release(delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.inner.dead_letter(delivery, reason)

    # -- leases ----------------------------------------------------------------------
    def lease_renewal_interval(self) -> Optional[float]:
        return self.inner.lease_renewal_interval()

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        self.inner.extend(deliveries)

    def flush(self) -> None:
        self.inner.flush()

    # -- lifecycle -------------------------------------------------------------------
    def create(self) -> None:
        self.inner.create()

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()

    # -- administration --------------------------------------------------------------
    def fill(self, params: Iterable[Param]) -> tuple[int, int]:
        return self.inner.fill(params)

    def status(self) -> dict[str, Any]:
        return self.inner.status()

    def requeue_dead(self) -> int:
        return self.inner.requeue_dead()

    def reset_expired(self) -> int:
        return self.inner.reset_expired()

    def list(self, kind: str) -> Iterator[dict[str, Any]]:
        return self.inner.list(kind)

    def results(self) -> Iterator[dict[str, Any]]:
        return self.inner.results()


def numbered(engine: Engine) -> TakeOrder:
    """``engine`` wrapped in a :class:`TakeOrder` that bears its name."""
    cls = type(f"TakeOrder_{engine.name}", (TakeOrder,), {"name": engine.name})
    wrapper: TakeOrder = cls(engine)
    return wrapper
