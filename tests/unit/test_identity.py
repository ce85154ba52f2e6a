"""Reports say which batch job (and array task) a minion runs in."""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path

import pytest

from minionize.identity import job_scheduler, scheduler_jobs
from minionize.reporters.base import JOB_VARIABLES, MinionInfo

SLURM_ARRAY_TASK = {
    "SLURM_JOB_ID": "1238",
    "SLURM_ARRAY_JOB_ID": "1234",
    "SLURM_ARRAY_TASK_ID": "4",
    "SLURM_CPUS_ON_NODE": "2",
    "HOME": "/home/someone",
}

OAR_ARRAY_JOB = {
    "OAR_JOB_ID": "4242",
    "OAR_ARRAY_ID": "4240",
    "OAR_ARRAY_INDEX": "3",
    "OAR_NODEFILE": "/var/lib/oar/4242",
}


def test_job_variables_cover_slurm_and_oar() -> None:
    for name in (
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "OAR_JOB_ID",
        "OAR_ARRAY_INDEX",
    ):
        assert name in JOB_VARIABLES


def test_slurm_array_task() -> None:
    info = MinionInfo.current(SLURM_ARRAY_TASK)
    assert info.jobs == {
        "SLURM_JOB_ID": "1238",
        "SLURM_ARRAY_JOB_ID": "1234",
        "SLURM_ARRAY_TASK_ID": "4",
    }
    # squeue, scancel and the output file name (%A_%a) use the same label.
    assert info.job_label == "1234_4"


def test_slurm_job_without_array() -> None:
    info = MinionInfo.current({"SLURM_JOB_ID": "77"})
    assert info.jobs == {"SLURM_JOB_ID": "77"}
    assert info.job_label == "77"


def test_oar_array_job() -> None:
    info = MinionInfo.current(OAR_ARRAY_JOB)
    assert info.jobs == {"OAR_JOB_ID": "4242", "OAR_ARRAY_ID": "4240", "OAR_ARRAY_INDEX": "3"}
    # Every task of an OAR array has its own job id: oarstat and oardel name it.
    assert info.job_label == "4242"


def test_outside_a_scheduler() -> None:
    info = MinionInfo.current({"HOME": "/root", "SLURM_ARRAY_TASK_ID": ""})
    assert info.jobs == {}
    assert info.job_label == ""


def test_who_and_where() -> None:
    info = MinionInfo.current({})
    assert info.host == socket.gethostname()
    assert info.pid == os.getpid()
    assert info.minion_id and info.minion_id != MinionInfo.current({}).minion_id
    assert info.pod is None


def test_kubernetes_pod_name() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "minions-7d9f-abcde"}
    assert MinionInfo.current(env).pod == "minions-7d9f-abcde"


def test_the_report_record_carries_the_job_variables() -> None:
    info = MinionInfo.current({**SLURM_ARRAY_TASK, **OAR_ARRAY_JOB})
    record = json.loads(json.dumps(info.to_dict()))
    assert record["jobs"]["SLURM_ARRAY_JOB_ID"] == "1234"
    assert record["jobs"]["SLURM_ARRAY_TASK_ID"] == "4"
    assert record["jobs"]["SLURM_JOB_ID"] == "1238"
    assert record["jobs"]["OAR_JOB_ID"] == "4242"
    assert record["jobs"]["OAR_ARRAY_INDEX"] == "3"
    assert record["host"] == socket.gethostname()


def test_current_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "9")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert MinionInfo.current().job_label == "9_0"


def test_grid_engine_array_task() -> None:
    info = MinionInfo.current({"JOB_ID": "812", "SGE_TASK_ID": "3", "NSLOTS": "2"})
    assert info.jobs == {"JOB_ID": "812", "SGE_TASK_ID": "3"}
    # qstat lists it as job 812 task 3; qdel 812.3 deletes it.
    assert info.job_label == "812.3"


def test_grid_engine_job_without_array() -> None:
    info = MinionInfo.current({"JOB_ID": "813", "SGE_TASK_ID": "undefined"})
    assert info.jobs == {"JOB_ID": "813"}
    assert info.job_label == "813"


def test_a_job_id_outside_grid_engine_is_not_a_job() -> None:
    info = MinionInfo.current({"JOB_ID": "build-42", "HOME": "/root"})
    assert info.jobs == {}
    assert info.job_label == ""


# PBS Pro / OpenPBS and LSF: the variables as their manuals describe them, set by hand
# (no such scheduler runs in the tests).
PBS_ARRAY_TASK = {
    "PBS_JOBID": "1234[5].pbs-server.example.org",
    "PBS_ARRAY_INDEX": "5",
    "PBS_ARRAY_ID": "1234[].pbs-server.example.org",
    "PBS_ENVIRONMENT": "PBS_BATCH",
    "NCPUS": "4",
}
LSF_ARRAY_TASK = {"LSB_JOBID": "5678", "LSB_JOBINDEX": "3", "LSB_DJOB_NUMPROC": "2"}


def test_pbs_array_task() -> None:
    info = MinionInfo.current(PBS_ARRAY_TASK)
    assert info.jobs == {"PBS_JOBID": "1234[5].pbs-server.example.org", "PBS_ARRAY_INDEX": "5"}
    # qstat -t lists it as 1234[5].server; qdel 1234[5] deletes it.
    assert info.job_label == "1234[5]"


def test_pbs_job_without_array() -> None:
    info = MinionInfo.current({"PBS_JOBID": "1240.pbs-server", "PBS_ENVIRONMENT": "PBS_BATCH"})
    assert info.jobs == {"PBS_JOBID": "1240.pbs-server"}
    assert info.job_label == "1240"


def test_pbs_index_beside_a_job_id_without_brackets() -> None:
    info = MinionInfo.current({"PBS_JOBID": "1234.pbs-server", "PBS_ARRAY_INDEX": "2"})
    assert info.job_label == "1234[2]"


def test_lsf_array_task() -> None:
    info = MinionInfo.current(LSF_ARRAY_TASK)
    assert info.jobs == {"LSB_JOBID": "5678", "LSB_JOBINDEX": "3"}
    # bjobs shows 5678[3]; bkill "5678[3]" kills it.
    assert info.job_label == "5678[3]"


def test_lsf_job_without_array_has_index_0() -> None:
    info = MinionInfo.current({"LSB_JOBID": "5679", "LSB_JOBINDEX": "0"})
    assert info.jobs == {"LSB_JOBID": "5679"}
    assert info.job_label == "5679"


def test_an_array_index_outside_its_schedulers_job_is_not_read() -> None:
    info = MinionInfo.current({"PBS_ARRAY_INDEX": "5", "LSB_JOBINDEX": "3", "SLURM_JOB_ID": "9"})
    assert info.jobs == {"SLURM_JOB_ID": "9"}
    assert info.job_label == "9"
    assert MinionInfo.current({"PBS_ARRAY_INDEX": "5", "LSB_JOBINDEX": "3"}).jobs == {}


def test_a_pbs_job_with_stray_grid_engine_and_lsf_variables() -> None:
    # JOB_ID is not Grid Engine's without SGE_TASK_ID, LSB_JOBINDEX not LSF's without LSB_JOBID.
    info = MinionInfo.current({**PBS_ARRAY_TASK, "JOB_ID": "build-7", "LSB_JOBINDEX": "9"})
    assert info.jobs == {"PBS_JOBID": "1234[5].pbs-server.example.org", "PBS_ARRAY_INDEX": "5"}
    assert info.job_label == "1234[5]"


def test_the_job_scheduler_is_the_first_whose_marker_is_set() -> None:
    assert job_scheduler({}) == ""
    assert job_scheduler({"JOB_ID": "3"}) == ""
    assert job_scheduler({"JOB_ID": "3", "SGE_TASK_ID": "undefined"}) == "sge"
    assert job_scheduler(PBS_ARRAY_TASK) == "pbs"
    assert job_scheduler(LSF_ARRAY_TASK) == "lsf"
    # A job submitted from inside another carries the other's variables: one order decides,
    # the same for the label and for MINION_CONCURRENCY=auto.
    both = {**LSF_ARRAY_TASK, **PBS_ARRAY_TASK}
    assert job_scheduler(both) == "pbs" and MinionInfo.current(both).job_label == "1234[5]"
    assert job_scheduler({**PBS_ARRAY_TASK, "SLURM_JOB_ID": "8"}) == "slurm"


@pytest.mark.parametrize(
    ("env", "label"), [(PBS_ARRAY_TASK, "1234[5]"), (LSF_ARRAY_TASK, "5678[3]")]
)
def test_pbs_and_lsf_identity_reaches_reports_status_and_mtop(
    tmp_path: Path, env: dict[str, str], label: str
) -> None:
    from rich.console import Console

    from minionize.reporters.json import JsonReporter
    from minionize.status import read_status
    from minionize.status.text import format_status
    from minionize.status.tui import render

    reporter = JsonReporter(tmp_path)
    reporter.start(MinionInfo.current(env))
    assert reporter.path is not None and label.replace("[", "_").replace("]", "_") in reporter.path.name
    status = read_status(tmp_path)
    assert [m.job for m in status.minions] == [label]
    assert status.to_json()["minions"][0]["jobs"] == scheduler_jobs(env)
    assert label in format_status(status)
    out = io.StringIO()
    Console(file=out, width=160).print(render(status, max_rows=20))
    assert label in out.getvalue()
    reporter.stop(0)
