"""One look made into an observation: live minions from reports and running jobs, pending
jobs, and the jobs in a row that ended without starting a task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from minionize.alloc.observe import BrokenJobs, observe, start_wait
from minionize.alloc.scheduler import ENDED, PENDING, RUNNING, Job
from minionize.status.model import MinionStatus, Status


def minion(job: str, state: str = "alive", done: int = 0, exit_code: Any = None) -> MinionStatus:
    return MinionStatus(name=f"n_{job}", host="n", pid=1, job=job, pod=None, state=state,
                        start=1.0, last_seen=2.0, heartbeat=5.0, exit_code=exit_code, done=done,
                        failed=0, dead=0, released=0, running=[], in_progress=0, busy=0.0)


def status(*minions: MinionStatus, rate: Any = None) -> Status:
    return Status(directory="r", exists=True, now=3.0, minions=list(minions), rate_recent=rate)


def test_live_minions_are_alive_reports_and_running_jobs_not_reported_yet() -> None:
    jobs = [Job("1_0", RUNNING), Job("1_1", RUNNING), Job("1_2", PENDING), Job("1_3", PENDING),
            Job("1_4", RUNNING)]
    seen = observe({"todo": 5, "expired": 2, "in_flight": 1},
                   status(minion("1_0"), minion("1_4", "finished", done=3), minion("")),
                   jobs, BrokenJobs())
    # 1_0 (alive), 1_1 (starting), a minion started by hand; 1_4 finished.
    assert (seen.live, seen.pending, seen.backlog, seen.in_flight) == (3, 2, 7, 1)


def test_a_running_job_whose_report_is_late_is_still_live() -> None:
    # Under load a minion's heartbeat can come late (its report reads "lost") while
    # the scheduler still runs its job: it holds its slot, and a job submitted in its
    # place would be one too many. A job that ended with its report alive is not live
    # once the report is lost.
    jobs = [Job("1_0", RUNNING), Job("1_1", RUNNING), Job("1_2", ENDED, started=1.0, ended=2.0)]
    seen = observe({"todo": 50}, status(minion("1_0", "lost"), minion("1_1"),
                                        minion("1_2", "lost")), jobs, BrokenJobs())
    assert seen.live == 2


def ended(label: str, when: float, **values: Any) -> Job:
    return Job(label, ENDED, said=values.pop("said", "FAILED"), started=1.0, ended=when, **values)


def test_jobs_that_end_without_a_task_count_in_a_row(tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    out.write_text("minionize: command not found\n")
    broken = BrokenJobs()
    broken.follow([ended("1_0", 5.0, failed=True, output=str(out))], {})
    broken.follow([ended("1_0", 5.0, failed=True), ended("1_1", 6.0, failed=True)], {})
    assert broken.count == 2  # each job once
    assert "job 1_1: FAILED, no minion report" in broken.why
    broken.follow([ended("1_2", 7.0, failed=True, output=str(out))], {})
    assert "minionize: command not found" in broken.why
    # One that started a task clears the count.
    broken.follow([ended("1_3", 8.0)], {"1_3": minion("1_3", "finished", done=1)})
    assert broken.count == 0


def test_cancelled_or_preempted_jobs_and_quiet_ends_are_not_failures() -> None:
    broken = BrokenJobs()
    broken.follow([ended("2_0", 1.0, interrupted=True, said="PREEMPTED"),
                   Job("2_1", ENDED, said="CANCELLED"),  # never started
                   ended("2_2", 2.0, said="COMPLETED")],
                  {"2_2": minion("2_2", "finished", exit_code=0)})
    assert broken.count == 0
    broken.follow([ended("2_3", 3.0, said="COMPLETED")],
                  {"2_3": minion("2_3", "finished", exit_code=2)})
    assert broken.count == 1 and "its minion exited 2" in broken.why


def test_a_pending_job_that_can_never_start_counts_once() -> None:
    broken = BrokenJobs()
    never = Job("3_0", PENDING, said="PENDING (PartitionTimeLimit)", failed=True)
    broken.follow([never], {})
    broken.follow([never], {})
    assert broken.count == 1 and "can never start" in broken.why
    assert observe({"todo": 1}, status(), [never], broken).pending == 0


def test_start_wait_is_the_median_wait_of_the_jobs_that_started() -> None:
    jobs = [Job("a", RUNNING, submitted=0.0, started=w) for w in (1.0, 3.0, 10.0)]
    assert start_wait(jobs + [Job("b", PENDING, submitted=0.0)]) == 3.0
    assert start_wait([Job("b", PENDING)]) is None


def test_only_the_jobs_of_this_script_and_options_count() -> None:
    broken = BrokenJobs()
    old = [ended("4_0", 1.0, failed=True, tag="before"), ended("4_1", 2.0, failed=True, tag="before")]
    broken.follow(old, {}, "fixed")
    assert broken.count == 0
    broken.follow([*old, ended("5_0", 3.0, failed=True, tag="fixed")], {}, "fixed")
    assert broken.count == 1 and "job 5_0" in broken.why
