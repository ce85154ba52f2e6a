"""MINION_CONCURRENCY=auto: the CPUs the batch scheduler granted, else the affinity mask."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from minionize.config import Settings, available_cpus, parse_concurrency
from minionize.errors import ConfigError

AFFINITY = len(os.sched_getaffinity(0))


def nodefile(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "nodefile"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_slurm_cpus_per_task_wins() -> None:
    env = {"SLURM_CPUS_PER_TASK": "2", "SLURM_CPUS_ON_NODE": "8"}
    assert available_cpus(env) == 2


def test_slurm_cpus_on_node_without_cpus_per_task() -> None:
    assert available_cpus({"SLURM_CPUS_ON_NODE": "6"}) == 6


@pytest.mark.parametrize("value", ["", "  ", "0", "-1", "two", "2(x3)"])
def test_unusable_slurm_values_are_ignored(value: str) -> None:
    assert available_cpus({"SLURM_CPUS_PER_TASK": value, "SLURM_CPUS_ON_NODE": "3"}) == 3
    assert available_cpus({"SLURM_CPUS_ON_NODE": value}) == AFFINITY


def test_slurm_values_with_spaces_are_read() -> None:
    assert available_cpus({"SLURM_CPUS_ON_NODE": " 4\n"}) == 4


def test_oar_nodefile_counts_the_lines_naming_this_host(tmp_path: Path) -> None:
    host = socket.gethostname()
    # OAR writes one line per granted core, for every host of the job.
    lines = [host, host, host, "other-node-7", "other-node-7"]
    assert available_cpus({"OAR_NODEFILE": nodefile(tmp_path, lines)}) == 3


def test_oar_nodefile_with_fully_qualified_names(tmp_path: Path) -> None:
    short = socket.gethostname().split(".")[0]
    lines = [f"{short}.grenoble.grid5000.fr"] * 4 + ["dahu-2.grenoble.grid5000.fr"] * 4
    assert available_cpus({"OAR_NODEFILE": nodefile(tmp_path, lines)}) == 4


def test_oar_nodefile_naming_other_hosts_only_falls_back_to_affinity(tmp_path: Path) -> None:
    lines = ["other-node-1", "other-node-2"]
    assert available_cpus({"OAR_NODEFILE": nodefile(tmp_path, lines)}) == AFFINITY


def test_missing_oar_nodefile_falls_back_to_affinity(tmp_path: Path) -> None:
    assert available_cpus({"OAR_NODEFILE": str(tmp_path / "gone")}) == AFFINITY


def test_slurm_wins_over_oar(tmp_path: Path) -> None:
    env = {
        "SLURM_CPUS_ON_NODE": "5",
        "OAR_NODEFILE": nodefile(tmp_path, [socket.gethostname()] * 2),
    }
    assert available_cpus(env) == 5


def test_outside_a_scheduler_the_affinity_mask_counts() -> None:
    assert available_cpus({}) == AFFINITY


def test_affinity_restricted_by_taskset() -> None:
    """A job confined to fewer CPUs (cgroup cpuset, taskset) gets that many."""
    before = os.sched_getaffinity(0)
    one = {min(before)}
    os.sched_setaffinity(0, one)
    try:
        assert available_cpus({}) == 1
    finally:
        os.sched_setaffinity(0, before)


def test_concurrency_auto_in_settings() -> None:
    settings = Settings.from_env({"MINION_CONCURRENCY": "auto", "SLURM_CPUS_PER_TASK": "2"})
    assert settings.concurrency == 2
    settings = Settings.from_env({"MINION_CONCURRENCY": "AUTO", "SLURM_CPUS_ON_NODE": "3"})
    assert settings.concurrency == 3


def test_concurrency_flag_auto_reads_the_same_environment() -> None:
    settings = Settings.from_env({"SLURM_CPUS_ON_NODE": "4"}, concurrency="auto")
    assert settings.concurrency == 4


def test_concurrency_numbers_and_errors() -> None:
    assert parse_concurrency(None) == 1
    assert parse_concurrency("3") == 3
    with pytest.raises(ConfigError, match="MINION_CONCURRENCY"):
        parse_concurrency("0")
    with pytest.raises(ConfigError, match="MINION_CONCURRENCY"):
        parse_concurrency("many")


def test_grid_engine_slots() -> None:
    # qsub -pe smp 3: Grid Engine sets NSLOTS to the slots granted (1 without -pe).
    assert available_cpus({"NSLOTS": "3", "JOB_ID": "7", "SGE_TASK_ID": "undefined"}) == 3
    assert available_cpus({"NSLOTS": "0"}) == AFFINITY


def test_pbs_ncpus() -> None:
    # qsub -l select=1:ncpus=4: PBS sets NCPUS to the CPUs of the job's chunk on this host.
    assert available_cpus({"NCPUS": "4", "PBS_JOBID": "1234[2].server"}) == 4
    assert available_cpus({"NCPUS": "0", "PBS_JOBID": "1234.server"}) == AFFINITY


def test_lsf_slots() -> None:
    # bsub -n 3: LSF sets LSB_DJOB_NUMPROC to the slots granted.
    assert available_cpus({"LSB_DJOB_NUMPROC": "3", "LSB_JOBID": "56", "LSB_JOBINDEX": "0"}) == 3


@pytest.mark.parametrize(
    "stray", [{"NCPUS": "16"}, {"LSB_DJOB_NUMPROC": "16"}, {"NSLOTS": "16"}]
)
def test_a_schedulers_variable_outside_its_job_is_not_read(stray: dict[str, str]) -> None:
    # NCPUS and NSLOTS are names other programs set too.
    assert available_cpus(stray) == AFFINITY


def test_in_a_job_only_its_schedulers_variables_count(tmp_path: Path) -> None:
    oar = nodefile(tmp_path, [socket.gethostname()] * 7)
    strays = {"SLURM_CPUS_PER_TASK": "11", "SLURM_CPUS_ON_NODE": "12", "NSLOTS": "13",
              "OAR_NODEFILE": oar, "NCPUS": "14", "LSB_DJOB_NUMPROC": "15"}
    pbs = {"PBS_JOBID": "1234[5].server", "PBS_ARRAY_INDEX": "5"}
    lsf = {"LSB_JOBID": "56", "LSB_JOBINDEX": "2"}
    sge = {"JOB_ID": "812", "SGE_TASK_ID": "3"}
    assert available_cpus({**strays, **pbs}) == 14
    assert available_cpus({**strays, **lsf}) == 15
    assert available_cpus({**strays, **sge}) == 13
    assert available_cpus({**strays, "OAR_JOB_ID": "4242"}) == 7
    assert available_cpus({**strays, "SLURM_JOB_ID": "9"}) == 11
    # A PBS job whose own variable is missing falls back to the kernel, not to LSF's.
    assert available_cpus({"LSB_DJOB_NUMPROC": "15", "SLURM_CPUS_ON_NODE": "12", **pbs}) == AFFINITY
    # A job submitted from inside another: the order of identity.JOB_MARKERS decides.
    assert available_cpus({**strays, **pbs, **lsf}) == 14


def test_concurrency_auto_in_pbs_and_lsf_jobs() -> None:
    pbs = {"MINION_CONCURRENCY": "auto", "PBS_JOBID": "7.server", "NCPUS": "3"}
    assert Settings.from_env(pbs).concurrency == 3
    lsf = {"MINION_CONCURRENCY": "auto", "LSB_JOBID": "8", "LSB_DJOB_NUMPROC": "2"}
    assert Settings.from_env(lsf).concurrency == 2
