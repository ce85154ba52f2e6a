"""Minions that know their walltime and OAR's checkpoint lead, on a real one-node OAR.

``examples/oar/minions.oar`` with its resource line shortened as a user would
(``walltime=0:01:00``, ``--checkpoint 20``): OAR sends the checkpoint signal (SIGTERM)
20 s before the walltime. Two arrays of two minions run at once, each on its own queue
of tasks of 4 to 6 s. The aware one is told the lead (``MINION_WALLTIME_LEAD=20``, as
the script's comment says): it reads its end from ``OAR_JOB_WALLTIME_SECONDS``, starts no
task it cannot finish before the signal, and ends by itself, exit 0, nothing cut. The
baseline plans for the walltime itself: the signal finds tasks running and cuts them
(their params go back uncounted, as for ``oardel -c``; the CPU time spent on them is
lost). The test prints both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import test_oar_array as oar_array
from tests.integration import test_slurm_walltime as slurm_walltime
from tests.services.oar import OarCluster, oar  # noqa: F401 - the fixture

pytestmark = pytest.mark.service("oar")

PARAMS = 40

#: The SLURM walltime test's task (4 to 6 s, logs its start, its end or the signal that
#: cut it), logging the OAR job id.
TASK = slurm_walltime.TASK.replace("SLURM_ARRAY_TASK_ID", "OAR_JOB_ID")


def short_script(directory: Path) -> Path:
    """The shipped script with a 60 s walltime and a 20 s checkpoint lead."""
    text = oar_array.SCRIPT.read_text()
    text = re.sub(r"(?m)^#OAR -l .*$", "#OAR -l core=1,walltime=0:01:00", text)
    text = re.sub(r"(?m)^#OAR --checkpoint .*$", "#OAR --checkpoint 20", text)
    script = directory / "minions.oar"
    script.write_text(text)
    script.chmod(0o755)
    return script


class Run(oar_array.Sweep):
    """One array's directory: its queue, its task log, its jobs' output."""

    def __init__(self, cluster: OarCluster, directory: Path) -> None:
        directory.mkdir()
        super().__init__(cluster, directory)
        self.task.write_text(TASK)
        self.script = short_script(directory)
        self.fill(PARAMS)

    def submit_short(self, **settings: str) -> list[str]:
        lines = {"TASK_LOG": str(self.log), "MINION_GRACE_PERIOD": "3", **settings}
        (self.dir / ".env").write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        return self.cluster.oarsub(["--array", "2", "-S", f"{self.script} {self.task}"],
                                   cwd=self.dir)

    def figures(self) -> tuple[int, int, float, float]:
        """Tasks done, tasks cut, seconds of tasks done, seconds of cut tasks lost."""
        tasks: dict[tuple[str, int], dict[str, float]] = {}
        for e in self.events():
            tasks.setdefault((e.param, e.attempt), {})[e.kind] = e.time
        done = [t["end"] - t["start"] for t in tasks.values() if "end" in t]
        cut = [t.get("cut", t["start"]) - t["start"] for t in tasks.values() if "end" not in t]
        return len(done), len(cut), sum(done), sum(cut)

    def outputs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.dir.glob("minion.*.out"))
                         + sorted(self.dir.glob("minion.*.err")))


@pytest.fixture
def runs(oar: OarCluster, tmp_path: Path) -> Iterator[tuple[Run, Run]]:  # noqa: F811
    yield Run(oar, tmp_path / "aware"), Run(oar, tmp_path / "baseline")
    oar.delete_all()


def test_minions_told_the_checkpoint_lead_cut_no_task(runs: tuple[Run, Run]) -> None:
    aware, baseline = runs
    aware_jobs = aware.submit_short(MINION_WALLTIME_LEAD="20")
    baseline.submit_short()
    aware.wait_finished(aware_jobs[0], 150)

    done, cut, useful, thrown = aware.figures()
    out = aware.outputs() + baseline.outputs()
    assert cut == 0, out
    assert done >= 6, out
    assert "taking no more" in aware.outputs(), out
    assert "asking OAR to resubmit" not in aware.outputs(), out  # gone before the signal
    minions = aware.minions()
    for job in aware_jobs:
        assert minions[job]["state"] == "finished" and minions[job]["exit_code"] == 0, minions
    status = json.loads(aware.command("minion-queue", "status", "--json"))
    assert status["in_flight"] == 0 and status["dead"] == 0, status
    assert status["done"] == done and status["todo"] == PARAMS - done, status
    left = [json.loads(line) for line in aware.command("minion-queue", "list", "todo",
                                                       "--json").splitlines()]
    assert len(left) == PARAMS - done and all(p["attempts"] == 0 for p in left)

    b_done, b_cut, b_useful, b_thrown = baseline.figures()
    # The baseline's minions were stopped by the checkpoint signal: what they ran is
    # given back uncounted, as for oardel -c, and the script asked OAR to resubmit.
    b_status = json.loads(baseline.command("minion-queue", "status", "--json"))
    assert b_status["in_flight"] == 0 and b_status["dead"] == 0, b_status
    assert b_status["done"] == b_done and b_status["todo"] == PARAMS - b_done, b_status
    b_left = [json.loads(line) for line in baseline.command("minion-queue", "list", "todo",
                                                           "--json").splitlines()]
    assert all(p["attempts"] == 0 for p in b_left), b_left
    if b_cut:
        assert "asking OAR to resubmit (exit 99)" in baseline.outputs()
    print(f"\nOAR, told the lead (walltime 60 s, --checkpoint 20, MINION_WALLTIME_LEAD=20): "
          f"{done} tasks done ({useful:.0f} s), {cut} cut, {thrown:.1f} s lost")
    print(f"OAR, baseline (the same, no lead): {b_done} tasks done ({b_useful:.0f} s), "
          f"{b_cut} cut, {b_thrown:.1f} s lost ({100 * b_thrown / max(b_useful, 1):.1f} %)")
