"""The minion loop: take a param, run it, settle it. It reads like the promise.

* **At least once.** A delivery is acked only after its callback succeeded.
* **Failure is not success.** A failed attempt is retried until ``max_attempts``, then
  dead-lettered; a task minionize stopped is never done (:func:`minionize.minion.settle.decide`
  decides, :meth:`Minion._settle` is the one place that acts on it).
* **Graceful stop.** SIGTERM/SIGINT: take nothing new, SIGTERM the running tasks, SIGKILL
  them after the grace period, release their params without counting an attempt, exit 0.
  A second signal stops at once (exit 128 + signal).
* **A mistake on the command line burns nothing.** A callback that raises
  :class:`~minionize.errors.CommandLineError` gets its param released and stops the
  minion the same graceful way; :meth:`run` then raises the error (exit 2).
* **--halt.** Too many failed attempts (:mod:`minionize.minion.halt`) stop taking params
  (``soon``) or stop the running tasks too (``now``); exit 3.

Where a param is acked, retried, released or dead-lettered: :meth:`Minion._settle`, below,
on the answer of :func:`minionize.minion.settle.decide`; nowhere else.

Threads: ``concurrency`` workers (:mod:`minionize.minion.slots`) each loop take -> run ->
settle (only one of them is in ``engine.take`` at a time); one monitor thread
(:mod:`minionize.minion.monitor`) enforces timeouts and the grace period, renews leases and sends
report heartbeats; the main thread handles signals (:mod:`minionize.minion.stopping`) and waits.
``DRY=1``: :mod:`minionize.minion.dry_run`. Messages go to the logger ``minionize.minion.run`` (the
command line shows them on stderr).
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Optional

from ..callbacks.base import Callback, Outcome, Result, StopReason, Task
from ..callbacks.task_io import param_json
from ..config import Settings, load_dotenv_file
from ..engines.base import Engine, Settle
from ..errors import EXIT_DEAD_LETTERS, EXIT_HALTED, EXIT_OK, EXIT_USAGE, EngineError, MinionizeError
from ..reporters.base import MinionInfo, NullReporter, Reporter, TaskReport
from ..task_result import DEFAULT_MAX_BYTES
from .dry_run import show_dry_run
from .halt import HaltCounter, parse_halt
from .monitor import Monitor
from .settle import abbreviate, decide
from .slots import Workers
from .stopping import GracefulStop
from .timeouts import MedianTimeout

log = logging.getLogger("minionize.minion")


class Minion:
    """One minion: ``Minion(callback, engine, reporter, settings).run()`` -> exit code."""

    def __init__(
        self,
        callback: Callback,
        engine: Optional[Engine] = None,
        reporter: Optional[Reporter] = None,
        settings: Optional[Settings] = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        if engine is None:
            from ..engines import load_engine

            engine = load_engine(self.settings)
        if reporter is None:
            from ..reporters import load_reporter

            reporter = load_reporter(self.settings)
        self.callback = callback
        self.engine = engine
        if engine.keeps_results:
            callback.keep_results(
                self.settings.env.int("MINION_RESULT_MAX_BYTES", DEFAULT_MAX_BYTES, minimum=2)
                or DEFAULT_MAX_BYTES
            )
        self.reporter = reporter
        self.info = MinionInfo.current(self.settings.env.values)
        self.info.engine = engine.name
        self.info.concurrency = self.settings.concurrency

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.stopping = GracefulStop(self._changed)
        self._stop = self.stopping.asked  # set once a stop was asked
        self._failure: Optional[BaseException] = None
        self._reporting = not isinstance(reporter, NullReporter)
        self.counts: collections.Counter[str] = collections.Counter()
        self.halt = parse_halt(self.settings.env.str("MINION_HALT"))
        self._attempts = HaltCounter(self.halt)
        #: --timeout X%: the deadlines of the running tasks, from the done ones.
        self.median_timeout = MedianTimeout.from_settings(self.settings)
        self.workers = Workers(
            engine=engine, callback=callback, reporter=reporter if self._reporting else None,
            settings=self.settings, changed=self._changed, stop=self._stop,
            halted=lambda: self._attempts.halted, fail=self._fail, settle=self._settle,
        )

    # -- the whole run ---------------------------------------------------------------
    def run(self) -> int:
        """Run until the queue is drained, the idle timeout passes, or a signal stops us.

        Returns 0 when every param taken succeeded or was given back, 1 when at least one
        was dead-lettered, 3 when ``--halt`` stopped it, 128 + signal number after a second
        stop signal. Raises :class:`EngineError` (after giving back what it held) when the
        queue fails, and the callback's :class:`CommandLineError` when the command cannot
        run (the param is given back).
        """
        self.callback.setup()
        try:
            self.engine.open()
        except BaseException:
            self.callback.teardown()
            raise
        try:
            if self.settings.dry:
                try:
                    show_dry_run(self.engine, self.callback)
                finally:
                    self._close_quietly()
                return EXIT_OK
            self.reporter.start(self.info)
        except BaseException:
            self._close_quietly()
            raise
        restore = self.stopping.install_handlers()
        monitor = Monitor(
            engine=self.engine, callback=self.callback, reporter=self.workers.reporter,
            stop=self.stopping, running=self._running,
            grace_period=self.settings.grace_period,
        )
        try:
            monitor.start()
            self.workers.start()
            self.stopping.join(self.workers.threads, self.settings.grace_period)
        finally:
            monitor.finish()
            self._release_unsettled()
            restore()
            code = self._exit_code()
            try:
                self.engine.close()
            finally:
                self.callback.teardown()
                self.reporter.stop(code)
        if self._failure is not None:
            if isinstance(self._failure, MinionizeError):
                raise self._failure
            raise EngineError(
                f"the {self.engine.name} engine failed: {type(self._failure).__name__}: "
                f"{self._failure}"
            ) from self._failure
        return code

    def _running(self) -> list[Task]:
        """The running tasks (for the monitor), with their --timeout X% deadlines."""
        tasks = self.workers.running()
        if self.median_timeout is not None:
            self.median_timeout.apply(tasks)
        return tasks

    def stop(self) -> None:
        """Ask the minion to stop gracefully (what SIGTERM does)."""
        self.stopping.request()

    def _exit_code(self) -> int:
        if self._failure is not None:
            return EXIT_USAGE
        if self.stopping.hurried and self.stopping.signal is not None:
            return 128 + self.stopping.signal
        if self._attempts.halted:
            return EXIT_HALTED
        return EXIT_DEAD_LETTERS if self.counts["dead"] else EXIT_OK

    def _fail(self, exc: BaseException) -> None:
        """The queue failed, or the command line cannot run: stop gracefully, then
        :meth:`run` raises it (exit 2)."""
        if self._failure is None:
            self._failure = exc
        self.stop()

    # -- settling: the one place where ack / retry / release / dead letter is done ----
    def _settle(self, task: Task, result: Result) -> None:
        with task.lock:
            if task.settled:  # released already, at shutdown
                return
            task.settled = True
        delivery = task.delivery
        stop_reason = task.stop_reason
        if stop_reason is StopReason.SHUTDOWN and result.ok and not self.callback.can_stop:
            stop_reason = None  # a function cannot be stopped: its success is its own
        settle, reason = decide(
            result,
            delivery.attempt,
            self.settings.max_attempts,
            stop_reason,
            self._stop.is_set(),
            self.settings.task_timeout if task.deadline is None else task.deadline - task.started,
        )
        if self.median_timeout is not None:
            reason = self.median_timeout.settled(task, settle is Settle.DONE, reason)
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
        if self._reporting:
            self.reporter.task_finished(task_report(task, result, outcome, reason))

    def _count_attempt(self, failed: bool) -> None:
        """Count a finished attempt for ``--halt``; halt when its rule is reached."""
        halts = self._attempts.count(failed)
        if halts is None:
            return
        with self._changed:
            self._changed.notify_all()  # a worker waiting for work stops waiting
        log.warning("%s", halts)
        if self.halt is not None and self.halt.now:
            self.stop()

    def _release_unsettled(self) -> None:
        """At the end: give back what was taken and not settled (stuck tasks, stash)."""
        tasks, stash = self.workers.unsettled()
        for task in tasks:
            if task.stop_reason is None:
                task.stop_reason = StopReason.SHUTDOWN
            self._settle(task, Result(Outcome.FAILED, reason="minion stopped"))
        for delivery in stash:
            task = Task(delivery, stop_reason=StopReason.SHUTDOWN)
            self._settle(task, Result(Outcome.FAILED, reason="minion stopping"))

    def _close_quietly(self) -> None:
        """Close the engine and the callback when the run ends before it started."""
        try:
            self.engine.close()
        except Exception as exc:
            log.warning("could not close the %s engine: %s", self.engine.name, exc)
        finally:
            self.callback.teardown()


def task_report(task: Task, result: Result, outcome: str, reason: str) -> TaskReport:
    """What the reporter is told of a settled task."""
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


def minionizer(
    callback: Callback,
    engine: Optional[Engine] = None,
    reporter: Optional[Reporter] = None,
    settings: Optional[Settings] = None,
    **overrides: Any,
) -> Minion:
    """The original entry point: ``minionizer(callback).run()``.

    Settings come from the environment and ``.env`` (the environment wins); keyword
    arguments override them (``concurrency=4``, ``max_attempts=5``, ...).
    """
    if settings is None:
        load_dotenv_file()
        settings = Settings.from_env(**overrides)
    return Minion(callback, engine=engine, reporter=reporter, settings=settings)
