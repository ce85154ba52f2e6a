"""The allocator's loop against a fake scheduler: it submits arrays, finds its jobs again
after a restart, backs off a failing scheduler, stops on a refused submission."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytest

from minionize.alloc import Allocator, Bounds, Job, LockHeld, Plan, SchedulerError, Submission
from minionize.alloc.lock import hold_lock
from minionize.alloc.scheduler import PENDING, RUNNING
from minionize.errors import EXIT_HALTED


class FakeScheduler:
    name = "fake"
    query_command = "fakeq"

    def __init__(self) -> None:
        self.queued: list[Job] = []
        self.queries = 0
        self.submitted: list[int] = []
        self.envs: list[dict[str, str]] = []
        self.fail_query: Optional[SchedulerError] = None
        self.refuse: Optional[SchedulerError] = None
        self.cancelled = 0

    def submit_command(self, submission: Submission) -> list[str]:
        return ["fsub", f"--count={submission.count}", submission.script]

    def submit(self, submission: Submission) -> str:
        if self.refuse:
            raise self.refuse
        self.submitted.append(submission.count)
        self.envs.append(dict(submission.env or {}))
        array = len(self.submitted)
        self.queued += [Job(f"{array}_{n}", PENDING) for n in range(submission.count)]
        return str(array)

    def jobs(self, name: str) -> list[Job]:
        self.queries += 1
        if self.fail_query:
            raise self.fail_query
        return list(self.queued)

    def cancel_pending(self, name: str) -> None:
        self.cancelled += 1
        self.queued = []


class FakeQueue:
    def __init__(self, **counters: int) -> None:
        self.counters = counters

    def status(self) -> dict[str, Any]:
        return dict(self.counters)


def allocator(tmp_path: Path, scheduler: FakeScheduler, queue: FakeQueue, said: list[str],
              **options: Any) -> Allocator:
    submission = Submission("job.sh", (), 0, "minions-t", str(tmp_path / "jobs"))
    return Allocator(scheduler, queue, Plan(submission, str(tmp_path / "reports")),
                     Bounds(max_minions=options.pop("max_minions", 5), **options), 1.0,
                     said.append, sleep=lambda seconds: None)


def test_it_submits_one_array_and_a_restarted_one_submits_no_duplicate(tmp_path: Path) -> None:
    scheduler, queue, said = FakeScheduler(), FakeQueue(todo=100), []
    first = allocator(tmp_path, scheduler, queue, said)
    assert first.poll() is None and first.poll() is None
    assert scheduler.submitted == [5]
    again = allocator(tmp_path, scheduler, queue, said)
    assert again.poll() is None and scheduler.submitted == [5]
    assert "target 5, live 0, pending 5, backlog 100, in flight 0: submit nothing" in said[-1]
    assert scheduler.queries == 3  # one query a poll


def test_a_drained_queue_cancels_the_pending_jobs_then_exits(tmp_path: Path) -> None:
    scheduler, queue, said = FakeScheduler(), FakeQueue(todo=3), []
    alloc = allocator(tmp_path, scheduler, queue, said)
    alloc.poll()
    queue.counters = {"todo": 0}
    assert alloc.poll() is None and scheduler.cancelled == 1
    assert alloc.run() == 0 and "exit (queue drained" in said[-1]


def test_nothing_is_submitted_for_a_drained_queue(tmp_path: Path) -> None:
    scheduler, said = FakeScheduler(), []
    assert allocator(tmp_path, scheduler, FakeQueue(todo=0, done=9), said).run() == 0
    assert scheduler.submitted == [] and scheduler.queries == 1


def test_a_failing_scheduler_is_backed_off_and_said(tmp_path: Path) -> None:
    scheduler, said = FakeScheduler(), []
    alloc = allocator(tmp_path, scheduler, FakeQueue(todo=3), said)
    scheduler.fail_query = SchedulerError("squeue: Socket timed out", transient=True)
    alloc.poll()
    alloc.poll()
    assert alloc.pacer.wait == 4.0 and scheduler.submitted == []
    assert "fakeq failed (squeue: Socket timed out): backing off, next query in 4 s" in said[-1]
    scheduler.fail_query = None
    alloc.poll()
    assert alloc.pacer.wait == 1.0 and any("answers again" in line for line in said)
    assert scheduler.submitted == [3]


def test_a_refused_submission_n_times_stops_it_with_the_schedulers_words(tmp_path: Path) -> None:
    scheduler, said = FakeScheduler(), []
    scheduler.refuse = SchedulerError("sbatch: error: invalid partition specified: nope")
    alloc = allocator(tmp_path, scheduler, FakeQueue(todo=3), said, max_broken=2)
    assert alloc.run() == EXIT_HALTED
    assert any("stopped: 2 jobs in a row" in line and "invalid partition" in line
               for line in said)


def test_a_transient_refusal_backs_off_and_is_no_failure(tmp_path: Path) -> None:
    scheduler, said = FakeScheduler(), []
    scheduler.refuse = SchedulerError("sbatch: Unable to contact slurm controller", True)
    alloc = allocator(tmp_path, scheduler, FakeQueue(todo=3), said, max_broken=1)
    assert alloc.poll() is None and alloc.poll() is None
    assert alloc.broken.count == 0 and alloc.pacer.wait > 1.0


def test_dry_run_says_what_it_would_submit(tmp_path: Path) -> None:
    scheduler, said = FakeScheduler(), []
    alloc = allocator(tmp_path, scheduler, FakeQueue(todo=2), said)
    alloc = Allocator(alloc.scheduler, alloc.engine, alloc.plan, alloc.bounds, 1.0,
                      said.append, dry_run=True)
    assert alloc.run() == 0 and scheduler.submitted == []
    assert said[-1] == "would run: fsub --count=2 job.sh"
    assert "submit 2 (backlog 2 / 1 per minion)" in said[-2]


def test_a_second_allocator_on_the_queue_finds_the_lock_held(tmp_path: Path) -> None:
    with hold_lock(str(tmp_path), "minions-t"), pytest.raises(LockHeld, match="another"), \
            hold_lock(str(tmp_path), "minions-t"):
        pass
    with hold_lock(str(tmp_path), "minions-t"):
        pass  # released


def test_an_unreadable_queue_is_said_and_looked_at_again(tmp_path: Path) -> None:
    class Broken(FakeQueue):
        def status(self) -> dict[str, Any]:
            raise OSError("disk gone")

    scheduler, said = FakeScheduler(), []
    assert allocator(tmp_path, scheduler, Broken(), said).poll() is None
    assert "cannot read the queue (disk gone)" in said[-1] and scheduler.queries == 0


def test_submission_keeps_its_fields_when_counted() -> None:
    submission = Submission("s", ("a",), 0, "n", "o", ("--x",), {"A": "1"})
    assert replace(submission, count=3).env == {"A": "1"}


def test_only_an_array_submitted_when_no_minion_lives_or_waits_may_keep_a_waiter(
        tmp_path: Path) -> None:
    scheduler, queue, said = FakeScheduler(), FakeQueue(todo=100), []
    alloc = allocator(tmp_path, scheduler, queue, said, max_minions=3)
    alloc.poll()
    scheduler.queued = scheduler.queued[1:]  # one lost before it started
    alloc.poll()
    assert scheduler.submitted == [3, 1]
    assert "MINION_WAIT" not in scheduler.envs[0]  # the script's own default
    assert scheduler.envs[1]["MINION_WAIT"] == "0"


def test_each_decision_is_left_beside_the_reports_for_minion_status(tmp_path: Path) -> None:
    from minionize.status.allocator import read_decision

    scheduler, said = FakeScheduler(), []
    alloc = allocator(tmp_path, scheduler, FakeQueue(todo=3), said)
    alloc.poll()
    decision = read_decision(tmp_path / "reports")
    assert decision is not None and decision.line() in said[-2]
    assert (decision.name, decision.scheduler, decision.act) == ("minions-t", "fake", "submit 3")
    alloc.poll()
    decision = read_decision(tmp_path / "reports")
    assert decision is not None and (decision.pending, decision.act) == (3, "submit nothing")


def test_a_dry_run_leaves_no_decision(tmp_path: Path) -> None:
    scheduler, said = FakeScheduler(), []
    alloc = replace(allocator(tmp_path, scheduler, FakeQueue(todo=3), said), dry_run=True)
    assert alloc.run() == 0 and scheduler.submitted == []
    assert not (tmp_path / "reports").exists()


def test_minions_that_finished_during_the_query_are_seen_with_the_drained_queue(
        tmp_path: Path) -> None:
    # While the scheduler answers (a second or more on a busy cluster), the queue drains
    # and its minions finish. Counters read before the query said 50 todo beside reports
    # read after it that say every minion finished: the allocator submitted for a queue
    # already drained. The queue is read last.
    from minionize.identity import MinionInfo
    from minionize.reporters.json import JsonReporter

    queue = FakeQueue(todo=50)

    class MovingOn(FakeScheduler):
        def jobs(self, name: str) -> list[Job]:
            queue.counters = {"todo": 0, "done": 50}
            for task in ("0", "1"):
                reporter = JsonReporter(tmp_path / "reports")
                reporter.start(MinionInfo(minion_id=task, host="n", pid=int(task) + 10, start=1.0,
                                          jobs={"SLURM_ARRAY_JOB_ID": "1",
                                                "SLURM_ARRAY_TASK_ID": task}))
                reporter.stop(0)
            return [Job("1_0", RUNNING), Job("1_1", RUNNING)]

    scheduler, said = MovingOn(), []
    alloc = allocator(tmp_path, scheduler, queue, said, tasks_per_minion=25)
    assert alloc.poll() == 0, said  # the queue drained, its minions finished: over
    assert scheduler.submitted == [], said
    assert "backlog 0, in flight 0: exit" in said[-1]
