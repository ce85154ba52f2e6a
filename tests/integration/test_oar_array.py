"""OAR array jobs of minions on a real single-node OAR 2.5 cluster.

Every job here is ``examples/oar/minions.oar``, the script users submit
(``oarsub --array N -S "minions.oar task.sh"``: besteffort, idempotent,
``--checkpoint 120 --signal 15``). OAR gives a job none of the submitting environment,
so the test's settings go where a user puts them: the ``.env`` file beside the queue.
Each param runs ``task.sh``, which logs ``start``/``end`` lines with the OAR job id,
the attempt and the time, so the tests check what a user would: every param done,
exactly once; the params of a checkpointed minion given back without an attempt
counted, and the idempotent jobs resubmitted by OAR to finish the queue.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import test_slurm_array as slurm_array
from tests.integration.test_slurm_array import assert_all_done, done_params
from tests.services import wait_for
from tests.services.oar import OarCluster, oar  # noqa: F401 - the fixture

pytestmark = pytest.mark.service("oar")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "oar" / "minions.oar"
#: What the script prints when the checkpoint signal stopped its minion.
RESUBMIT = "asking OAR to resubmit (exit 99)"

#: The SLURM tests' task, logging the OAR job id; while the file ``$HOLD`` exists each
#: param takes 2 s (the queue lasts as long as the test needs it to).
TASK = slurm_array.TASK.replace("SLURM_ARRAY_TASK_ID", "OAR_JOB_ID").replace(
    'if [ -n "${TASK_SECONDS:-}" ]; then sleep "$TASK_SECONDS"; fi',
    'if [ -n "${HOLD:-}" ] && [ -e "$HOLD" ]; then sleep 2; fi',
)


class Sweep(slurm_array.Sweep):
    """The SLURM tests' working directory (a sweep queue, reports, the task), with jobs
    submitted by oarsub to ``cluster`` and their settings in ``.env``."""

    def __init__(self, cluster: OarCluster, directory: Path) -> None:
        super().__init__(cluster, directory)  # type: ignore[arg-type]
        self.cluster = cluster
        self.task.write_text(TASK)

    def submit(self, count: int, *options: str, **settings: str) -> list[str]:
        """``oarsub --array COUNT OPTIONS -S "minions.oar task.sh"``; the job ids."""
        lines = {"TASK_LOG": str(self.log), **settings}
        (self.dir / ".env").write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        return self.cluster.oarsub(
            ["--array", str(count), *options, "-S", f"{SCRIPT} {self.task}"], cwd=self.dir
        )

    def minions(self) -> dict[str, dict[str, Any]]:
        """minion-status rows by OAR job id."""
        return {m["job"]: m for m in self.status()["minions"]}

    def output(self, job: str) -> str:
        path = self.dir / f"minion.{job}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_finished(self, job: str, timeout: float) -> None:
        try:
            self.cluster.wait_idle(timeout)
        except AssertionError:
            raise AssertionError(f"jobs left: {self.cluster.jobs()}\n{self.outputs()}") from None


@pytest.fixture
def sweep(oar: OarCluster, tmp_path: Path) -> Iterator[Sweep]:  # noqa: F811
    yield Sweep(oar, tmp_path)
    oar.delete_all()  # leave no job of this test behind for the next one


def first_starts(sweep: Sweep) -> dict[str, float]:
    """When each OAR job started its first param."""
    starts: dict[str, float] = {}
    for e in sweep.events():
        if e.kind == "start":
            starts.setdefault(e.array_task, e.time)
    return starts


# -- the tests ---------------------------------------------------------------------------
def test_array_of_four_minions_drains_300_params_exactly_once(sweep: Sweep) -> None:
    sweep.fill(300)
    started = time.monotonic()
    jobs = sweep.submit(4)
    assert len(jobs) == 4, jobs
    sweep.wait_finished(jobs[0], 150)
    elapsed = time.monotonic() - started

    done = done_params(sweep.events())
    assert len(done) == 300 and set(done.values()) == {1}, "a param ran twice or never"
    status = assert_all_done(sweep, 300)
    assert status["done"] == 300

    # minion-status shows one row per sub-job, named by its OAR_JOB_ID.
    minions = sweep.minions()
    assert set(minions) == set(jobs), status["minions"]
    array_id = minions[jobs[0]]["jobs"]["OAR_ARRAY_ID"]
    for index, job in enumerate(jobs, 1):
        minion = minions[job]
        assert minion["jobs"] == {
            "OAR_JOB_ID": job, "OAR_ARRAY_ID": array_id, "OAR_ARRAY_INDEX": str(index)
        }, minion
        assert minion["state"] == "finished" and minion["exit_code"] == 0
    assert sum(m["done"] for m in minions.values()) == 300
    by_job = Counter(e.array_task for e in sweep.events() if e.kind == "end")
    print(f"300 params, 4 sub-jobs: {elapsed:.1f}s from oarsub to the end; {dict(by_job)}")


def test_checkpointed_besteffort_minions_give_params_back_and_oar_resubmits_them(
    sweep: Sweep,
) -> None:
    """The besteffort path of the shipped script, with both checkpoint signals:

    * a normal job asking for 3 of the 4 cores arrives: OAR sends the checkpoint signal
      (``--signal 15``: SIGTERM) to 3 besteffort minions, which give their params back
      and exit 99;
    * ``oardel -c`` sends it to the fourth.

    OAR resubmits an idempotent job that exits 99 after running more than 60 s
    (NodeChangeState), so the test lets the minions run that long first. The
    resubmitted jobs finish the queue once the normal job is done; every param is
    done once, and no stopped param counts an attempt.
    """
    count = 200
    hold = sweep.dir / "hold"
    hold.touch()
    sweep.fill(count)
    originals = sweep.submit(4, HOLD=str(hold), MINION_GRACE_PERIOD="1")
    wait_for(lambda: set(first_starts(sweep)) >= set(originals), 90, "the 4 minions to run")
    # More than 60 s of running, as OAR's start and stop times count it.
    time.sleep(max(0.0, max(first_starts(sweep).values()) + 63 - time.time()))
    assert set(sweep.cluster.jobs()) == set(originals), "the queue ran out too soon"

    normal = sweep.cluster.oarsub(
        ["-l", "core=3,walltime=0:05:00", f"sleep 3; touch {sweep.dir / 'normal-ran'}"],
        cwd=sweep.dir,
    )[0]
    signalled = time.time()

    def stopped_jobs() -> list[str]:
        return [j for j in originals if RESUBMIT in sweep.output(j)]

    wait_for(lambda: len(stopped_jobs()) == 3, 90, "3 minions to make room for the normal job")
    preempted = time.time() - signalled
    (last,) = set(originals) - set(stopped_jobs())
    sweep.cluster.run(["oardel", "-c", last])
    wait_for(lambda: len(stopped_jobs()) == 4, 90, f"job {last} to stop on oardel -c")
    hold.unlink()  # the rest of the queue goes fast
    sweep.wait_finished(normal, 180)

    assert (sweep.dir / "normal-ran").exists()
    assert_all_done(sweep, count)
    events = sweep.events()
    done = done_params(events)
    assert set(done.values()) == {1}, "a param ran twice"
    counted = [e for e in events if e.kind == "start" and e.attempt != 1]
    assert not counted, f"a stopped param counted an attempt: {counted[:5]}"
    minions = sweep.minions()
    for job in originals:
        assert RESUBMIT in sweep.output(job), sweep.output(job)
        minion = minions[job]
        assert minion["state"] == "finished" and minion["exit_code"] == 0, minion
    # Stopped mid-task: the params given back ran again later, on a resubmitted job.
    stopped = {e.param for e in events if e.kind == "start" and e.array_task in originals
               and e.time < signalled + 30} - {e.param for e in events
                                                if e.kind == "end" and e.array_task in originals}
    assert stopped, "no minion was stopped while running a param"
    resubmitted = set(minions) - set(originals)
    assert len(resubmitted) == 4, sorted(minions)
    # Each resubmitted job names the one it replaces.
    replaced = {re.search(r"resubmit_job_id = (\d+)", sweep.cluster.details(job)).group(1)  # type: ignore[union-attr]
                for job in resubmitted}
    assert replaced == set(originals), replaced
    rerun = {e.param for e in events if e.kind == "end" and e.array_task in resubmitted}
    assert stopped <= rerun, stopped - rerun
    print(f"3 minions stopped {preempted:.1f}s after the normal job's oarsub; "
          f"{len(stopped)} params stopped mid-task, finished by the resubmitted jobs "
          f"{sorted(resubmitted)}; {len(rerun)} params done by them; "
          f"{time.time() - signalled:.1f}s from the normal job's oarsub to the end")
