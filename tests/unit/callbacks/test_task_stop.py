"""A stop meets a task under its lock: one whose process had already ended is not
stopped (its result is its own), one still running is."""

from __future__ import annotations

from minionize.callbacks.base import Outcome, Result, StopReason, Task
from minionize.engines.base import Delivery, Settle
from minionize.minion.settle import decide


def task() -> Task:
    return Task(Delivery(id="p", param="p", attempt=1))


def test_a_task_that_ended_before_the_stop_settles_by_its_own_result() -> None:
    # The Kubernetes run showed it: a task exits 0 as its minion starts to stop; it was
    # given back (released, "exit 0; minion stopping") and ran a second time.
    ended = task()
    ended.attach(lambda: 42)
    ended.detach()  # its process is gone (reaped next)
    ended.mark_stopping(StopReason.SHUTDOWN)
    assert ended.stop_reason is None
    assert decide(Result(Outcome.OK), 1, 3, ended.stop_reason, stopping=True)[0] is Settle.DONE
    # A failure as the minion stops still goes back uncounted.
    assert decide(Result(Outcome.FAILED), 1, 3, ended.stop_reason, stopping=True)[0] is \
        Settle.RELEASED


def test_a_running_task_is_stopped_and_given_back_whatever_it_returns() -> None:
    running = task()
    running.attach(lambda: 42)
    running.mark_stopping(StopReason.SHUTDOWN)
    running.detach()
    assert running.stop_reason is StopReason.SHUTDOWN
    assert decide(Result(Outcome.OK), 1, 3, running.stop_reason, stopping=True)[0] is \
        Settle.RELEASED
    # A stop before anything started: nothing starts, and the param goes back.
    early = task()
    early.mark_stopping(StopReason.SHUTDOWN)
    assert early.attach(lambda: 42) is None and early.stop_reason is StopReason.SHUTDOWN
