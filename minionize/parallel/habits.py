"""What GNU parallel users expect of a run, wired around the minion loop without
touching it: ``--joblog``, ``--results``, ``--tag``, ``--keep-order`` and
``--progress/--eta/--bar`` are hooks of the minion (:mod:`minionize.minion.hooks`: the
loop calls ``task_starting`` in the slot thread just before a task runs, and
``task_settled`` once its attempt is settled), ``--delay`` is the start interval of its
slots, and :class:`OutputFiles` chooses the files a process writes to (the
``output_paths`` of :class:`~minionize.callbacks.process.callback.ProcessCallback`).

Variables (each also a flag of ``minionize``): ``MINION_JOBLOG``, ``MINION_RESULTS``,
``MINION_TAG``, ``MINION_KEEP_ORDER``, ``MINION_DELAY``, ``MINION_PROGRESS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ..errors import ConfigError
from .grouped_output import GroupedOutput
from .results_dir import ResultsDir
from .take_order import TakeOrder

if TYPE_CHECKING:
    from ..callbacks.base import Callback
    from ..config import Settings
    from ..engines.base import Delivery, Engine
    from ..minion.hooks import Hook
    from ..reporters.base import Reporter


class OutputFiles:
    """Where a process's output goes with ``--results`` (``results``) and ``--tag`` or
    ``--keep-order`` (``printer``, which prints it from there)."""

    def __init__(self, results: Optional[ResultsDir], printer: Optional[GroupedOutput]) -> None:
        self.results = results
        self.printer = printer

    @property
    def root(self) -> Optional[str]:
        """The directory below which no directory may be a symbolic link (None: the log
        directory's rule)."""
        return self.results.root if self.results is not None else None

    def paths(self, delivery: Delivery, out: Optional[str], err: Optional[str]) -> tuple[str, str]:
        """The files of this attempt, from its --log-dir files (None without)."""
        if self.results is not None:
            out, err = self.results.paths(delivery)
        if self.printer is not None:
            return self.printer.paths(delivery, out, err)
        assert out is not None and err is not None
        return out, err

    def hooks(self) -> list[Hook]:
        """What acts on the run for these files: the ``.exit`` files, the printing."""
        hooks: list[Hook] = []
        if self.results is not None:
            hooks.append(self.results)
        if self.printer is not None:
            if self.printer.order is not None:
                hooks.append(self.printer.order)
            hooks.append(self.printer)
        return hooks


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

    def output_files(self) -> Optional[OutputFiles]:
        """Where a process's output goes (None: where --log-dir says); nothing is made
        yet (:meth:`wire` makes the results directory)."""
        if not self.needs_files:
            return None
        results = ResultsDir(self.results) if self.results else None
        order = TakeOrder() if self.keep_order else None
        printer = GroupedOutput(tag=self.tag, order=order) if (self.tag or self.keep_order) else None
        return OutputFiles(results, printer)

    @property
    def start_interval(self) -> Optional[float]:
        """``--delay``: the least time between two task starts of the minion."""
        return self.delay or None

    def wire(self, callback: Callback, settings: Settings,
             files: Optional[OutputFiles]) -> tuple[Engine, Reporter, list[Hook]]:
        """The engine, the reporter and the hooks of a run of ``callback`` whose process
        writes to ``files`` (what :meth:`output_files` gave)."""
        from ..engines import load_engine
        from ..reporters import load_reporter

        engine = load_engine(settings)
        reporter = load_reporter(settings)
        counting = engine.counts_params()
        if settings.dry:
            return engine, reporter, []  # -n prints commands: nothing to log, keep or draw
        hooks: list[Hook] = []
        if self.joblog:
            from .joblog import Joblog

            builder = getattr(callback, "builder", None)
            hooks.append(Joblog(self.joblog,
                                command_of=builder.last_command if builder else None))
        if files is not None:
            from ..callbacks.process.callback import ProcessCallback

            if not isinstance(callback, ProcessCallback):
                raise ConfigError(
                    "--results, --tag and --keep-order (MINION_RESULTS, MINION_TAG, "
                    "MINION_KEEP_ORDER) need the process callback, not --docker"
                )
            if files.results is not None:
                files.results.setup()
            hooks.extend(files.hooks())
        if self.progress:
            from .progress import Progress

            hooks.append(Progress(self.progress,
                                  (lambda: load_engine(settings)) if counting else None))
        return engine, reporter, hooks
