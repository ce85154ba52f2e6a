"""The allocator's last decision, as ``minion-alloc`` records it and ``minion-status``
and ``mtop`` show it.

After each decision ``minion-alloc`` writes ``minion-alloc.json`` beside the minions'
reports (the report directory): when it was made, for which queue and jobs, the
target, live, pending, backlog and in flight it saw, what it did and why. The file is
written whole under another name and renamed over the last one, so a reader never sees
half of it. A directory without it (no allocator) shows nothing; a damaged one is
skipped, never fatal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

from ..reporters.queue_ref import ref_key, ref_label

#: The file, in the report directory.
DECISION_FILE = "minion-alloc.json"
_COUNTS = ("target", "live", "pending", "backlog", "in_flight")


@dataclass(frozen=True)
class AllocDecision:
    """One decision of the allocator: ``t`` (epoch seconds), the ``queue`` it allocates
    for (as the reports name it), its jobs' ``name`` and ``scheduler``, what it saw,
    ``act`` (``submit 4``, ``submit nothing``, ``cancel 2 pending``, ``exit``, ``stop``)
    and ``why`` (one clause)."""

    t: float
    queue: str
    name: str
    scheduler: str
    target: int
    live: int
    pending: int
    backlog: int
    in_flight: int
    act: str
    why: str

    def line(self) -> str:
        """The decision in one line: target, live, pending, backlog, in flight: act (why)."""
        return (f"target {self.target}, live {self.live}, pending {self.pending}, "
                f"backlog {self.backlog}, in flight {self.in_flight}: {self.act} ({self.why})")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Optional[AllocDecision]:
        """The decision ``data`` holds (read from the file), None when it is not one."""
        if not isinstance(data, dict):
            return None
        values: dict[str, Any] = {}
        for field in fields(cls):
            value = data.get(field.name)
            if field.name in _COUNTS:
                if not isinstance(value, int) or isinstance(value, bool):
                    return None
            elif field.name == "t":
                if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                        not 0 <= value < 1e11:
                    return None
                value = float(value)
            elif not isinstance(value, str):
                return None
            values[field.name] = value
        return cls(**values)


def decision_path(directory: str | os.PathLike[str]) -> str:
    return os.path.join(directory, DECISION_FILE)


def write_decision(directory: str | os.PathLike[str], decision: AllocDecision) -> None:
    """Record ``decision`` in ``directory``, replacing the last one at once (raises
    OSError when it cannot be written)."""
    path = decision_path(directory)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as out:
        json.dump(decision.to_json(), out)
    os.replace(temporary, path)


def read_decision(directory: str | os.PathLike[str]) -> Optional[AllocDecision]:
    """The last decision recorded in ``directory``; None when there is none (or it is
    damaged)."""
    try:
        with open(decision_path(directory), "rb") as source:
            data = source.read(100_000)
        return AllocDecision.from_json(json.loads(data))
    except (OSError, ValueError, RecursionError):
        return None



def decision_for(directory: str | os.PathLike[str], queues: Iterable[Any]) -> Optional[AllocDecision]:
    """The last decision in ``directory`` when it is for one of ``queues`` (the queue
    references of the reports shown), or when none of them names a queue."""
    decision = read_decision(directory)
    if decision is None:
        return None
    named = {ref_label(ref) for ref in queues if ref_key(ref) is not None}
    return decision if not named or decision.queue in named else None
