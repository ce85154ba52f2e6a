"""A run directory kept because an error ended the pool is there for a post-mortem, with
local workers (chunks in the caller's memory, over the socket) as with SLURM's files:
``minion-queue`` lists the lost chunk as a dead letter, and the worker minions' reports
say they ended (``minion-status``: none alive)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
from pathlib import Path

import pytest

from minionize.pool import Pool, TaskLost
from tests.services import script


def crash(x: int) -> int:
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # its function process crashes
    return x


def _run(*argv: str) -> str:
    out = subprocess.run([script(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("start", ["fork", "exec"])
def test_a_pool_ended_by_task_lost_keeps_its_dead_letter_and_ended_reports(tmp_path: Path,
                                                                            start: str) -> None:
    with pytest.raises(TaskLost) as lost, Pool(2, workdir=str(tmp_path), start=start) as pool:
        assert pool._run.channel is not None  # the fast path: chunks over the socket
        pool.map(crash, range(8), chunksize=2)
    (rundir,) = glob.glob(str(tmp_path / "minionize-pool-*"))
    assert str(lost.value).endswith(f"run directory (kept if this error ends the pool): {rundir}")

    dead = _run("minion-queue", "--queue-dir", os.path.join(rundir, "queue"), "list", "dead")
    (line,) = dead.splitlines()
    assert '{"batch": 0, "call": 0, "chunk": 2, "offset": 40, "size": 20, "star": false, "start": 4}' in line
    assert line.endswith("  attempts=3  killed by SIGKILL")
    assert _run("minion-queue", "--queue-dir", os.path.join(rundir, "queue"), "list", "todo") == ""

    status = _run("minion-status", os.path.join(rundir, "report")).splitlines()
    assert status[0] == f"{rundir}/report: 2 minions: 0 alive, 2 finished, 0 lost"
    assert status[1].split() == ["done", "3", "failed", "attempts", "3", "dead-lettered", "1",
                                 "running", "now", "0"]


def test_a_pool_that_ends_well_leaves_nothing(tmp_path: Path) -> None:
    with Pool(2, workdir=str(tmp_path)) as pool, pytest.raises(TaskLost):
        pool.map(crash, range(8), chunksize=2)
    assert os.listdir(tmp_path) == []
