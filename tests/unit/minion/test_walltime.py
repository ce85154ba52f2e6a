"""Where a minion reads its allocation's end: the user, SLURM, OAR, Grid Engine."""

from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path

import pytest

from minionize.config import Settings
from minionize.errors import ConfigError
from minionize.minion.walltime import Runner, allocation_end, parse_h_rt, parse_slurm_left

NOW = 1_000_000.0


def answer(text: str, seen: list[list[str]] | None = None) -> Runner:
    def run(argv: list[str]) -> str:
        if seen is not None:
            seen.append(argv)
        return text
    return run


def never(argv: list[str]) -> str:
    raise AssertionError(f"no command expected: {argv}")


def test_the_user_walltime_counts_from_the_start_and_wins() -> None:
    end = allocation_end({"SLURM_JOB_ID": "7"}, 90.0, NOW, never)
    assert end is not None and end.at == NOW + 90 and end.source == "MINION_WALLTIME"
    assert allocation_end({"SLURM_JOB_ID": "7"}, math.inf, NOW, never) is None
    assert allocation_end({}, None, NOW, never) is None


def test_settings_read_the_walltime_and_the_expected_duration() -> None:
    assert Settings.from_env({}).walltime is None
    assert Settings.from_env({"MINION_WALLTIME": "1h30m"}).walltime == 5400
    assert Settings.from_env({"MINION_WALLTIME": "none"}).walltime == math.inf
    assert Settings.from_env({"MINION_EXPECTED_DURATION": "1m"}).expected_duration == 60
    assert Settings.from_env({}).expected_duration is None
    with pytest.raises(ConfigError, match="MINION_WALLTIME"):
        Settings.from_env({"MINION_WALLTIME": "soon"})
    with pytest.raises(ConfigError, match="MINION_EXPECTED_DURATION"):
        Settings.from_env({"MINION_EXPECTED_DURATION": "0"})


@pytest.mark.parametrize("text, seconds", [
    ("0:42", 42), ("59:59", 3599), ("1:00:00", 3600), ("12:03:04", 43384),
    ("2-01:00:00", 176400), ("1-02", 93600), ("1-02:03", 93780), ("17", 17),
])
def test_squeue_time_left(text: str, seconds: float) -> None:
    assert parse_slurm_left(text + "\n") == seconds


def test_squeue_without_a_limit_or_with_nonsense() -> None:
    assert parse_slurm_left("UNLIMITED") is None
    assert parse_slurm_left("NOT_SET") is None
    with pytest.raises(ValueError, match="squeue"):
        parse_slurm_left("soon")


def test_slurm_asks_squeue_once_for_the_time_left() -> None:
    seen: list[list[str]] = []
    end = allocation_end({"SLURM_JOB_ID": "12"}, None, NOW, answer("1:00\n", seen))
    assert seen == [["squeue", "-h", "-j", "12", "-o", "%L"]]
    assert end is not None and "SLURM job 12" in end.source
    assert end.at == pytest.approx(time.time() + 60, abs=2)


def test_an_array_task_asks_for_itself_not_for_the_array() -> None:
    # The first task of an array has the array's job id, which squeue takes for them all.
    seen: list[list[str]] = []
    env = {"SLURM_JOB_ID": "1", "SLURM_ARRAY_JOB_ID": "1", "SLURM_ARRAY_TASK_ID": "0"}
    end = allocation_end(env, None, NOW, answer("0:59\n", seen))
    assert seen == [["squeue", "-h", "-j", "1_0", "-o", "%L"]]
    assert end is not None and "SLURM job 1_0" in end.source


def test_slurm_job_end_time_needs_no_query() -> None:
    env = {"SLURM_JOB_ID": "12", "SLURM_JOB_END_TIME": "1000090"}
    end = allocation_end(env, None, NOW, never)
    assert end is not None and end.at == 1_000_090


def test_a_failing_scheduler_command_means_no_end(caplog: pytest.LogCaptureFixture) -> None:
    def fails(argv: list[str]) -> str:
        raise subprocess.CalledProcessError(1, argv, "", "slurm_load_jobs error: Invalid job id")

    assert allocation_end({"SLURM_JOB_ID": "12"}, None, NOW, fails) is None
    assert "Invalid job id" in caplog.text and "walltime" in caplog.text
    assert allocation_end({"SLURM_JOB_ID": "12"}, None, NOW, answer("UNLIMITED")) is None


def test_oar_counts_its_walltime_from_the_node_file(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    nodes.write_text("node1\n")
    os.utime(nodes, (NOW - 30, NOW - 30))
    env = {"OAR_JOB_ID": "5", "OAR_JOB_WALLTIME_SECONDS": "120", "OAR_NODEFILE": str(nodes)}
    end = allocation_end(env, None, NOW, never)
    assert end is not None and end.at == NOW + 90 and "OAR job 5" in end.source
    env["OAR_NODEFILE"] = str(tmp_path / "gone")
    end = allocation_end(env, None, NOW, never)
    assert end is not None and end.at == NOW + 120 and "minion's start" in end.source
    env["OAR_JOB_WALLTIME_SECONDS"] = "2h"
    assert allocation_end(env, None, NOW, never) is None


QSTAT = """\
job_number:                 2
hard resource_list:         h_vmem=1G,h_rt=90
notify:                     FALSE
"""


def test_grid_engine_reads_h_rt_from_qstat_and_the_start_from_the_spool(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("job_id=2\n")
    os.utime(tmp_path / "config", (NOW, NOW))
    seen: list[list[str]] = []
    env = {"JOB_ID": "2", "SGE_TASK_ID": "undefined", "SGE_JOB_SPOOL_DIR": str(tmp_path)}
    end = allocation_end(env, None, NOW + 50, answer(QSTAT, seen))
    assert seen == [["qstat", "-j", "2"]]
    assert end is not None and end.at == NOW + 90 and "Grid Engine job 2" in end.source


def test_grid_engine_without_h_rt_or_outside_grid_engine() -> None:
    env = {"JOB_ID": "2", "SGE_TASK_ID": "1"}
    assert allocation_end(env, None, NOW, answer("job_number: 2\n")) is None
    assert allocation_end({"JOB_ID": "2"}, None, NOW, never) is None  # not Grid Engine's
    assert parse_h_rt("hard resource_list:         h_rt=0:1:30") == 90
    assert parse_h_rt("hard resource_list:         s_rt=30,h_rt=3600\n") == 3600
