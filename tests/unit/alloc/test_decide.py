"""The allocator's decision, alone: backlog, live and pending minions, bounds in; what to
submit, cancel, or whether to stop or exit out."""

from __future__ import annotations

from minionize.alloc.decide import Bounds, Observation, decide

BOUNDS = Bounds(max_minions=10)


def look(**values: object) -> Observation:
    fields = {"backlog": 0, "in_flight": 0, "live": 0, "pending": 0, **values}
    return Observation(**fields)  # type: ignore[arg-type]


def test_a_backlog_asks_for_a_minion_per_task_up_to_the_maximum() -> None:
    assert decide(look(backlog=4), BOUNDS).submit == 4
    decision = decide(look(backlog=200), BOUNDS)
    assert (decision.target, decision.submit) == (10, 10)
    assert "--max-minions 10" in decision.why


def test_live_and_pending_minions_count_against_the_target() -> None:
    assert decide(look(backlog=200, live=3, pending=4), BOUNDS).submit == 3
    decision = decide(look(backlog=200, live=6, pending=4), BOUNDS)
    assert decision.submit == 0 and "enough minions" in decision.why


def test_tasks_per_minion_divides_the_backlog() -> None:
    bounds = Bounds(max_minions=50, tasks_per_minion=20)
    assert decide(look(backlog=200), bounds).target == 10
    assert decide(look(backlog=1), bounds).target == 1


def test_time_per_minion_uses_the_throughput_once_known() -> None:
    bounds = Bounds(max_minions=50, time_per_minion=100.0)
    # 2 live minions at 1 task/s together: 0.5 task/s each; 1000 tasks = 2000 s = 20.
    decision = decide(look(backlog=1000, live=2, throughput=1.0), bounds)
    assert decision.target == 20 and decision.submit == 18
    # Unknown throughput: one minion per task (tasks_per_minion's default).
    assert decide(look(backlog=5), bounds).target == 5


def test_min_minions_raises_the_target_while_there_is_work() -> None:
    bounds = Bounds(max_minions=10, min_minions=3)
    assert decide(look(backlog=1), bounds).target == 3
    assert decide(look(), bounds).finished


def test_a_drained_queue_submits_nothing_and_exits_once_its_minions_ended() -> None:
    assert decide(look(), BOUNDS).finished
    waiting = decide(look(live=2), BOUNDS)
    assert not waiting.finished and waiting.submit == 0
    # Params in flight are not drained: their lease may expire and come back.
    assert not decide(look(in_flight=3), BOUNDS).finished
    assert decide(look(in_flight=3), BOUNDS).submit == 0


def test_pending_jobs_are_cancelled_when_nothing_is_todo() -> None:
    decision = decide(look(pending=2, live=1), BOUNDS)
    assert decision.cancel_pending and decision.submit == 0
    # Params in flight: a pending job would start for nothing as well.
    assert decide(look(pending=2, in_flight=1, live=1), BOUNDS).cancel_pending
    assert not decide(look(pending=2, backlog=1), BOUNDS).cancel_pending
    assert not decide(look(pending=2), Bounds(max_minions=4, forever=True)).cancel_pending


def test_forever_keeps_min_minions_on_an_empty_queue_and_never_exits() -> None:
    bounds = Bounds(max_minions=4, min_minions=1, forever=True)
    assert decide(look(), bounds).submit == 1
    decision = decide(look(live=1), bounds)
    assert not decision.finished and decision.submit == 0
    assert decide(look(), Bounds(max_minions=4, forever=True)).finished is False


def test_no_new_job_when_the_live_minions_drain_the_backlog_before_it_starts() -> None:
    # 10 left at 5 tasks/s: 2 s; a job waits 60 s before it starts.
    decision = decide(look(backlog=10, live=2, throughput=5.0, start_wait=60.0), BOUNDS)
    assert decision.submit == 0 and "drain it in 2 s" in decision.why
    # A job that starts at once is worth it.
    assert decide(look(backlog=10, live=2, throughput=5.0, start_wait=0.5), BOUNDS).submit == 8


def test_broken_jobs_in_a_row_stop_it_with_what_was_said() -> None:
    bounds = Bounds(max_minions=4, max_broken=3)
    assert not decide(look(backlog=5, broken=2, broken_why="x"), bounds).stop
    decision = decide(look(backlog=5, broken=3, broken_why="job 7_0: FAILED"), bounds)
    assert decision.stop and decision.submit == 0
    assert "3 jobs in a row" in decision.why and "job 7_0: FAILED" in decision.why
