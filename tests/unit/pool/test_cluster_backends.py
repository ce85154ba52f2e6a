"""The cluster backends of the pool without a cluster: their commands, the parsing of
what squeue, sacct, oarsub, oarstat, qsub, qstat and qacct print, and the polling they
share (:mod:`minionize.pool.cluster`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from minionize.pool.backends import PoolWorker
from minionize.pool.cluster import ENDED, PENDING, RUNNING, ClusterBackend, Listing
from minionize.pool.errors import PoolError
from minionize.pool.oar import OarBackend, env_lines, parse_submit
from minionize.pool.options import check, submit_options
from minionize.pool.rundir import make_rundir
from minionize.pool.sge import SgeBackend, parse_qacct, parse_qstat
from minionize.pool.slurm import SlurmBackend, parse_sacct, parse_squeue
from tests.unit.alloc.test_schedulers import QSTAT


@pytest.fixture
def rundir(tmp_path: Path) -> str:
    return make_rundir(str(tmp_path), {"lease": 5.0})


def fake_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    """``name`` on PATH: a shell script of ``body``."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
    (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


def write_state(rundir: str, name: str, state: str) -> None:
    with open(os.path.join(rundir, "workers", f"{name}.json"), "w") as handle:
        json.dump({"pid": 4242, "host": "node1", "state": state, "minion": "m"}, handle)


# -- options -------------------------------------------------------------------------
def test_the_backends_are_local_slurm_oar_and_sge() -> None:
    for backend in ("local", "slurm", "oar", "sge"):
        check(None, backend, "fork")
    with pytest.raises(ValueError, match="backend must be 'local', 'slurm', 'oar' or 'sge', not 'pbs'"):
        check(None, "pbs", "fork")


def test_submit_args_go_to_any_cluster_and_sbatch_args_to_slurm_alone() -> None:
    assert submit_options("slurm", ["-t", "5"], ["--partition=a"]) == ["--partition=a", "-t", "5"]
    assert submit_options("oar", ["-l", "core=1"], ()) == ["-l", "core=1"]
    assert submit_options("sge", [], []) == []
    with pytest.raises(ValueError, match="sbatch_args is for backend='slurm'.*submit_args"):
        submit_options("oar", (), ["--partition=a"])
    with pytest.raises(ValueError, match="submit_args is for the cluster backends"):
        submit_options("local", ["-l"], ())
    with pytest.raises(TypeError, match="a list of strings"):
        submit_options("sge", "-l h_rt=60", ())  # type: ignore[arg-type]


# -- what the three backends share ------------------------------------------------------
class Fake(ClusterBackend):
    """A scheduler whose queue the test writes (``queue``), and that counts its queries."""

    backend = "fake"
    submit_name = "fakesub"
    cancel_name = "fakedel"
    script_text = "#!/bin/sh\nexec {python} -m minionize.pool.worker {rundir}\n"

    def __init__(self, rundir: str) -> None:
        super().__init__(rundir)
        self.queue: Optional[Listing] = {}
        self.cancelled: list[list[str]] = []

    def submit_command(self, count: int) -> list[str]:
        return ["echo", str(100 + len(self.jobs))]

    def submitted(self, out: str, count: int) -> tuple[str, list[str]]:
        job = out.strip()
        return job, [f"f{job}_{i}" for i in range(count)]

    def describe(self, name: str) -> str:
        return f"task {name[1:]}"

    def listing(self) -> Optional[Listing]:
        return None if self.queue is None else dict(self.queue)

    def final(self, workers: list[PoolWorker]) -> dict[str, str]:
        return {w.name: "CANCELLED" for w in workers if w.name.endswith("_1")}

    def cancel_command(self, jobs: list[str]) -> list[str]:
        self.cancelled.append(jobs)
        self.queue = {}
        return ["true"]


def test_a_worker_that_leaves_the_queue_is_lost_with_the_schedulers_words(rundir: str) -> None:
    fake = Fake(rundir)
    fake.start(3)
    assert (fake.jobs, [w.state for w in fake.workers]) == (["100"], ["starting"] * 3)
    script = Path(fake.script)
    assert script.stat().st_mode & 0o777 == 0o700 and script.parent.stat().st_mode & 0o777 == 0o700
    fake.queue = {"f100_0": (RUNNING, "r"), "f100_1": (RUNNING, "r"), "f100_2": (PENDING, "qw")}
    write_state(rundir, "f100_0", "alive")
    write_state(rundir, "f100_1", "alive")
    assert [w.state for w in fake.poll()] == ["alive", "alive", "starting"]
    assert (fake.workers[0].pid, fake.workers[0].host) == (4242, "node1")
    fake.queue = {"f100_2": (ENDED, "Error (events: FRAG_JOB_REQUEST)")}
    write_state(rundir, "f100_0", "finished")
    write_state(rundir, "f100_1", "stopped")
    fake._polled = 0.0
    assert [w.state for w in fake.poll()] == ["finished", "lost", "lost"]
    assert fake.reason(fake.workers[1]) == (
        "task 100_1 left the queue (stopped by a signal: fakedel or preemption; CANCELLED)")
    assert fake.reason(fake.workers[2]) == "task 100_2 left the queue (Error (events: FRAG_JOB_REQUEST))"


def test_the_scheduler_is_asked_once_a_second_whatever_the_polls(rundir: str) -> None:
    fake = Fake(rundir)
    fake.start(2)
    fake.queue = {"f100_0": (PENDING, ""), "f100_1": (PENDING, "")}
    for _ in range(500):
        fake.poll()
    assert fake.queries == 1
    fake.start(1)  # a replacement is looked at at once
    fake.poll()
    assert fake.queries == 2


def test_a_failed_query_changes_nothing_and_an_ended_job_is_not_cancelled(rundir: str) -> None:
    fake = Fake(rundir)
    fake.start(1)
    fake.queue = None
    assert [w.state for w in fake.poll()] == ["starting"]
    fake.start(1)
    fake.queue = {"f101_0": (RUNNING, "")}
    fake.poll()
    assert fake.live_jobs() == ["101"]
    fake.stop()
    assert fake.cancelled == [["101"]]
    assert [w.state for w in fake.workers] == ["lost", "lost"]


def test_a_missing_scheduler_command_is_a_pool_error(rundir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PoolError, match="oarsub not found: the oar backend needs"):
        OarBackend(rundir).start(1)


def test_a_refused_submission_says_the_schedulers_words(rundir: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_command(tmp_path, monkeypatch, "qsub", "echo 'Unable to run job: unknown queue nosuch.' >&2; exit 1")
    with pytest.raises(PoolError, match="qsub refused the pool's workers: Unable to run job: unknown queue"):
        SgeBackend(rundir, ["-q", "nosuch"]).start(2)


# -- SLURM ---------------------------------------------------------------------------
def test_slurm_commands_and_parsing(rundir: str) -> None:
    slurm = SlurmBackend(rundir, ["--partition=short"])
    argv = slurm.submit_command(2)
    assert argv[:4] == ["sbatch", "--parsable", "--array=0-1", "--job-name=minionize-pool"]
    assert argv[-2:] == ["--partition=short", slurm.script]
    assert slurm.submitted("17;cluster\n", 2) == ("17", ["s17_0", "s17_1"])
    assert parse_squeue("17_0 RUNNING\n17_1 PENDING\nnonsense\n") == {
        "s17_0": (RUNNING, "RUNNING"), "s17_1": (PENDING, "PENDING")}
    assert parse_sacct("17_0|CANCELLED by 0|0:15\n17_0.batch|CANCELLED|0:15\n") == {
        "s17_0": "CANCELLED by 0, exit code 0:15"}
    assert slurm.describe("s17_0") == "array task 17_0"
    assert slurm.cancel_command(["17", "18"]) == ["scancel", "17", "18"]


# -- OAR -----------------------------------------------------------------------------
def test_oarsub_runs_the_script_as_an_array(rundir: str) -> None:
    oar = OarBackend(rundir, ["-l", "core=1,walltime=0:10:00"])
    argv = oar.submit_command(3)
    assert argv[:5] == ["oarsub", "--array", "3", "-n", "minionize-pool"]
    assert argv[-4:] == ["-l", "core=1,walltime=0:10:00", "-S", oar.script]
    out = "[ADMISSION RULE] Set default walltime\nOAR_JOB_ID=12\nOAR_JOB_ID=13\nOAR_ARRAY_ID=12\n"
    assert parse_submit(out) == ("12", ["12", "13"])
    assert oar.submitted(out, 2) == ("12", ["o12", "o13"])
    assert parse_submit("OAR_JOB_ID=20\n") == ("20", ["20"])
    with pytest.raises(PoolError, match="oarsub printed no job id: nonsense"):
        parse_submit("nonsense")


def test_the_oar_job_gets_the_callers_environment_from_a_private_file(
    rundir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_TOKEN", "it's\nodd $HOME `x`")
    monkeypatch.setenv("OAR_JOB_ID", "99")
    oar = OarBackend(rundir)
    oar.prepare()
    env_file = Path(oar.directory) / "env.sh"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert Path(oar.directory).stat().st_mode & 0o777 == 0o700
    script = Path(oar.script).read_text()
    assert f". {oar.directory}/env.sh" in script and '--name "o${OAR_JOB_ID}"' in script
    assert "MY_TOKEN" not in script
    shown = subprocess.run(["env", "-i", "OAR_JOB_ID=7", "sh", "-c",
                            f'. {env_file}; printf "%s|%s" "$MY_TOKEN" "$OAR_JOB_ID"'],
                           capture_output=True, text=True, check=True).stdout
    assert shown == "it's\nodd $HOME `x`|7"
    assert "export PWD=" not in env_lines({"PWD": "/x", "A-B": "1", "OAR_NODEFILE": "f", "A": "1"})
    assert env_lines({"PWD": "/x", "A-B": "1", "OAR_NODEFILE": "f", "A": "1"}) == "export A=1\n"


def test_oarstat_says_who_waits_runs_and_ended(rundir: str) -> None:
    oar = OarBackend(rundir)
    oar.jobs = ["12"]
    out = json.dumps({
        "12": {"Job_Id": 12, "state": "Running", "events": []},
        "13": {"Job_Id": 13, "state": "Waiting", "events": []},
        "14": {"Job_Id": 14, "state": "Error", "exit_code": None, "message": "",
               "events": [{"type": "FRAG_JOB_REQUEST"}]},
    })
    listed = oar.parse_oarstat(out)
    assert listed == {"o12": (RUNNING, "Running"), "o13": (PENDING, "Waiting"),
                      "o14": (ENDED, "Error (events: FRAG_JOB_REQUEST)")}
    assert oar.parse_oarstat("") == {} and oar.parse_oarstat("Use of uninitialized") is None
    oar.job_of = {"o12": "12", "o13": "12", "o14": "12"}
    oar.ended = {"o14"}
    assert oar.cancel_command(["12"]) == ["oardel", "12", "13"]
    assert oar.describe("o13") == "job 13 of array 12"


# -- Grid Engine -----------------------------------------------------------------------
QACCT = """\
==============================================================
qname        all.q
hostname     localhost
jobname      minionize-pool
jobnumber    7
taskid       1
failed       0
exit_status  137
==============================================================
qname        all.q
jobnumber    7
taskid       2
failed       100 : assumedly after job
exit_status  0
"""


def test_qsub_submits_an_array_with_the_callers_environment(rundir: str) -> None:
    sge = SgeBackend(rundir, ["-l", "h_rt=600"])
    argv = sge.submit_command(2)
    # -cwd: the caller's directory, where its own modules import from (as sbatch, oarsub).
    assert argv[:8] == ["qsub", "-terse", "-V", "-cwd", "-S", "/bin/sh", "-t", "1-2"]
    assert argv[-3:] == ["-l", "h_rt=600", sge.script]
    assert sge.submitted("7.1-2:1\n", 2) == ("7", ["g7_1", "g7_2"])
    with pytest.raises(PoolError, match="qsub printed no job id"):
        sge.submitted("Your job was refused\n", 1)
    assert sge.describe("g7_2") == "array task 7.2"
    assert sge.cancel_command(["7"]) == ["qdel", "7"]


def test_qstat_and_qacct_of_the_pools_tasks() -> None:
    # The allocator's sample: jobs 2 and 3 are the pool's, 9 is not.
    assert parse_qstat(QSTAT, ["2", "3"]) == {
        "g2_1": (RUNNING, "state r"), "g2_2": (PENDING, "state qw"),
        "g3_1": (ENDED, "state Eqw (qstat -j 3 says why)")}
    assert parse_qstat("not xml", ["7"]) is None
    assert parse_qacct(QACCT) == {"g7_1": "exit status 137",
                                  "g7_2": "exit status 0, failed 100 : assumedly after job"}


def test_a_task_qstat_does_not_show_yet_stays_pending(rundir: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake_command(tmp_path, monkeypatch, "qstat", 'cat "$QSTAT_OUT"')
    empty = tmp_path / "empty.xml"
    empty.write_text("<job_info><queue_info/><job_info/></job_info>")
    monkeypatch.setenv("QSTAT_OUT", str(empty))
    sge = SgeBackend(rundir)
    sge.jobs, sge.job_of = ["2"], {"g2_1": "2"}
    sge.submitted("2.1-1:1", 1)
    assert sge.listing() == {"g2_1": (PENDING, "submitted")}
    full = tmp_path / "full.xml"
    full.write_text(QSTAT)
    monkeypatch.setenv("QSTAT_OUT", str(full))
    assert sge.listing() == {"g2_1": (RUNNING, "state r"), "g2_2": (PENDING, "state qw")}
    monkeypatch.setenv("QSTAT_OUT", str(empty))
    assert sge.listing() == {}  # seen once, listed no more: it ended
