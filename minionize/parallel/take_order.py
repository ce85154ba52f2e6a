"""The order in which a minion took its params, for ``--keep-order``.

The loop takes from the engine one call at a time, so numbering deliveries after each
``take`` (:meth:`TakeOrder.after_take`) is the order of the input as this minion
received it (with the file engine, the order of the lines). A param keeps its number
across its attempts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from ..minion.hooks import Hook

if TYPE_CHECKING:
    from ..engines.base import Delivery


class TakeOrder(Hook):
    """A number per param, in the order taken (see the module)."""

    name = "keep-order"

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {}
        self._next = 1
        self._lock = threading.Lock()

    def after_take(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            for delivery in deliveries:
                if str(delivery.id) not in self._numbers:
                    self._numbers[str(delivery.id)] = self._next
                    self._next += 1

    def number(self, param_id: str) -> Optional[int]:
        """The number of a param taken and not yet forgotten."""
        with self._lock:
            return self._numbers.get(param_id)

    def forget(self, param_id: str) -> None:
        """The param is final (done or dead): its number is no longer needed."""
        with self._lock:
            self._numbers.pop(param_id, None)
