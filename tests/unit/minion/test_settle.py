"""The settle decision, without threads: a task minionize stopped is never done."""

from __future__ import annotations

import pytest

from minionize.callbacks.base import Outcome, Result, StopReason
from minionize.engines.base import Settle
from minionize.minion.settle import abbreviate, decide

OK = Result(Outcome.OK, exit_code=0)
FAILED = Result(Outcome.FAILED, reason="exit code 1", exit_code=1)
REJECTED = Result(Outcome.REJECTED, reason="a mapping param needs --template")


def test_success_is_done_and_failure_is_retried_then_dead() -> None:
    assert decide(OK, 1, 3, None, False) == (Settle.DONE, "")
    assert decide(FAILED, 1, 3, None, False) == (Settle.RETRY, "exit code 1")
    assert decide(FAILED, 3, 3, None, False) == (Settle.DEAD, "exit code 1")


def test_a_rejected_param_is_dead_at_once() -> None:
    assert decide(REJECTED, 1, 3, None, False)[0] is Settle.DEAD


@pytest.mark.parametrize("result", [OK, FAILED])
def test_a_timed_out_task_is_a_failed_attempt_whatever_its_exit_code(result: Result) -> None:
    outcome, reason = decide(result, 1, 3, StopReason.TIMEOUT, False, timeout=1.0)
    assert outcome is Settle.RETRY
    assert reason.startswith("timed out after 1s")
    assert decide(result, 3, 3, StopReason.TIMEOUT, False, timeout=1.0)[0] is Settle.DEAD


@pytest.mark.parametrize("result", [OK, FAILED, REJECTED])
@pytest.mark.parametrize("attempt", [1, 3])
def test_a_task_stopped_by_a_graceful_stop_is_released_whatever_its_exit_code(
    result: Result, attempt: int
) -> None:
    assert decide(result, attempt, 3, StopReason.SHUTDOWN, True)[0] is Settle.RELEASED


def test_a_task_that_failed_by_itself_while_stopping_is_released() -> None:
    assert decide(FAILED, 3, 3, None, True)[0] is Settle.RELEASED
    assert decide(OK, 1, 3, None, True)[0] is Settle.DONE


def test_long_reasons_and_params_are_abbreviated_with_their_size() -> None:
    big = "x" * 1_000_000
    assert abbreviate("short") == "short"
    assert abbreviate(big) == "x" * 200 + "... (1000000 bytes)"
    _, reason = decide(Result(Outcome.FAILED, reason=big), 3, 3, None, False)
    assert len(reason) < 600 and reason.endswith("(1000000 bytes)")
