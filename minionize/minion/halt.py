"""``--halt`` / ``MINION_HALT``: stop a minion when too many attempts fail (GNU parallel's).

``soon,fail=N``: after N failed attempts, take nothing new and let the running tasks
finish. ``now,fail=N``: stop the running tasks too (gracefully, like SIGTERM: their params
go back to the queue without counting an attempt). ``fail=X%`` instead of ``N``: when X%
of the finished attempts failed, once at least :data:`MIN_FINISHED_FOR_PERCENT` finished.
``never`` (the default) never halts; GNU parallel's old ``0``, ``1`` and ``2`` mean
``never``, ``soon,fail=1`` and ``now,fail=1``.

A failed attempt is a failed *job* in GNU parallel's words: every attempt that failed,
whether its param is retried or dead-lettered (a non-zero exit, a timeout, an exception,
a param rejected at once). Attempts given back on a stop are not counted. Params never
taken stay todo. A halted minion exits with :data:`~minionize.errors.EXIT_HALTED`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError

#: A percentage is judged only after this many finished attempts (as GNU parallel does).
MIN_FINISHED_FOR_PERCENT = 3
_SPEC = re.compile(r"(now|soon),fail=(\d+(?:\.\d*)?)(%?)")
_SHORTHAND = {"0": "never", "1": "soon,fail=1", "2": "now,fail=1"}
_HINT = "use now,fail=N, soon,fail=N, now,fail=X%, soon,fail=X% or never"


@dataclass(frozen=True)
class Halt:
    """When to halt: ``now`` (stop running tasks) or ``soon`` (let them finish), after
    ``count`` failed attempts, or when ``percent`` % of the finished attempts failed."""

    now: bool
    count: Optional[int] = None
    percent: Optional[float] = None
    text: str = ""

    def reached(self, failed: int, finished: int) -> bool:
        """Whether ``failed`` failed attempts out of ``finished`` reach the limit."""
        if self.count is not None:
            return failed >= self.count
        if self.percent is None or finished < MIN_FINISHED_FOR_PERCENT:
            return False
        return failed * 100 >= self.percent * finished


class HaltCounter:
    """The attempts one minion finished and failed, against its :class:`Halt` rule."""

    def __init__(self, rule: Optional[Halt]) -> None:
        self.rule = rule
        self.failed = 0
        self.finished = 0
        #: Set once the rule was reached: take no new param.
        self.halted = False
        self._lock = threading.Lock()

    def count(self, failed: bool) -> Optional[str]:
        """Count a finished attempt; the message that says the minion halts, the first
        time the rule is reached (None otherwise)."""
        with self._lock:
            self.finished += 1
            self.failed += failed
            rule = self.rule
            if rule is None or self.halted or not failed or not rule.reached(
                self.failed, self.finished
            ):
                return None
            self.halted = True
            then = (
                "its running tasks are stopped and their params go back to the queue"
                if rule.now else "it takes no new param and lets its running tasks finish"
            )
            return (f"--halt {rule.text}: {self.failed} of {self.finished} attempts failed: "
                    f"the minion halts; {then}")


def parse_halt(value: Optional[str], variable: str = "MINION_HALT") -> Optional[Halt]:
    """``MINION_HALT``'s value as a :class:`Halt`; None for never. Raises
    :class:`ConfigError` naming ``variable`` for a bad value."""
    if value is None:
        return None
    text = _SHORTHAND.get(value.strip(), value.strip().lower())
    if text in ("", "never"):
        return None
    match = _SPEC.fullmatch(text)
    if match is None:
        raise ConfigError(f"{variable}={value!r} is not a halt rule: {_HINT}")
    when, number, percent = match.groups()
    if percent:
        share = float(number)
        if not 0 < share <= 100:
            raise ConfigError(f"{variable}={value!r}: the percentage must be above 0 and at most 100")
        return Halt(now=when == "now", percent=share, text=text)
    if "." in number or int(number) < 1:
        raise ConfigError(f"{variable}={value!r}: fail=N needs a whole number of 1 or more; {_HINT}")
    return Halt(now=when == "now", count=int(number), text=text)
