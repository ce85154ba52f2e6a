"""``minion-alloc --scheduler oar`` on a real single-node OAR 2.5: the SLURM tests' working
directory (:mod:`tests.integration.test_alloc_slurm`), with ``examples/oar/minions.oar``
submitted by oarsub and the allocator run in the cluster's namespace, as on a login node.
OAR gives a job none of the submitting environment: the allocator writes what the
minions need into the script it submits; the task's own setting is in ``.env``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_alloc_slurm import Workdir
from tests.services.oar import OarCluster, oar  # noqa: F401 - the fixture

pytestmark = pytest.mark.service("oar")

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "oar" / "minions.oar"


@pytest.fixture
def work(oar: OarCluster, tmp_path: Path) -> Iterator[Workdir]:  # noqa: F811 - the fixture
    # nsenter --mount starts in the namespace holder's directory unless told.
    enter = oar.namespace.prefix()
    work = Workdir(oar, tmp_path, SCRIPT, wrap=(*enter[:-1], f"--wd={tmp_path}", "--"))
    (tmp_path / ".env").write_text(f"TASK_LOG={work.log}\n")
    yield work
    oar.delete_all()  # leave no job of this test behind for the next one


def test_it_drains_100_params_each_run_once(work: Workdir) -> None:
    work.fill(100)
    result = work.alloc("--scheduler", "oar", "--max-minions", "4", "--tasks-per-minion", "25")
    assert result.returncode == 0, result.stderr
    assert "exit (queue drained and its minions finished)" in result.stderr
    runs = work.runs()
    assert sorted(runs, key=int) == [str(n) for n in range(100)]
    assert set(runs.values()) == {1}
    assert work.submitted() == 4, result.stderr  # one array: the backlog never needed more
    assert work.queue()["done"] == 100


def test_nothing_is_submitted_for_a_drained_queue(work: Workdir) -> None:
    work.fill(3)
    assert work.command("minionize", str(work.task)).returncode == 0
    result = work.alloc("--scheduler", "oar", "--max-minions", "2")
    assert result.returncode == 0, result.stderr
    assert "backlog 0, in flight 0: exit" in result.stderr and work.submitted() == 0
    assert "oarsub" not in result.stderr


def test_a_broken_job_script_stops_it_with_its_output(work: Workdir) -> None:
    broken = work.dir / "broken.oar"
    broken.write_text("#!/bin/bash\n#OAR -l core=1,walltime=0:05:00\n"
                      "echo 'a.out: no such file' >&2\nexit 7\n")
    broken.chmod(0o755)
    work.script = broken
    work.fill(5)
    result = work.alloc("--scheduler", "oar", "--max-minions", "1", "--max-broken", "2")
    assert result.returncode == 3, result.stderr
    assert "2 jobs in a row ended without starting a task" in result.stderr
    assert "Terminated, exit code 7, no minion report" in result.stderr
    assert "a.out: no such file" in result.stderr
    assert work.submitted() == 2


def test_an_impossible_request_stops_it_with_oarsubs_words(work: Workdir) -> None:
    work.fill(5)  # three hosts, on a cluster of one
    result = work.alloc("--scheduler", "oar", "--max-minions", "1", "--max-broken", "2",
                        "--submit-option=-l", "--submit-option=host=3")
    assert result.returncode == 3, result.stderr
    assert "the submission failed: oarsub: There are not enough resources for your " \
        "request" in result.stderr, result.stderr
    assert work.submitted() == 0
