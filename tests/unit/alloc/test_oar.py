"""What the allocator submits to OAR (a script that carries the minions' variables, for
OAR passes none) and what it reads of ``oarstat -J -f``."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from minionize.alloc.oar import Oar, directive, sql_text
from minionize.alloc.scheduler import ENDED, PENDING, RUNNING, SchedulerError, Submission

USER_SCRIPT = """#!/bin/bash
#OAR -n minions
#OAR -l core=1,walltime=2:00:00
#OAR -t besteffort
#OAR -O minion.%jobid%.out
#OAR --stderr=minion.%jobid%.err
echo hello
"""


@pytest.fixture
def submission(tmp_path: Path) -> Submission:
    script = tmp_path / "minions.oar"
    script.write_text(USER_SCRIPT)
    return Submission(str(script), ("./a.out", "it's"), 3, "minions-x", str(tmp_path / "jobs"),
                      ("-p", "host='n1'"), {"MINION_WAIT": "0", "EXECO_PERSISTENCE_DIR": "/w q"},
                      tag="0123abcdef")


def test_the_job_script_keeps_the_users_directives_and_carries_the_variables(
        submission: Submission) -> None:
    path, text = Oar(submission.output_dir).job_script(submission)
    assert os.path.dirname(path) == submission.output_dir
    assert os.path.basename(path).startswith("minions-x-0123abcdef-")
    assert text.splitlines() == [
        "#!/bin/sh", "#OAR -l core=1,walltime=2:00:00", "#OAR -t besteffort",
        "export EXECO_PERSISTENCE_DIR='/w q'", "export MINION_WAIT=0",
        f'exec {submission.script} "$@"']
    assert directive("#OAR -l core=1") and not directive("#OAR --name=x")
    assert not directive("# OAR -l core=1") and not directive("#OAR -E err")


def test_oarsub_submits_an_array_named_with_its_output_beside_the_reports(
        submission: Submission) -> None:
    oar = Oar(submission.output_dir)
    path, _ = oar.job_script(submission)
    assert oar.submit_command(submission) == [
        "oarsub", "--array", "3", "-n", "minions-x",
        "-O", f"{submission.output_dir}/minions-x.%jobid%.out",
        "-E", f"{submission.output_dir}/minions-x.%jobid%.err", "-p", "host='n1'",
        "-S", f"{path} ./a.out 'it'\"'\"'s'"]


def test_submit_writes_the_script_and_reads_the_array_id(
        submission: Submission, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "oarsub"
    fake.write_text('#!/bin/sh\necho "$PWD" > "$0.pwd"\n'
                    'printf "OAR_JOB_ID=7\\nOAR_JOB_ID=8\\nOAR_ARRAY_ID=7\\n"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PWD", "/elsewhere")
    monkeypatch.chdir(tmp_path)
    oar = Oar(submission.output_dir)
    assert oar.submit(submission) == "7"
    path, text = oar.job_script(submission)
    assert Path(path).read_text() == text and os.stat(path).st_mode & stat.S_IXUSR
    assert (bindir / "oarsub.pwd").read_text().strip() == str(tmp_path)  # the jobs' directory


def entry(**fields: Any) -> dict[str, Any]:
    base = {"Job_Id": 12, "state": "Waiting", "exit_code": None, "events": [],
            "command": "/w/r/jobs/minions-x-0123abcdef-89abcdef.oar ./a.out",
            "launchingDirectory": "/w", "stderr_file": "/w/r/jobs/minions-x.12.err",
            "submissionTime": 1000, "startTime": 0, "stopTime": 0, "message": ""}
    return {**base, **fields}


def test_oarstat_entries_become_jobs() -> None:
    oar = Oar("/w/r/jobs")
    waiting = oar.parse(entry())
    assert (waiting.label, waiting.condition, waiting.tag) == ("12", PENDING, "0123abcdef")
    assert waiting.submitted == 1000.0 and waiting.started is None
    running = oar.parse(entry(state="Running", startTime=1010))
    assert running.condition == RUNNING and running.started == 1010.0
    broken = oar.parse(entry(state="Terminated", exit_code=768, startTime=1010, stopTime=1011))
    assert broken.condition == ENDED and broken.failed and not broken.interrupted
    assert broken.said == "Terminated, exit code 3" and broken.ended == 1011.0
    assert broken.output == "/w/r/jobs/minions-x.12.err"
    done = oar.parse(entry(state="Terminated", exit_code=0, stderr_file="OAR.x.12.stderr"))
    assert not done.failed and done.output == "/w/OAR.x.12.stderr"
    deleted = oar.parse(entry(state="Error", message="killed", events=[
        {"type": "FRAG_JOB_REQUEST"}, {"type": "SWITCH_INTO_ERROR_STATE"}]))
    assert deleted.interrupted and not deleted.failed
    assert deleted.said == "Error (events: FRAG_JOB_REQUEST, SWITCH_INTO_ERROR_STATE); killed"
    lost = oar.parse(entry(state="Error", command="sleep 3"))
    assert lost.failed and lost.tag is None


def test_one_oarstat_for_the_jobs_of_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "oarstat"
    fake.write_text('#!/bin/sh\necho "$@" >> "$0.calls"\ncat "$0.out"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    (bindir / "oarstat.out").write_text("")
    oar = Oar("/w/r/jobs")
    assert oar.jobs("minions-x") == []
    (bindir / "oarstat.out").write_text('{"12": {"Job_Id": 12, "state": "Waiting"}}')
    assert [job.label for job in oar.jobs("minions-x")] == ["12"] and oar.waiting == ["12"]
    calls = (bindir / "oarstat.calls").read_text().splitlines()
    assert len(calls) == 2 and calls[0].startswith("-J -f --sql job_name = 'minions-x' AND ")
    (bindir / "oarstat.out").write_text("Use of uninitialized value")
    with pytest.raises(SchedulerError, match="unreadable JSON") as error:
        oar.jobs("minions-x")
    assert error.value.transient
    assert sql_text("it's") == "'it''s'"
