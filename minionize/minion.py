"""The minion loop: take a param, run it, settle it. It reads like the promise.

* **At least once.** A delivery is acked only after its callback succeeded.
* **Failure is not success.** A failed attempt is retried until ``max_attempts``, then
  dead-lettered; a task minionize stopped is never done (:func:`minionize.settle.decide`
  decides, :meth:`Minion._settle` is the one place that acts on it).
* **Graceful stop.** SIGTERM/SIGINT: take nothing new, SIGTERM the running tasks, SIGKILL
  them after the grace period, release their params without counting an attempt, exit 0.
  A second signal stops at once (exit 128 + signal).
* **A mistake on the command line burns nothing.** A callback that raises
  :class:`~minionize.errors.CommandLineError` gets its param released and stops the
  minion the same graceful way; :meth:`run` then raises the error (exit 2).
* **--halt.** Too many failed attempts (:mod:`minionize.halt`) stop taking params
  (``soon``) or stop the running tasks too (``now``); exit 3.

Threads: ``concurrency`` workers each loop take -> run -> settle (only one of them is in
``engine.take`` at a time); one monitor thread enforces timeouts and the grace period and
sends lease and report heartbeats; the main thread handles signals and waits.
"""

from __future__ import annotations

import collections
import signal
import sys
import threading
import time
import traceback
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Optional

from .callbacks._task_io import param_json
from .callbacks.base import Callback, Outcome, Result, StopReason, Task
from .config import Settings, load_dotenv_file
from .engines.base import Delivery, Engine
from .errors import (
    EXIT_DEAD_LETTERS,
    EXIT_HALTED,
    EXIT_OK,
    EXIT_USAGE,
    CommandLineError,
    EngineError,
    MinionizeError,
)
from .halt import parse_halt
from .reporters.base import MinionInfo, NullReporter, Reporter, TaskReport
from .settle import Settle, abbreviate, decide

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Longest wait in ``engine.take`` (and between polls of a queue that answers at once).
POLL_SECONDS = 0.5
#: How often the monitor wakes to check timeouts.
TICK_SECONDS = 0.1
#: How often the reporter gets a heartbeat.
REPORT_HEARTBEAT_SECONDS = 2.0
#: Exit codes of a task killed by a stop signal (SIGHUP, SIGINT, SIGKILL, SIGTERM), as
#: a signal number (negative) or as a shell reports it (128 + n).
STOP_SIGNAL_EXITS = frozenset(
    code for n in (1, 2, 9, 15) for code in (-n, 128 + n)
)
#: How long a task killed by such a signal waits for the minion's own stop signal.
SIGNAL_SETTLE_SECONDS = 0.5
#: After the kill that ends the grace period, how long to wait for tasks to go before
#: their params are released anyway (a task stuck in the kernel, or a Python function).
ABANDON_AFTER_KILL_SECONDS = 2.0


_WARN_LOCK = threading.Lock()


def _warn(message: str) -> None:
    # One write per line (the newline included), under a lock: lines of concurrent
    # workers never glue together.
    with _WARN_LOCK:
        try:
            sys.stderr.write(f"minionize: {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed: nothing to tell
            pass


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
            from .engines import load_engine

            engine = load_engine(self.settings)
        if reporter is None:
            from .reporters import load_reporter

            reporter = load_reporter(self.settings)
        self.callback = callback
        self.engine = engine
        self.reporter = reporter
        self.info = MinionInfo.current(self.settings.env.values)
        self.info.engine = engine.name
        self.info.concurrency = self.settings.concurrency

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._take_lock = threading.Lock()
        self._stash: collections.deque[Delivery] = collections.deque()
        self._running: set[Task] = set()
        self._busy = 0
        self._stop = threading.Event()
        self._done = threading.Event()
        self._stop_at: Optional[float] = None
        self._hard_stop = False
        self._hard_at: Optional[float] = None
        self._failure: Optional[BaseException] = None
        self._stop_signal: Optional[int] = None
        self._ended = False
        self._idle_since = time.monotonic()
        self._reporting = not isinstance(reporter, NullReporter)
        self.counts: collections.Counter[str] = collections.Counter()
        self.halt = parse_halt(self.settings.env.str("MINION_HALT"))
        self._halted = False
        self._failed_attempts = 0
        self._finished_attempts = 0

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
                return self._dry_run()
            self.reporter.start(self.info)
        except BaseException:
            self._close_quietly()
            raise
        restore = self._install_signal_handlers()
        workers = [
            threading.Thread(target=self._work, name=f"minion-worker-{i}", daemon=True)
            for i in range(self.settings.concurrency)
        ]
        monitor = threading.Thread(target=self._monitor, name="minion-monitor", daemon=True)
        try:
            monitor.start()
            for worker in workers:
                worker.start()
            self._wait_for(workers)
        finally:
            self._done.set()
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

    def stop(self) -> None:
        """Ask the minion to stop gracefully (what SIGTERM does)."""
        with self._lock:
            if self._stop_at is None:
                self._stop_at = time.monotonic()
            self._stop.set()
            self._changed.notify_all()

    def _exit_code(self) -> int:
        if self._failure is not None:
            return EXIT_USAGE
        if self._hard_stop and self._stop_signal is not None:
            return 128 + self._stop_signal
        if self._halted:
            return EXIT_HALTED
        return EXIT_DEAD_LETTERS if self.counts["dead"] else EXIT_OK

    def _fail(self, exc: BaseException) -> None:
        """The queue failed, or the command line cannot run: stop gracefully, then
        :meth:`run` raises it (exit 2)."""
        if self._failure is None:
            self._failure = exc
        self.stop()

    # -- workers: take -> run -> settle ----------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set() and not self._halted:
            try:
                delivery = self._next_delivery()
            except Exception as exc:
                # The queue itself failed: stop gracefully, then report it (exit 2).
                self._fail(exc)
                return
            if delivery is None:
                if self._ended:
                    return
                continue
            if self._stop.is_set() or self._halted:
                self._settle_without_running(delivery)
                return
            self._run_one(delivery)

    def _next_delivery(self) -> Optional[Delivery]:
        with self._take_lock:
            if self._stop.is_set() or self._ended or self._halted:
                return None
            if self._stash:
                return self._stash.popleft()
            free = max(1, self.settings.concurrency - self._busy)
            asked = time.monotonic()
            batch = self.engine.take(free, POLL_SECONDS)
            if batch:
                self._idle_since = time.monotonic()
                self._stash.extend(batch[1:])
                return batch[0]
            self._check_end()
        if not self._ended:
            # The engine answered at once: wait for a change here (a retry, a settle,
            # a stop) rather than spinning on the queue.
            remaining = POLL_SECONDS - (time.monotonic() - asked)
            if remaining > 0:
                with self._changed:
                    if not self._stop.is_set():
                        self._changed.wait(remaining)
        return None

    def _check_end(self) -> None:
        """After an empty take: end when the queue is drained or idle for too long."""
        with self._lock:
            if self._busy:
                return
            idle_for = time.monotonic() - self._idle_since
        timeout = self.settings.idle_timeout
        if self.engine.exhausted() or (timeout is not None and idle_for >= timeout):
            with self._lock:
                self._ended = True
                self._changed.notify_all()

    def _run_one(self, delivery: Delivery) -> None:
        task = Task(delivery)
        if self.settings.task_timeout is not None:
            task.deadline = task.started + self.settings.task_timeout
        with self._lock:
            self._running.add(task)
            self._busy += 1
        try:
            if delivery.error is not None:
                result = Result(Outcome.REJECTED, reason=delivery.error)
            else:
                if self._reporting:
                    self.reporter.task_started(task)
                result = self._call(task)
                killed = not result.ok and result.exit_code in STOP_SIGNAL_EXITS
                if killed and task.stop_reason is None:
                    # Not stopped by us: a scheduler stopping the job signals the tasks
                    # and the minion at the same time; let our own handler run first.
                    self._stop.wait(SIGNAL_SETTLE_SECONDS)
            self._settle(task, result)
        finally:
            with self._lock:
                self._running.discard(task)
                self._busy -= 1
                self._idle_since = time.monotonic()
                self._changed.notify_all()

    def _call(self, task: Task) -> Result:
        try:
            return self.callback.run(task)
        except CommandLineError as exc:
            # Not this param's fault: give it back, stop, exit 2 with this line.
            with task.lock:
                task.stop_reason = StopReason.SHUTDOWN
            self._fail(exc)
            return Result(Outcome.FAILED, reason=str(exc))
        except Exception as exc:  # a callback bug or a raising function: a failed attempt
            tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
            return Result(Outcome.FAILED, reason=f"{type(exc).__name__}: {exc}", stderr_tail=tail)

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
            self.settings.task_timeout,
        )
        outcome = settle.value
        try:
            if settle is Settle.DONE:
                self.engine.ack(delivery)
            elif settle is Settle.RELEASED:
                self.engine.release(delivery)
            elif settle is Settle.DEAD:
                self.engine.dead_letter(delivery, reason)
            else:
                self.engine.retry(delivery, reason)
        except Exception as exc:
            # The param is not lost: it comes back when its lease expires.
            _warn(f"could not {outcome} param {delivery.id}: {exc}")
        with self._lock:
            self.counts[outcome] += 1
            if settle is not Settle.RELEASED:
                self._finished_attempts += 1
                if settle is not Settle.DONE:
                    self._failed_attempts += 1
        if settle is Settle.DEAD:
            text = abbreviate(param_json(delivery.param))
            _warn(f"dead letter: param {text} after attempt {delivery.attempt}: {reason}")
        if settle in (Settle.RETRY, Settle.DEAD):
            self._check_halt()
        if self._reporting:
            self.reporter.task_finished(
                TaskReport(
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
            )

    def _check_halt(self) -> None:
        halt = self.halt
        with self._lock:
            failed, finished = self._failed_attempts, self._finished_attempts
            if halt is None or self._halted or not halt.reached(failed, finished):
                return
            self._halted = True
            self._changed.notify_all()
        then = (
            "its running tasks are stopped and their params go back to the queue"
            if halt.now else "it takes no new param and lets its running tasks finish"
        )
        _warn(f"--halt {halt.text}: {failed} of {finished} attempts failed: the minion halts; {then}")
        if halt.now:
            self.stop()

    def _settle_without_running(self, delivery: Delivery) -> None:
        task = Task(delivery, stop_reason=StopReason.SHUTDOWN)
        self._settle(task, Result(Outcome.FAILED, reason="minion stopping"))

    def _release_unsettled(self) -> None:
        """At the end: give back what was taken and not settled (stash, stuck tasks)."""
        with self._lock:
            tasks = list(self._running)
        for task in tasks:
            if task.stop_reason is None:
                task.stop_reason = StopReason.SHUTDOWN
            self._settle(task, Result(Outcome.FAILED, reason="minion stopped"))
        while self._stash:
            self._settle_without_running(self._stash.popleft())

    # -- the monitor: timeouts, grace period, heartbeats --------------------------------
    def _monitor(self) -> None:
        interval = self.engine.lease_renewal_interval()
        next_extend = time.monotonic() + interval if interval else float("inf")
        next_report = time.monotonic() + REPORT_HEARTBEAT_SECONDS
        announced = False
        while not self._done.wait(TICK_SECONDS):
            now = time.monotonic()
            with self._lock:
                tasks = list(self._running)
                stopping = self._stop.is_set()
                hard = self._hard_stop
            if stopping and not announced and self._stop_signal is not None:
                announced = True
                name = signal.Signals(self._stop_signal).name
                _warn(
                    f"{name}: stopping; {len(tasks)} running task(s) get SIGTERM, SIGKILL after "
                    f"{self.settings.grace_period:g}s, and their params go back to the queue "
                    f"(send {name} again to stop at once)"
                )
            for task in tasks:
                self._police(task, now, stopping, hard)
            try:
                self.engine.flush()
            except Exception as exc:
                _warn(f"could not write settles to the queue: {exc}")
            if now >= next_extend and tasks:
                next_extend = now + (interval or 0)
                try:
                    self.engine.extend([t.delivery for t in tasks if not t.settled])
                except Exception as exc:
                    _warn(f"could not renew leases: {exc}")
            if now >= next_report:
                next_report = now + REPORT_HEARTBEAT_SECONDS
                if self._reporting:
                    self.reporter.heartbeat(tasks)

    def _police(self, task: Task, now: float, stopping: bool, hard: bool) -> None:
        if task.terminated_at is None:
            reason: Optional[StopReason] = None
            if stopping:
                reason = StopReason.SHUTDOWN
            elif task.deadline is not None and now >= task.deadline:
                reason = StopReason.TIMEOUT
            if reason is not None:
                with task.lock:
                    if task.stop_reason is None or reason is StopReason.SHUTDOWN:
                        task.stop_reason = reason
                task.terminated_at = now
                self._in_background(self.callback.terminate, task)
        overdue = task.terminated_at is not None and (
            hard or now - task.terminated_at >= self.settings.grace_period
        )
        if overdue and not task.killed:
            task.killed = True
            self._in_background(self.callback.kill, task)

    @staticmethod
    def _in_background(action: Callable[[Task], None], task: Task) -> None:
        # A docker stop may block: never let it hold up the monitor.
        def call() -> None:
            try:
                action(task)
            except Exception as exc:
                _warn(f"could not stop task {task.delivery.id}: {exc}")

        threading.Thread(target=call, name="minion-stopper", daemon=True).start()

    # -- signals and waiting -----------------------------------------------------------
    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        # Only set flags: the monitor and the workers do the work.
        if self._stop.is_set():
            self._hard_at = time.monotonic()
            self._hard_stop = True
            self._stop_signal = signum
            return
        self._stop_signal = signum
        self.stop()

    def _wait_for(self, workers: Sequence[threading.Thread]) -> None:
        while True:
            for worker in workers:
                worker.join(TICK_SECONDS)
            if not any(worker.is_alive() for worker in workers):
                return
            if self._stop_at is not None:
                limit = self._stop_at + self.settings.grace_period + ABANDON_AFTER_KILL_SECONDS
                if self._hard_at is not None:
                    limit = min(limit, self._hard_at + ABANDON_AFTER_KILL_SECONDS)
                if time.monotonic() >= limit:
                    _warn("tasks did not stop in time: their params are given back")
                    return

    # -- DRY=1 -------------------------------------------------------------------------
    def _dry_run(self) -> int:
        try:
            params = self.engine.peek(sys.maxsize)
        except Exception as exc:
            _warn(f"DRY: {exc}")
            self._close_quietly()
            return EXIT_OK
        try:
            # A reader that goes away (``| head -1``) raises BrokenPipeError: the
            # command line ends quietly, as ``seq`` does.
            for param in params:
                print(self.callback.describe(param), flush=False)
            sys.stdout.flush()
        finally:
            self._close_quietly()
        return EXIT_OK

    def _close_quietly(self) -> None:
        """Close the engine and the callback when the run ends before it started."""
        try:
            self.engine.close()
        except Exception as exc:
            _warn(f"could not close the {self.engine.name} engine: {exc}")
        finally:
            self.callback.teardown()


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
