"""What GNU parallel users expect of a run, wired around the minion loop without
touching it: ``--joblog``, ``--results``, ``--tag``, ``--keep-order``, ``--delay`` and
``--progress/--eta/--bar`` are reporters composed with the configured one (the loop calls
``task_started`` in the worker thread just before a task runs, and ``task_finished``
once its attempt is settled), plus a hook that chooses the files a process writes to.

Variables (each also a flag of ``minionize``): ``MINION_JOBLOG``, ``MINION_RESULTS``,
``MINION_TAG``, ``MINION_KEEP_ORDER``, ``MINION_DELAY``, ``MINION_PROGRESS``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ..errors import ConfigError
from ..reporters.base import NullReporter, Reporter, TaskReport

if TYPE_CHECKING:
    from ..callbacks.base import Callback, Task
    from ..config import Settings
    from ..engines.base import Delivery, Engine


class Pacer(Reporter):
    """``--delay``: at least ``delay`` seconds between two task starts of this minion."""

    name = "delay"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._lock = threading.Lock()
        self._last: Optional[float] = None

    def task_started(self, task: Task) -> None:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now < self._last + self.delay:
                time.sleep(self._last + self.delay - now)
            self._last = time.monotonic()

    def task_finished(self, report: TaskReport) -> None:
        pass


@dataclass(frozen=True)
class Habits:
    joblog: Optional[str] = None
    results: Optional[str] = None
    tag: bool = False
    keep_order: bool = False
    delay: Optional[float] = None
    progress: Optional[str] = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Habits:
        from .progress import MODES

        env = settings.env
        progress = env.str("MINION_PROGRESS")
        if progress is not None:
            progress = env.choice("MINION_PROGRESS", "progress", ("none", *MODES))
            progress = None if progress == "none" else progress
        return cls(
            joblog=env.str("MINION_JOBLOG"),
            results=env.str("MINION_RESULTS"),
            tag=env.bool("MINION_TAG"),
            keep_order=env.bool("MINION_KEEP_ORDER"),
            delay=env.seconds("MINION_DELAY", None),
            progress=progress,
        )

    @property
    def needs_files(self) -> bool:
        """The task's output goes to files (and is printed, or kept, from there)."""
        return bool(self.results or self.tag or self.keep_order)

    def wire(self, callback: Callback, settings: Settings) -> tuple[Engine, Reporter]:
        """The engine and the reporter of a run of ``callback`` (the configured ones,
        wrapped as the habits need)."""
        from ..engines import load_engine
        from ..engines.base import Engine as BaseEngine
        from ..reporters import load_reporter

        engine = load_engine(settings)
        reporter = load_reporter(settings)
        counting = type(engine).status is not BaseEngine.status
        if settings.dry:
            return engine, reporter  # -n prints commands: nothing to log, keep or draw
        extras: list[Reporter] = []
        if self.delay:
            extras.append(Pacer(self.delay))
        if self.joblog:
            from .joblog import Joblog

            builder = getattr(callback, "builder", None)
            extras.append(Joblog(self.joblog,
                                 command_of=builder.last_command if builder else None))
        if self.needs_files:
            engine = self._wire_files(callback, engine, extras)
        if self.progress:
            from .progress import Progress

            extras.append(Progress(self.progress,
                                   (lambda: load_engine(settings)) if counting else None))
        if not extras:
            return engine, reporter
        from ..reporters.tee import Tee

        others = [] if isinstance(reporter, NullReporter) else [reporter]
        reporters = [*others, *extras]
        return engine, reporters[0] if len(reporters) == 1 else Tee(reporters)

    def _wire_files(self, callback: Callback, engine: Engine, extras: list[Reporter]) -> Engine:
        from ..callbacks.process.callback import ProcessCallback
        from .grouped_output import GroupedOutput
        from .results_dir import ResultsDir
        from .take_order import TakeOrder, numbered

        if not isinstance(callback, ProcessCallback):
            raise ConfigError(
                "--results, --tag and --keep-order (MINION_RESULTS, MINION_TAG, "
                "MINION_KEEP_ORDER) need the process callback, not --docker"
            )
        results = ResultsDir(self.results) if self.results else None
        if results is not None:
            results.setup()
            extras.append(results)
        order: Optional[TakeOrder] = None
        if self.keep_order:
            engine = order = numbered(engine)
        printer = GroupedOutput(tag=self.tag, order=order) if (self.tag or self.keep_order) else None
        if printer is not None:
            extras.append(printer)

        def paths(delivery: Delivery, out: Optional[str], err: Optional[str]) -> tuple[str, str]:
            if results is not None:
                out, err = results.paths(delivery)
            if printer is not None:
                return printer.paths(delivery, out, err)
            assert out is not None and err is not None
            return out, err

        callback.output_paths = paths
        callback.output_root = results.root if results is not None else None
        return engine
