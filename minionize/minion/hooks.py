"""The hooks of a minion: what extends the loop at its named points, in one ordered list.

A :class:`Hook` acts at the points below; each method does nothing unless overridden.
The minion is given its hooks (``Minion(..., hooks=[...])``) and calls them in their
order, through :class:`Hooks`:

* :meth:`Hook.before_run`: the queue is open and the reporter started, before the first
  take (an error stops the run before anything is taken: a joblog that cannot be opened);
* :meth:`Hook.before_take` and :meth:`Hook.after_take`: around each ``engine.take``, in
  the slot that takes (one slot at a time), with the batch taken;
* :meth:`Hook.task_starting`: in the slot thread, just before the callback runs the task
  (a param that cannot be decoded never runs: no call);
* :meth:`Hook.task_finished`: in the slot thread, the callback returned;
* :meth:`Hook.task_settled`: the attempt was settled (acked, retried, released or
  dead-lettered), with what the reporter is told;
* :meth:`Hook.after_run`: the run ended, with its exit code.

A hook that raises at any point but :meth:`Hook.before_run` is logged, and the others
still run. Reporters (:mod:`minionize.reporters`) tell the world about the run; hooks act
on it (GNU parallel's habits, :mod:`minionize.parallel`, are hooks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..callbacks.base import Result, Task
    from ..engines.base import Delivery
    from ..reporters.base import MinionInfo, TaskReport

log = logging.getLogger("minionize")


class Hook:
    """Acts at the loop's named points (see the module); every method is a no-op.
    Methods are called from several threads: a hook guards its state with a lock."""

    name = "hook"

    def before_run(self, minion: MinionInfo) -> None:
        """The run starts: the queue is open, nothing is taken yet."""

    def before_take(self) -> None:
        """A slot is about to ask the queue for params."""

    def after_take(self, deliveries: Sequence[Delivery]) -> None:
        """A slot took these params (possibly none), in the order the queue gave them."""

    def task_starting(self, task: Task) -> None:
        """The callback is about to run ``task``, in this (the slot's) thread."""

    def task_finished(self, task: Task, result: Result) -> None:
        """The callback ran ``task`` and returned ``result``; not settled yet."""

    def task_settled(self, report: TaskReport) -> None:
        """An attempt was settled: ``report.outcome`` says how."""

    def after_run(self, exit_code: int) -> None:
        """The run ended: flush and close."""


class Hooks:
    """The hooks of one minion, called in their order at each point."""

    def __init__(self, hooks: Sequence[Hook] = ()) -> None:
        self.hooks = tuple(hooks)

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def before_run(self, minion: MinionInfo) -> None:
        for hook in self.hooks:
            hook.before_run(minion)

    def before_take(self) -> None:
        self._each("before_take")

    def after_take(self, deliveries: Sequence[Delivery]) -> None:
        self._each("after_take", deliveries)

    def task_starting(self, task: Task) -> None:
        self._each("task_starting", task)

    def task_finished(self, task: Task, result: Result) -> None:
        self._each("task_finished", task, result)

    def task_settled(self, report: TaskReport) -> None:
        self._each("task_settled", report)

    def after_run(self, exit_code: int) -> None:
        self._each("after_run", exit_code)

    def _each(self, point: str, *args: Any) -> None:
        """Call ``point`` on every hook; a failure is logged, and the others still run."""
        for hook in self.hooks:
            try:
                getattr(hook, point)(*args)
            except Exception as exc:
                log.warning("hook %s failed: %s", hook.name, exc)
