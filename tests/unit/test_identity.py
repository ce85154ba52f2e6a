"""Reports say which batch job (and array task) a minion runs in."""

from __future__ import annotations

import json
import os
import socket

import pytest

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
