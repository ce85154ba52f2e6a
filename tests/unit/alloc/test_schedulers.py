"""What the allocator reads of squeue and qstat, and the commands it submits with."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from minionize.alloc.scheduler import (
    ENDED,
    PENDING,
    RUNNING,
    SchedulerError,
    Submission,
    exit_text,
    run,
    tail,
)
from minionize.alloc.sge import IN_TRANSIT, GridEngine
from minionize.alloc.slurm import SEPARATOR, Slurm

SUBMISSION = Submission("/w/minions.sbatch", ("./a.out",), 3, "minions-x", "/w/r/jobs",
                        ("--partition=short",), tag="0123abcdef")


def squeue_line(*fields: str) -> str:
    return SEPARATOR.join(fields) + SEPARATOR


def test_sbatch_submits_an_array_named_with_its_output_beside_the_reports() -> None:
    assert Slurm().submit_command(SUBMISSION) == [
        "sbatch", "--parsable", "--array=0-2", "--job-name=minions-x",
        "--output=/w/r/jobs/%x-%A_%a.out", "--comment=minion-alloc 0123abcdef",
        "--partition=short", "/w/minions.sbatch", "./a.out"]


def test_squeue_lines_become_jobs() -> None:
    pending = Slurm.parse(squeue_line("12_3", "PENDING", "Priority", "0", "/w/r/jobs/%x-%A_%a.out",
                                      "2026-12-04T03:07:45", "N/A", "N/A",
                                      "minion-alloc 0123abcdef"), "minions-x")
    assert pending is not None and pending.condition == PENDING and not pending.failed
    assert pending.tag == "0123abcdef"
    assert pending.output == "/w/r/jobs/minions-x-12_3.out" and pending.started is None
    running = Slurm.parse(squeue_line("12_4", "RUNNING", "None", "0", "", "2026-12-04T03:07:45",
                                      "2026-12-04T03:07:50", "N/A", "(null)"), "minions-x")
    assert running is not None and running.condition == RUNNING and running.tag is None
    assert running.started is not None and running.submitted is not None
    assert running.started - running.submitted == 5
    failed = Slurm.parse(squeue_line("12_5", "FAILED", "NonZeroExitCode", "768", "",
                                     "2026-12-04T03:07:45", "2026-12-04T03:07:50",
                                     "2026-12-04T03:07:51", ""), "minions-x")
    assert failed is not None and failed.condition == ENDED and failed.failed
    assert failed.said == "FAILED (NonZeroExitCode), exit code 3"
    cancelled = Slurm.parse(squeue_line("12_6", "CANCELLED", "None", "15", "", "", "", "", ""), "m")
    assert cancelled is not None and cancelled.interrupted and not cancelled.failed
    assert Slurm.parse("garbage", "m") is None


def test_a_pending_job_that_can_never_start_is_failed() -> None:
    job = Slurm.parse(squeue_line("3_0", "PENDING", "PartitionTimeLimit", "0", "", "", "", "", ""), "m")
    assert job is not None and job.failed and job.said == "PENDING (PartitionTimeLimit)"


def test_exit_text() -> None:
    assert exit_text("0") == "" and exit_text("256") == ", exit code 1"
    assert exit_text("9") == ", signal 9" and exit_text("N/A") == ""


QSTAT = """<?xml version='1.0'?>
<job_info>
  <queue_info>
    <job_list state="running">
      <JB_job_number>2</JB_job_number><JB_name>minions-x</JB_name><state>r</state>
      <JAT_start_time>2026-12-04T03:11:12</JAT_start_time><tasks>1</tasks>
    </job_list>
    <job_list state="running">
      <JB_job_number>9</JB_job_number><JB_name>other</JB_name><state>r</state>
      <tasks>1</tasks>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>2</JB_job_number><JB_name>minions-x</JB_name><state>qw</state>
      <JB_submission_time>2026-12-04T03:11:10</JB_submission_time><tasks>2</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>3</JB_job_number><JB_name>minions-x</JB_name><state>Eqw</state>
      <tasks>1</tasks>
    </job_list>
  </job_info>
</job_info>
"""


def fake_qstat(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> None:
    monkeypatch.setattr("minionize.alloc.sge.run", lambda argv, env=None: answers.pop(0))


def test_qstat_lists_the_jobs_of_the_name_and_remembers_those_that_ended(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sge = GridEngine("/w/r/jobs")
    fake_qstat(monkeypatch, [QSTAT, "<job_info/>"])
    jobs = {job.label: job for job in sge.jobs("minions-x")}
    assert set(jobs) == {"2.1", "2.2", "3.1"}
    assert jobs["2.1"].condition == RUNNING and jobs["2.1"].started is not None
    assert jobs["2.2"].condition == PENDING and not jobs["2.2"].failed
    assert jobs["3.1"].failed and "qstat -j 3" in jobs["3.1"].said
    assert jobs["2.1"].output == "/w/r/jobs/minions-x-2.1.out"
    ended = {job.label: job for job in sge.jobs("minions-x")}
    assert ended["2.1"].condition == ENDED and ended["2.1"].started is not None
    assert ended["2.2"].condition == ENDED and ended["2.2"].started is None


def test_qsub_submits_an_array() -> None:
    command = GridEngine("/w/r/jobs").submit_command(SUBMISSION)
    assert command[:7] == ["qsub", "-terse", "-V", "-j", "y", "-t", "1-3"]
    assert command[-2:] == ["/w/minions.sbatch", "./a.out"]
    assert "minions-x" in command and "/w/r/jobs/$JOB_NAME-$JOB_ID.$TASK_ID.out" in command


def test_a_failed_command_says_the_schedulers_words(tmp_path: Path) -> None:
    with pytest.raises(SchedulerError) as refused:
        run(["sh", "-c", "echo 'sbatch: error: invalid partition specified: x' >&2; exit 1"])
    assert "invalid partition" in str(refused.value) and not refused.value.transient
    with pytest.raises(SchedulerError) as busy:
        run(["sh", "-c", "echo 'Unable to contact slurm controller' >&2; exit 1"])
    assert busy.value.transient
    with pytest.raises(SchedulerError) as slow:
        run(["sleep", "5"], timeout=0.2)
    assert slow.value.transient and "did not answer" in str(slow.value)
    with pytest.raises(SchedulerError, match="not found"):
        run([str(tmp_path / "no-sbatch")])


def test_tail_of_an_output_file(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("".join(f"line {n}\n" for n in range(30)))
    assert tail(str(path), 2) == "line 28\nline 29"
    assert "cannot read" in tail(str(tmp_path / "none"))
    assert tail(None) == "(no output file known)"


def test_a_job_submitted_then_ended_between_two_looks_is_seen_ended(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sge = GridEngine(str(tmp_path))
    fake_qstat(monkeypatch, ["7.1-2:1", "<job_info/>"])
    assert sge.submit(replace(SUBMISSION, count=2, output_dir=str(tmp_path))) == "7"
    (tmp_path / "minions-x-7.1.out").write_text("ran\n")
    jobs = {job.label: job for job in sge.jobs("minions-x")}
    assert jobs["7.1"].condition == ENDED and jobs["7.1"].started is not None
    # Not listed yet and not started: a task qstat shows a moment later (it was counted
    # ended, and the allocator submitted one array too many), until IN_TRANSIT passed.
    assert jobs["7.2"].condition == PENDING
    sge.seen["7.2"] = replace(sge.seen["7.2"], submitted=time.time() - IN_TRANSIT - 1)
    fake_qstat(monkeypatch, ["<job_info/>"])
    jobs = {job.label: job for job in sge.jobs("minions-x")}
    assert jobs["7.2"].condition == ENDED and jobs["7.2"].started is None  # never ran
