"""Minions that know their walltime, on a real single-node SLURM cluster.

Two arrays of two minions run at once, each job with ``--time=1`` (60 s), each on its own
queue of tasks of 4 to 6 s. The walltime-aware one reads its end from SLURM (one
``squeue`` at start) and takes no param it cannot finish: no task is cut, the params
left are todo with no attempt counted, every job ends by itself (COMPLETED, exit 0)
before its time limit. The baseline is what users do today: the walltime ignored
(``MINION_WALLTIME=none``) and ``--signal=B:TERM@15``, which stops the running tasks
and gives their params back; the test prints how many tasks were cut and the CPU time
thrown away, for both.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import wait_for
from tests.services.slurm import SlurmCluster, SlurmError, slurm  # noqa: F401 (fixture)

pytestmark = pytest.mark.service("slurm")

BIN = Path(sys.executable).parent
PARAMS = 40
JOBS = "0-1"

JOB = """\
#!/bin/bash
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
exec minionize "$@"
"""

TASK = """\
#!/bin/bash
# A task of 4, 5 or 6 s: logs its start, its end, or the signal that cut it.
log() { echo "$1 $PARAM ${SLURM_ARRAY_TASK_ID:-x} ${MINION_ATTEMPT:-0} $(date +%s.%N)" >> "$TASK_LOG"; }
PARAM=$1
trap 'log cut; exit 143' TERM
log start
sleep $((4 + PARAM % 3)) &
wait $!
log end
"""


class Run:
    """One array's working directory: its queue, its task log, its jobs' output."""

    def __init__(self, cluster: SlurmCluster, directory: Path, **env: str) -> None:
        directory.mkdir()
        self.slurm, self.dir = cluster, directory
        (directory / "job.sh").write_text(JOB)
        self.task = directory / "task.sh"
        self.task.write_text(TASK)
        self.task.chmod(0o755)
        self.log = directory / "tasks.log"
        self.log.touch()
        self.env = {**cluster.env, "EXECO_PERSISTENCE_DIR": str(directory / "sweeps"),
                    "TASK_LOG": str(self.log), "MINION_GRACE_PERIOD": "3",
                    "MINION_LEASE": "60", **env}
        self.command("minion-queue", "fill", f"0..{PARAMS - 1}")

    def command(self, *argv: str) -> str:
        result = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=self.dir, env=self.env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{argv} exited {result.returncode}: {result.stderr}"
        return result.stdout

    def submit(self, *options: str) -> str:
        return self.slurm.sbatch(self.dir / "job.sh", args=[str(self.task)],
                                 options=[f"--array={JOBS}", "--time=1",
                                          f"--output={self.dir}/minion-%a.out", *options],
                                 cwd=self.dir, env=self.env)

    def events(self) -> dict[tuple[str, str], dict[str, float]]:
        """``{(param, attempt): {start, end or cut: time}}`` of every task run."""
        tasks: dict[tuple[str, str], dict[str, float]] = {}
        for line in self.log.read_text().splitlines():
            kind, param, _, attempt, stamp = line.split()
            tasks.setdefault((param, attempt), {})[kind] = float(stamp)
        return tasks

    def outputs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.dir.glob("minion-*.out")))

    def figures(self) -> tuple[int, int, float, float]:
        """Tasks done, tasks cut, seconds of tasks done, seconds of cut tasks thrown away."""
        tasks = self.events().values()
        done = [t["end"] - t["start"] for t in tasks if "end" in t]
        cut = [t.get("cut", t["start"]) - t["start"] for t in tasks if "end" not in t]
        return len(done), len(cut), sum(done), sum(cut)


def job_states(cluster: SlurmCluster, job: str) -> dict[str, dict[str, str]]:
    """Each array task's JobState, ExitCode, RunTime and TimeLimit (scontrol)."""
    out = cluster.run(["scontrol", "-o", "show", "job", job])
    states = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        states[fields.get("ArrayTaskId", fields["JobId"])] = fields
    return states


def seconds(clock: str) -> int:
    parts = [int(p) for p in clock.split(":")]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def test_minions_that_know_their_walltime_cut_no_task(slurm: SlurmCluster,  # noqa: F811
                                                      tmp_path: Path) -> None:
    aware = Run(slurm, tmp_path / "aware")
    baseline = Run(slurm, tmp_path / "baseline", MINION_WALLTIME="none")
    jobs = {aware: aware.submit(), baseline: baseline.submit("--signal=B:TERM@15")}
    try:
        for job in jobs.values():
            wait_for(lambda job=job: not slurm.jobs(job), 110, f"job {job} to end", every=0.5)
    except AssertionError:
        raise AssertionError(aware.outputs() + baseline.outputs()) from None
    finally:
        for job in jobs.values():
            try:
                slurm.scancel(job, "--signal=KILL")
            except SlurmError:
                pass

    done, cut, useful, thrown = aware.figures()
    states = job_states(slurm, jobs[aware])
    assert cut == 0, aware.outputs()
    assert done >= 10, aware.outputs()
    for task, fields in states.items():
        assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", (
            task, fields, aware.outputs())
        assert seconds(fields["RunTime"]) < 60, (task, fields)
    assert "taking no more" in aware.outputs()
    assert thrown <= 0.05 * useful
    status = json.loads(aware.command("minion-queue", "status", "--json"))
    assert status["in_flight"] == 0 and status["dead"] == 0
    assert status["done"] == done and status["todo"] == PARAMS - done
    left = [json.loads(line) for line in aware.command("minion-queue", "list", "todo",
                                                       "--json").splitlines()]
    assert len(left) == PARAMS - done and all(p["attempts"] == 0 for p in left)

    b_done, b_cut, b_useful, b_thrown = baseline.figures()
    b_states = job_states(slurm, jobs[baseline])
    print(f"\nwalltime-aware (--time=1, 2 minions): {done} tasks done ({useful:.0f} s), "
          f"{cut} cut, {thrown:.1f} s thrown away; job run times "
          f"{sorted(f['RunTime'] for f in states.values())}")
    print(f"baseline (--signal=B:TERM@15, MINION_WALLTIME=none): {b_done} tasks done "
          f"({b_useful:.0f} s), {b_cut} cut, {b_thrown:.1f} s thrown away "
          f"({100 * b_thrown / max(b_useful, 1):.1f} %); job run times "
          f"{sorted(f['RunTime'] for f in b_states.values())}")
