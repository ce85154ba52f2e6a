"""Grid Engine array jobs of minions on a real single-node Son of Grid Engine.

Every job here is ``examples/sge/minions.sge``, the script users submit, with the test's
settings passed through the environment (the script's ``-V``) and command-line options
that add to its ``#$`` lines. Each param runs ``task.sh``, which logs ``start``/``end``
lines with the array task, the attempt and the time, so the tests check what a user
would: every param done, exactly once when nothing is killed; the params of a deleted
array task finished by the others without an attempt counted.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import test_slurm_array as slurm_array
from tests.integration.test_slurm_array import (
    assert_all_done,
    done_params,
    max_overlap,
    wait_running,
)
from tests.services import wait_for
from tests.services.sge import SgeCluster, SgeError, sge  # noqa: F401 - the fixture

pytestmark = pytest.mark.service("sge")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "sge" / "minions.sge"
BIN = Path(sys.executable).parent

TASK = slurm_array.TASK.replace("SLURM_ARRAY_TASK_ID", "SGE_TASK_ID")


class Sweep(slurm_array.Sweep):
    """The SLURM tests' working directory (a sweep queue, reports, the task), with jobs
    submitted by qsub to ``cluster``: its ``env`` and ``wait_finished`` are the ones the
    directory uses."""

    def __init__(self, cluster: SgeCluster, directory: Path) -> None:
        super().__init__(cluster, directory)  # type: ignore[arg-type]
        self.cluster = cluster
        self.task.write_text(TASK)

    def submit(self, *options: str, **env: str) -> str:
        return self.cluster.qsub(
            SCRIPT, args=[str(self.task)], options=options, cwd=self.dir, env={**self.env, **env}
        )

    def minions(self) -> dict[str, dict[str, Any]]:
        """minion-status rows by job label (``1234.5``, as qstat and qdel name it)."""
        return {m["job"]: m for m in self.status()["minions"]}


@pytest.fixture
def sweep(sge: SgeCluster, tmp_path: Path) -> Iterator[Sweep]:  # noqa: F811
    yield Sweep(sge, tmp_path)
    # Leave no job of this test behind for the next one.
    try:
        sge.run(["qdel", "-f", "-u", "*"], timeout=10)
    except SgeError:
        pass  # none left
    wait_for(lambda: not sge.jobs(), 30, "the test's jobs to end", every=0.2)


# -- the tests ---------------------------------------------------------------------------
def test_array_of_four_minions_drains_300_params_exactly_once(sweep: Sweep) -> None:
    sweep.fill(300)
    started = time.monotonic()
    job = sweep.submit("-t", "1-4")
    sweep.wait_finished(job, 120)
    elapsed = time.monotonic() - started

    done = done_params(sweep.events())
    assert len(done) == 300 and set(done.values()) == {1}, "a param ran twice or never"
    status = assert_all_done(sweep, 300)
    assert status["done"] == 300

    # minion-status shows one row per array task, named as qstat and qdel name it.
    minions = sweep.minions()
    assert set(minions) == {f"{job}.{i}" for i in range(1, 5)}, status["minions"]
    for index in range(1, 5):
        minion = minions[f"{job}.{index}"]
        assert minion["jobs"] == {"JOB_ID": job, "SGE_TASK_ID": str(index)}
        assert minion["state"] == "finished" and minion["exit_code"] == 0
    assert sum(m["done"] for m in minions.values()) == 300
    by_task = Counter(e.array_task for e in sweep.events() if e.kind == "end")
    print(f"300 params, 4 array tasks: {elapsed:.1f}s from qsub to the end; {dict(by_task)}")


def test_qdel_of_an_array_task_gives_its_params_back_without_an_attempt(sweep: Sweep) -> None:
    """The script's ``-notify``: qdel sends SIGUSR2, the script makes it a SIGTERM, the
    minion stops its tasks and gives their params back before the SIGKILL that follows
    the queue's notify time."""
    sweep.fill(24)
    job = sweep.submit("-t", "1-4", TASK_SECONDS="1.5", MINION_GRACE_PERIOD="1")
    held = wait_running(sweep, "2")
    deleted = time.time()
    sweep.cluster.run(["qdel", job, "-t", "2"])
    sweep.wait_finished(job, 90)

    assert_all_done(sweep, 24)
    events = sweep.events()
    for param in held:
        rerun = [e for e in events if e.param == param and e.kind == "start" and e.time > deleted]
        assert rerun and rerun[0].array_task != "2", rerun
        assert rerun[0].time - deleted < 60, "the param waited for its lease"
        # A stop is not a failure: the attempt cut short is not counted.
        assert rerun[0].attempt == 1, rerun[0]
        print(f"param {param}: stopped on task 2, running again on task "
              f"{rerun[0].array_task} {rerun[0].time - deleted:.2f}s after qdel")
    minion = sweep.minions()[f"{job}.2"]
    assert minion["state"] == "finished" and minion["exit_code"] == 0, (minion, sweep.outputs())
    assert minion["released"] >= len(held), minion


def test_concurrency_auto_uses_the_slots_granted(sweep: Sweep) -> None:
    sweep.fill(8)
    job = sweep.submit("-t", "1", "-pe", "smp", "2", TASK_SECONDS="0.6")
    sweep.wait_finished(job, 60)
    assert_all_done(sweep, 8)

    peak = max_overlap(sweep.events())
    assert peak == 2, f"{peak} tasks ran at once with -pe smp 2 (NSLOTS=2)"
    minion = sweep.minions()[f"{job}.1"]
    assert minion["jobs"] == {"JOB_ID": job, "SGE_TASK_ID": "1"}
