"""``minion-alloc`` on a real single-node Grid Engine: the SLURM tests' working directory
(:mod:`tests.integration.test_alloc_slurm`), with ``examples/sge/minions.sge`` submitted
by qsub and the allocator run in the cluster's namespace, as on a login node."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_alloc_slurm import Workdir
from tests.services.sge import SgeCluster, sge  # noqa: F401 - the fixture

pytestmark = pytest.mark.service("sge")

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "sge" / "minions.sge"


@pytest.fixture
def work(sge: SgeCluster, tmp_path: Path) -> Workdir:  # noqa: F811 - the fixture
    return Workdir(sge, tmp_path, SCRIPT, wrap=tuple(sge.namespace()))


def test_it_drains_a_queue_each_param_run_once(work: Workdir) -> None:
    work.fill(60)
    result = work.alloc("--scheduler", "sge", "--max-minions", "3", "--tasks-per-minion", "10")
    assert result.returncode == 0, result.stderr
    assert "exit (queue drained and its minions finished)" in result.stderr
    runs = work.runs()
    assert sorted(runs, key=int) == [str(n) for n in range(60)]
    assert set(runs.values()) == {1}
    assert work.submitted() == 3, result.stderr


def test_a_broken_job_script_stops_it_with_its_output(work: Workdir) -> None:
    broken = work.dir / "broken.sge"
    broken.write_text("#!/bin/bash\n#$ -S /bin/bash\necho 'a.out: no such file' >&2\nexit 7\n")
    work.script = broken
    work.fill(5)
    result = work.alloc("--scheduler", "sge", "--max-minions", "1", "--max-broken", "2")
    assert result.returncode == 3, result.stderr
    assert "2 jobs in a row ended without starting a task" in result.stderr
    assert "no minion report" in result.stderr and "a.out: no such file" in result.stderr
    assert work.submitted() == 2


def test_nothing_is_submitted_for_a_drained_queue(work: Workdir) -> None:
    work.fill(3)
    assert work.command("minionize", str(work.task)).returncode == 0
    result = work.alloc("--scheduler", "sge", "--max-minions", "2")
    assert result.returncode == 0, result.stderr
    assert "backlog 0, in flight 0: exit" in result.stderr and work.submitted() == 0
