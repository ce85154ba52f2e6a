"""``minion-alloc`` on a real single-node SLURM cluster.

Each test is a user's working directory: a sweep queue, the task ``task.sh`` (it logs
each param it runs), and ``minion-alloc`` run there with short poll intervals, which
submits ``examples/slurm/minions.sbatch``. What is checked is what a user would see:
every param run once, a cancelled job replaced, a broken job script stopping it with
SLURM's words and the job's stderr, no duplicate job after a restart, nothing
submitted for a drained queue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.services import wait_for
from tests.services.slurm import SlurmCluster

pytestmark = pytest.mark.service("slurm")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "slurm" / "minions.sbatch"
BIN = Path(sys.executable).parent
TASK = """\
#!/bin/sh
echo "$1" >> "$TASK_LOG"
if [ -n "${TASK_SECONDS:-}" ]; then sleep "$TASK_SECONDS"; fi
"""
#: Seconds between two looks of the allocator in these tests (30 s by default).
INTERVAL = "0.5"


class Workdir:
    """A working directory with a sweep queue, the task, and the allocator run there;
    ``submit_with``: the scheduler's command-line options, ``script``: the batch script."""

    def __init__(self, cluster: Any, directory: Path, script: Path = SCRIPT,
                 wrap: tuple[str, ...] = ()) -> None:
        self.cluster = cluster
        self.dir = directory
        self.script = script
        self.wrap = wrap
        self.task = directory / "task.sh"
        self.task.write_text(TASK)
        self.task.chmod(0o755)
        self.log = directory / "tasks.log"
        self.log.touch()
        self.env = {**cluster.env, "EXECO_PERSISTENCE_DIR": str(directory / "sweeps"),
                    "TASK_LOG": str(self.log), "MINION_GRACE_PERIOD": "2"}

    def command(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.wrap, str(BIN / argv[0]), *argv[1:]], cwd=self.dir,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def fill(self, count: int) -> None:
        assert self.command("minion-queue", "fill", f"0..{count - 1}").returncode == 0

    def alloc_argv(self, *options: str) -> list[str]:
        return [*self.wrap, str(BIN / "minion-alloc"), "--interval", INTERVAL, *options,
                str(self.script), str(self.task)]

    def alloc(self, *options: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.alloc_argv(*options), cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start_alloc(self, *options: str, name: str = "alloc") -> subprocess.Popen[str]:
        err = open(self.dir / f"{name}.err", "w")  # noqa: SIM115 - the child owns it
        try:
            return subprocess.Popen(self.alloc_argv(*options), cwd=self.dir, env=self.env,
                                    stdout=subprocess.DEVNULL, stderr=err, text=True,
                                    start_new_session=True)
        finally:
            err.close()

    def said(self) -> str:
        """What the allocators said in this directory (their log beside the reports)."""
        path = self.dir / "minion-report" / "minion-alloc.log"
        return path.read_text() if path.exists() else ""

    def submitted(self) -> int:
        """Minions submitted, as the allocators said."""
        return sum(int(line.split("submitted ")[1].split()[0])
                   for line in self.said().splitlines() if " minion-alloc: submitted " in line)

    def runs(self) -> Counter[str]:
        return Counter(self.log.read_text().split())

    def queue(self) -> dict[str, Any]:
        import json

        result = self.command("minion-queue", "status", "--json")
        assert result.returncode == 0, result.stderr
        counters: dict[str, Any] = json.loads(result.stdout)
        return counters


def jobs_named(cluster: SlurmCluster, name: Optional[str] = None) -> dict[str, str]:
    argv = ["squeue", "-h", "-r", "--states=all", "-o", "%i %T %j"]
    out = cluster.run(argv, timeout=10)
    found = {}
    for line in out.splitlines():
        label, state, job_name = line.split()
        if name is None or job_name == name:
            found[label] = state
    return found


def job_name(work: Workdir) -> str:
    for line in work.said().splitlines():
        if " jobs named " in line:
            return line.split(" jobs named ")[1].split()[0]
    raise AssertionError(f"no job name said:\n{work.said()}")


@pytest.fixture
def work(slurm: SlurmCluster, tmp_path: Path) -> Workdir:
    return Workdir(slurm, tmp_path)


def test_it_drains_a_queue_of_200_params_each_run_once(work: Workdir) -> None:
    work.fill(200)
    result = work.alloc("--max-minions", "4", "--tasks-per-minion", "10")
    assert result.returncode == 0, result.stderr
    assert "exit (queue drained and its minions finished)" in result.stderr
    runs = work.runs()
    assert sorted(runs, key=int) == [str(n) for n in range(200)]
    assert set(runs.values()) == {1}
    assert work.queue()["done"] == 200
    assert work.submitted() == 4, result.stderr  # one array of 4: the backlog never needed more


def test_a_cancelled_job_is_replaced(work: Workdir, slurm: SlurmCluster) -> None:
    work.fill(40)
    work.env["TASK_SECONDS"] = "0.5"
    alloc = work.start_alloc("--max-minions", "2")
    try:
        wait_for(lambda: "submitted 2" in work.said(), 30, "the first array")
        name = job_name(work)
        wait_for(lambda: list(jobs_named(slurm, name).values()).count("RUNNING") == 2, 30,
                 "both minions running")
        first = sorted(jobs_named(slurm, name))[0]
        slurm.scancel(first)
        wait_for(lambda: work.submitted() >= 3, 30, "a replacement job")
        assert alloc.wait(timeout=90) == 0, (work.dir / "alloc.err").read_text()
    finally:
        if alloc.poll() is None:
            alloc.kill()
    assert work.queue()["done"] == 40
    assert "stopped:" not in work.said()
    assert jobs_named(slurm, name)[first] == "CANCELLED"


def test_a_broken_job_script_stops_it_with_a_clear_message(work: Workdir) -> None:
    broken = work.dir / "broken.sbatch"
    broken.write_text("#!/bin/bash\necho 'a.out: no such file or directory' >&2\nexit 7\n")
    work.script = broken
    work.fill(10)
    result = work.alloc("--max-minions", "1", "--max-broken", "3")
    assert result.returncode == 3, result.stderr
    assert "3 jobs in a row ended without starting a task" in result.stderr
    assert "FAILED (NonZeroExitCode), exit code 7" in result.stderr
    assert "a.out: no such file or directory" in result.stderr
    assert work.submitted() == 3
    assert work.queue()["todo"] == 10
    # Started again on the same script, it stops at once: it never loops on it.
    again = work.alloc("--max-minions", "1", "--max-broken", "3")
    assert again.returncode == 3 and "submitted" not in again.stderr
    # The script fixed, its broken jobs say nothing of the new one.
    work.script = SCRIPT
    fixed = work.alloc("--max-minions", "1", "--max-broken", "3")
    assert fixed.returncode == 0, fixed.stderr
    assert work.queue()["done"] == 10


def test_killed_and_restarted_it_submits_no_duplicate(work: Workdir, slurm: SlurmCluster) -> None:
    work.fill(30)
    work.env["TASK_SECONDS"] = "0.5"
    first = work.start_alloc("--max-minions", "3", name="first")
    try:
        wait_for(lambda: work.submitted() == 3, 30, "the first array")
        # A second copy on the same queue leaves at once: it holds no lock.
        copy = work.alloc("--max-minions", "3", timeout=30)
        assert copy.returncode == 0 and "another minion-alloc" in copy.stderr
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        again = work.alloc("--max-minions", "3")
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
    assert again.returncode == 0, again.stderr
    assert "submitted" not in again.stderr
    assert work.submitted() == 3
    assert len(jobs_named(slurm, job_name(work))) == 3
    assert set(work.runs().values()) == {1} and len(work.runs()) == 30


def test_nothing_is_submitted_for_a_drained_queue(work: Workdir, slurm: SlurmCluster) -> None:
    work.fill(5)
    drained = work.command("minionize", str(work.task))
    assert drained.returncode == 0 and work.queue()["todo"] == 0
    result = work.alloc("--max-minions", "4")
    assert result.returncode == 0, result.stderr
    assert "target 0, live 0, pending 0, backlog 0, in flight 0: exit" in result.stderr
    assert work.submitted() == 0 and jobs_named(slurm, job_name(work)) == {}
