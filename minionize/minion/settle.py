"""How a finished task is settled: done, retry, released or dead letter. A pure function.

The rule, in the words of the promise:

* A task that minionize stopped is never done: its exit code no longer decides.
  - Stopped by its timeout: a failed attempt (retried, then dead-lettered), and the
    reason names the timeout.
  - Stopped by a graceful stop (a signal, ``--halt now``, a command-line error): the
    param is given back (released) without counting an attempt.
* A task that ended by itself while the minion is stopping and failed (a scheduler
  signals the tasks and the minion at once) is given back too; one that succeeded is done.
* Otherwise success is done, a rejected param (it can never run) is dead at once, and a
  failed attempt is retried until the last attempt, which is dead.

:meth:`minionize.minion.run.Minion._settle` calls :func:`decide` and is the one place that
acts on its answer.
"""

from __future__ import annotations

from typing import Optional

from ..callbacks.base import Outcome, Result, StopReason
from ..engines.base import Settle

#: Longest text of a param shown in a message (the queue always keeps it whole).
PARAM_SHOWN_CHARS = 200
#: Longest reason kept with a dead letter or a retry (a reason may quote a huge param).
REASON_CHARS = 500


def decide(
    result: Result,
    attempt: int,
    max_attempts: int,
    stop_reason: Optional[StopReason],
    stopping: bool,
    timeout: Optional[float] = None,
) -> tuple[Settle, str]:
    """How to settle attempt ``attempt`` that ended with ``result``, and the reason.

    ``stop_reason`` says whether (and why) minionize stopped the task; ``stopping``
    whether the minion is stopping; ``timeout`` is the task timeout, for the reason.
    """
    reason = abbreviate(result.reason, REASON_CHARS)
    if stop_reason is StopReason.SHUTDOWN:
        return Settle.RELEASED, reason or "minion stopping"
    if stop_reason is StopReason.TIMEOUT:
        limit = f"{timeout:g}s" if timeout is not None else "its timeout"
        how = f" ({reason})" if reason and not result.ok else ""
        reason = f"timed out after {limit}{how}"
    elif result.ok:
        return Settle.DONE, reason
    elif stopping:
        return Settle.RELEASED, reason
    if result.outcome is Outcome.REJECTED or attempt >= max_attempts:
        return Settle.DEAD, reason
    return Settle.RETRY, reason


def abbreviate(text: str, limit: int = PARAM_SHOWN_CHARS) -> str:
    """``text`` if it is short, else its first ``limit`` characters and its full size:
    ``'aaaa... (1048576 bytes)'``."""
    if len(text) <= limit:
        return text
    size = len(text.encode("utf-8", "surrogateescape"))
    return f"{text[:limit]}... ({size} bytes)"
