"""How a finished task is settled: done, retry, released or dead letter.

:func:`decide` is a pure function; :class:`Settler` is the one place that acts on its
answer (acks, retries, releases, dead-letters), counts, and tells the reporter and the
hooks.

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

"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional

from ..callbacks.base import Outcome, Result, StopReason, Task
from ..callbacks.task_io import param_json
from ..engines.base import Settle
from ..reporters.base import TaskReport
from .halt import HaltCounter, parse_halt

if TYPE_CHECKING:
    from ..config import Settings
    from ..engines.base import Delivery, Engine
    from ..reporters.base import Reporter
    from .hooks import Hooks
    from .stopping import GracefulStop
    from .timeouts import MedianTimeout

log = logging.getLogger("minionize.minion")

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


class Settler:
    """Settles the attempts of one minion on the answer of :func:`decide`: the one place
    where a param is acked, retried, released or dead-lettered. It counts the settles
    (:attr:`counts`) and the attempts for ``--halt`` (:attr:`halted`: take nothing new;
    ``now`` also asks ``stop`` to stop), records the run times of ``deadlines``
    (``--timeout X%``), and tells ``reporter`` (None: nobody listens) and ``hooks``.
    ``can_stop`` is the callback's: whether a task it stopped really stopped."""

    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        can_stop: bool,
        stop: GracefulStop,
        deadlines: Optional[MedianTimeout],
        reporter: Optional[Reporter],
        hooks: Hooks,
    ) -> None:
        self.engine = engine
        self._max_attempts = settings.max_attempts
        self._task_timeout = settings.task_timeout
        self._can_stop = can_stop
        self._stop = stop
        self._deadlines = deadlines
        self._reporter = reporter
        self._hooks = hooks if hooks else None
        self.halt = parse_halt(settings.env.str("MINION_HALT"))
        self._attempts = HaltCounter(self.halt)
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()

    @property
    def halted(self) -> bool:
        """``--halt`` was reached: take no new param."""
        return self._attempts.halted

    def settle(self, task: Task, result: Result) -> None:
        """Settle the attempt of ``task`` that ended with ``result`` (once: a task given
        back at shutdown already is not settled again)."""
        if not task.settle_once():
            return
        delivery = task.delivery
        stop_reason = task.stop_reason
        if stop_reason is StopReason.SHUTDOWN and result.ok and not self._can_stop:
            stop_reason = None  # a function cannot be stopped: its success is its own
        settle, reason = decide(
            result,
            delivery.attempt,
            self._max_attempts,
            stop_reason,
            self._stop.asked.is_set(),
            self._task_timeout if task.deadline is None else task.deadline - task.started,
        )
        if self._deadlines is not None:
            reason = self._deadlines.settled(task, settle is Settle.DONE, reason)
        outcome = settle.value
        try:
            if settle is Settle.DONE and result.result is not None and self.engine.keeps_results:
                self.engine.ack(delivery, result.result)
            elif settle is Settle.DONE:
                self.engine.ack(delivery)
            elif settle is Settle.RELEASED:
                self.engine.release(delivery)
            elif settle is Settle.DEAD:
                self.engine.dead_letter(delivery, reason)
            else:
                self.engine.retry(delivery, reason)
        except Exception as exc:
            # The param is not lost: it comes back when its lease expires.
            log.warning("could not %s param %s: %s (it comes back when its lease expires)",
                        outcome, delivery.id, exc)
        with self._lock:
            self.counts[outcome] += 1
        if settle is Settle.DEAD:
            text = abbreviate(param_json(delivery.param))
            log.warning("dead letter: param %s after attempt %d: %s", text, delivery.attempt, reason)
        if settle is not Settle.RELEASED:
            self._count_attempt(failed=settle is not Settle.DONE)
        if self._reporter is not None or self._hooks is not None:
            report = task_report(task, result, outcome, reason)
            if self._reporter is not None:
                self._reporter.task_finished(report)
            if self._hooks is not None:
                self._hooks.task_settled(report)

    def give_back(self, tasks: Iterable[Task], stash: Iterable[Delivery]) -> None:
        """At the end: give back what was taken and not settled (stuck tasks, stash)."""
        for task in tasks:
            if task.stop_reason is None:
                task.mark_stopping(StopReason.SHUTDOWN)
            self.settle(task, Result(Outcome.FAILED, reason="minion stopped"))
        for delivery in stash:
            task = Task(delivery, stop_reason=StopReason.SHUTDOWN)
            self.settle(task, Result(Outcome.FAILED, reason="minion stopping"))

    def _count_attempt(self, failed: bool) -> None:
        """Count a finished attempt for ``--halt``; halt when its rule is reached (the
        slot that settled wakes the others)."""
        halts = self._attempts.count(failed)
        if halts is None:
            return
        log.warning("%s", halts)
        if self.halt is not None and self.halt.now:
            self._stop.request()


def task_report(task: Task, result: Result, outcome: str, reason: str) -> TaskReport:
    """What the reporter and the hooks are told of a settled task."""
    delivery = task.delivery
    return TaskReport(
        param=delivery.param,
        param_id=delivery.id,
        attempt=delivery.attempt,
        outcome=outcome,
        start=task.wall_start,
        duration=task.running_for(),
        exit_code=result.exit_code,
        reason=reason,
        stderr_tail=result.stderr_tail if not result.ok else "",
        stdout_path=result.stdout_path,
        stderr_path=result.stderr_path,
    )
