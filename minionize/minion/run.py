"""The minion loop: take a param, run it, settle it. It reads like the promise.

* **At least once.** A delivery is acked only after its callback succeeded.
* **Failure is not success.** A failed attempt is retried until ``max_attempts``, then
  dead-lettered; a task minionize stopped is never done (:func:`minionize.minion.settle.decide`
  decides, :class:`~minionize.minion.settle.Settler` is the one place that acts on it).
* **Graceful stop.** SIGTERM/SIGINT: take nothing new, SIGTERM the running tasks, SIGKILL
  them after the grace period, release their params without counting an attempt, exit 0.
  A second signal stops at once (exit 128 + signal).
* **A mistake on the command line burns nothing.** A callback that raises
  :class:`~minionize.errors.CommandLineError` gets its param released and stops the
  minion the same graceful way; :meth:`run` then raises the error (exit 2).
* **Walltime.** A minion that knows when its allocation ends takes no param it cannot
  finish (:mod:`minionize.minion.time_left`), and exits 0 with nothing in flight.
* **--halt.** Too many failed attempts (:mod:`minionize.minion.halt`) stop taking params
  (``soon``) or stop the running tasks too (``now``); exit 3.

Where a param is acked, retried, released or dead-lettered:
:meth:`minionize.minion.settle.Settler.settle`, on the answer of
:func:`minionize.minion.settle.decide`; nowhere else.

The parts, each given what it needs: the stop (:mod:`minionize.minion.stopping`), the
settler (:mod:`minionize.minion.settle`), the slots and the monitor; the hooks
(:mod:`minionize.minion.hooks`) act at the loop's named points, the reporter tells.

Threads: ``concurrency`` slots (:mod:`minionize.minion.slots`) each loop take -> run ->
settle (only one of them is in ``engine.take`` at a time); one monitor thread
(:mod:`minionize.minion.monitor`) enforces timeouts and the grace period, renews leases and sends
report heartbeats; the main thread handles signals (:mod:`minionize.minion.stopping`) and waits.
``DRY=1``: :mod:`minionize.minion.dry_run`. Messages go to the logger ``minionize.minion`` (the
command line shows them on stderr).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from typing import Any, Optional

from ..callbacks.base import Callback
from ..config import Settings, load_dotenv_file
from ..engines.base import Engine
from ..errors import EXIT_DEAD_LETTERS, EXIT_HALTED, EXIT_OK, EXIT_USAGE, EngineError, MinionizeError
from ..reporters.base import MinionInfo, NullReporter, Reporter
from ..task_result import DEFAULT_MAX_BYTES
from .dry_run import show_dry_run
from .hooks import Hook, Hooks
from .monitor import Monitor
from .settle import Settler
from .slots import Slots
from .stopping import GracefulStop
from .time_left import TimeLeft
from .timeouts import MedianTimeout

log = logging.getLogger("minionize.minion")


class Minion:
    """One minion: ``Minion(callback, engine, reporter, settings).run()`` -> exit code.

    ``hooks`` act at the loop's named points, in their order (:mod:`.hooks`);
    ``start_interval`` is the least time between two task starts (``--delay``)."""

    def __init__(
        self,
        callback: Callback,
        engine: Optional[Engine] = None,
        reporter: Optional[Reporter] = None,
        settings: Optional[Settings] = None,
        *,
        hooks: Sequence[Hook] = (),
        start_interval: Optional[float] = None,
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
        self.hooks = Hooks(hooks)
        self.info = MinionInfo.current(self.settings.env.values)
        self.info.engine = engine.name
        self.info.concurrency = self.settings.concurrency

        self.stopping = GracefulStop()
        listener = None if isinstance(reporter, NullReporter) else reporter
        #: --timeout X%: the deadlines of the running tasks, from the done ones.
        deadlines = MedianTimeout.from_settings(self.settings)
        self.settler = Settler(
            engine=engine, settings=self.settings, can_stop=callback.can_stop,
            stop=self.stopping, deadlines=deadlines, reporter=listener, hooks=self.hooks,
        )
        self.slots = Slots(
            engine=engine, callback=callback, settler=self.settler, stop=self.stopping,
            reporter=listener, hooks=self.hooks, settings=self.settings,
            start_interval=start_interval, time_left=TimeLeft.from_settings(self.settings),
        )
        self.monitor = Monitor(
            engine=engine, callback=callback, reporter=listener, stop=self.stopping,
            slots=self.slots, deadlines=deadlines, grace_period=self.settings.grace_period,
        )

    @property
    def counts(self) -> collections.Counter[str]:
        """The settles so far, by outcome (done, retry, released, dead)."""
        return self.settler.counts

    # -- the whole run ---------------------------------------------------------------
    def run(self) -> int:
        """Run until the queue is drained, the idle timeout passes, or a signal stops us.

        Returns 0 when every param taken succeeded or was given back, 1 when at least one
        was dead-lettered, 3 when ``--halt`` stopped it, ``MINION_STOPPED_EXIT`` (when set)
        when a signal stopped it, 128 + signal number after a second stop signal. Raises
        :class:`EngineError` (after giving back what it held) when the queue fails, and
        the callback's :class:`CommandLineError` when the command cannot run (the param
        is given back).
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
            self.hooks.before_run(self.info)
        except BaseException:
            self._close_quietly()
            raise
        restore = self.stopping.install_handlers()
        try:
            self.monitor.start()
            self.slots.start()
            self.stopping.join(self.slots.threads, self.settings.grace_period)
        finally:
            self.monitor.finish()
            self.settler.give_back(*self.slots.unsettled())
            restore()
            code = self._exit_code()
            try:
                self.engine.close()
            finally:
                self.callback.teardown()
                try:
                    self.reporter.stop(code)
                finally:
                    self.hooks.after_run(code)
        failure = self.stopping.failure
        if failure is not None:
            if isinstance(failure, MinionizeError):
                raise failure
            raise EngineError(
                f"the {self.engine.name} engine failed: {type(failure).__name__}: {failure}"
            ) from failure
        return code

    def stop(self) -> None:
        """Ask the minion to stop gracefully (what SIGTERM does)."""
        self.stopping.request()

    def _exit_code(self) -> int:
        if self.stopping.failure is not None:
            return EXIT_USAGE
        if self.stopping.hurried and self.stopping.signal is not None:
            return 128 + self.stopping.signal
        if self.settler.halted:
            return EXIT_HALTED
        if self.stopping.signal is not None and self.settings.stopped_exit:
            return self.settings.stopped_exit  # stopped, not drained: a Job replaces it
        return EXIT_DEAD_LETTERS if self.settler.counts["dead"] else EXIT_OK

    def _close_quietly(self) -> None:
        """Close the engine and the callback when the run ends before it started."""
        try:
            self.engine.close()
        except Exception as exc:
            log.warning("could not close the %s engine: %s", self.engine.name, exc)
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
