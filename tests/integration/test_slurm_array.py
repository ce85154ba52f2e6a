"""SLURM array jobs of minions on a real single-node SLURM cluster.

Every job here is ``examples/slurm/minions.sbatch``, the script users submit, with the
test's settings passed through the environment (sbatch's default ``--export=ALL``) and
command-line options that override its ``#SBATCH`` lines. Each param runs
``task.sh``, which logs ``start``/``end`` lines with the array task, the attempt and
the time, so the tests check what a user would: every param done, exactly once when
nothing is killed; the params of a stopped or killed array task finished by the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.services import wait_for
from tests.services.slurm import SlurmCluster, SlurmError

pytestmark = pytest.mark.service("slurm")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "slurm" / "minions.sbatch"
BIN = Path(sys.executable).parent

TASK = """\
#!/bin/sh
# One param: log its start and end, with the array task and the attempt.
log() { echo "$1 $PARAM ${SLURM_ARRAY_TASK_ID:-x} ${MINION_ATTEMPT:-0} $(date +%s.%N)" >> "$TASK_LOG"; }
PARAM=$1
log start
if [ -n "${TASK_SECONDS:-}" ]; then sleep "$TASK_SECONDS"; fi
log end
"""


@dataclass
class Event:
    kind: str
    param: str
    array_task: str
    attempt: int
    time: float


class Sweep:
    """A working directory as a user has it: a sweep queue, reports, the task."""

    def __init__(self, slurm: SlurmCluster, directory: Path) -> None:
        self.slurm = slurm
        self.dir = directory
        self.task = directory / "task.sh"
        self.task.write_text(TASK)
        self.task.chmod(0o755)
        self.log = directory / "tasks.log"
        self.log.touch()
        self.env = {
            **slurm.env,
            "EXECO_PERSISTENCE_DIR": str(directory / "sweeps"),
            "REPORTER_JSON_DIRECTORY": str(directory / "minion-report"),
            "MINION_REPORTER": "json",
            "TASK_LOG": str(self.log),
        }

    def command(self, *argv: str, timeout: float = 60) -> str:
        result = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{argv} exited {result.returncode}: {result.stderr}"
        return result.stdout

    def fill(self, count: int) -> None:
        self.command("minion-queue", "fill", f"0..{count - 1}")

    def submit(self, *options: str, **env: str) -> str:
        return self.slurm.sbatch(
            SCRIPT, args=[str(self.task)], options=options, cwd=self.dir, env={**self.env, **env}
        )

    def events(self) -> list[Event]:
        events = []
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                kind, param, task, attempt, stamp = parts
                events.append(Event(kind, param, task, int(attempt), float(stamp)))
        return events

    def running_on(self, array_task: str) -> set[str]:
        """Params array task ``array_task`` started and has not ended."""
        started: Counter[str] = Counter()
        for e in self.events():
            if e.array_task == array_task:
                started[e.param] += 1 if e.kind == "start" else -1
        return {p for p, n in started.items() if n > 0}

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.command("minion-status", "--json"))
        return data

    def outputs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.dir.glob("minion-*.out"))
        )

    def wait_finished(self, job: str, timeout: float) -> None:
        try:
            self.slurm.wait_finished(job, timeout)
        except AssertionError:
            raise AssertionError(f"job {job} did not finish\n{self.outputs()}") from None


@pytest.fixture
def sweep(slurm: SlurmCluster, tmp_path: Path) -> Iterator[Sweep]:
    work = Sweep(slurm, tmp_path)
    yield work
    # Leave no job of this test behind for the next one.
    for job in {label.split("_")[0] for label in slurm.jobs()}:
        try:
            slurm.scancel(job, "--signal=KILL")
        except SlurmError:
            pass  # it ended meanwhile
    wait_for(lambda: not slurm.jobs(), 30, "the test's jobs to end", every=0.2)


def done_params(events: list[Event]) -> Counter[str]:
    return Counter(e.param for e in events if e.kind == "end")


def max_overlap(events: list[Event]) -> int:
    running = peak = 0
    # At equal times an end sorts before a start: touching tasks do not overlap.
    for e in sorted(events, key=lambda e: (e.time, e.kind == "start")):
        running += 1 if e.kind == "start" else -1
        peak = max(peak, running)
    return peak


def minions_by_label(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["job"]: m for m in status["minions"]}


def assert_all_done(sweep: Sweep, count: int) -> dict[str, Any]:
    """Every param ended once at least, and the queue agrees: all done, none dead."""
    done = done_params(sweep.events())
    assert set(done) == {str(i) for i in range(count)}, sweep.outputs()
    status = sweep.status()
    queue = status.get("queue") or {}
    assert queue.get("done") == count, status
    assert queue.get("dead", 0) == 0 and queue.get("todo", 0) == 0, status
    assert status["dead"] == 0
    return status


def wait_running(sweep: Sweep, array_task: str, timeout: float = 30) -> set[str]:
    held: set[str] = set()

    def running() -> bool:
        held.clear()
        held.update(sweep.running_on(array_task))
        return bool(held)

    try:
        wait_for(running, timeout, f"array task {array_task} to run a param", every=0.05)
    except AssertionError:
        raise AssertionError(sweep.outputs()) from None
    return set(held)


# -- the tests ---------------------------------------------------------------------------
def test_array_of_four_minions_drains_500_params_exactly_once(sweep: Sweep) -> None:
    sweep.fill(500)
    started = time.monotonic()
    job = sweep.submit("--array=0-3")
    sweep.wait_finished(job, 120)
    elapsed = time.monotonic() - started

    done = done_params(sweep.events())
    assert len(done) == 500 and set(done.values()) == {1}, "a param ran twice or never"
    status = assert_all_done(sweep, 500)
    assert status["done"] == 500

    # minion-status shows one row per array task, named as squeue names them.
    minions = minions_by_label(status)
    assert set(minions) == {f"{job}_{i}" for i in range(4)}, status["minions"]
    for index in range(4):
        minion = minions[f"{job}_{index}"]
        assert minion["jobs"]["SLURM_ARRAY_JOB_ID"] == job
        assert minion["jobs"]["SLURM_ARRAY_TASK_ID"] == str(index)
        assert minion["jobs"]["SLURM_JOB_ID"]
        assert minion["state"] == "finished" and minion["exit_code"] == 0
    assert sum(m["done"] for m in minions.values()) == 500
    by_task = Counter(e.array_task for e in sweep.events() if e.kind == "end")
    print(f"500 params, 4 array tasks: {elapsed:.1f}s from sbatch to the end; {dict(by_task)}")


@pytest.mark.parametrize(
    "scancel",
    [
        # What `#SBATCH --signal=B:TERM@90` sends before the time limit: SIGTERM to
        # the batch shell alone, which the example script exec-ed into the minion.
        ("--batch", "--signal=TERM"),
        # What the time limit, preemption and a plain scancel do: SIGTERM to every
        # process of the job at once, minion and tasks; SIGKILL after KillWait.
        (),
    ],
    ids=["batch-sigterm", "job-cancelled"],
)
def test_sigterm_to_one_array_task_requeues_its_params_at_once(
    sweep: Sweep, scancel: tuple[str, ...]
) -> None:
    sweep.fill(24)
    job = sweep.submit("--array=0-3", TASK_SECONDS="1.5", MINION_GRACE_PERIOD="3")
    held = wait_running(sweep, "1")
    signalled = time.time()
    sweep.slurm.scancel(f"{job}_1", *scancel)
    sweep.wait_finished(job, 90)

    assert_all_done(sweep, 24)
    events = sweep.events()
    reruns = {}
    for param in held:
        # Stopped on task 1, then finished by another task without waiting for its lease
        # (300 s here; about 1.5 s is typical: until another minion is free).
        ends = [e for e in events if e.param == param and e.kind == "end"]
        assert [e.array_task for e in ends] != ["1"], ends
        rerun = [e for e in events if e.param == param and e.kind == "start" and e.time > signalled]
        assert rerun and rerun[0].array_task != "1", rerun
        assert rerun[0].time - signalled < 60, "the param waited for its lease"
        reruns[param] = rerun[0]
        print(f"param {param}: stopped on task 1, running again on task "
              f"{rerun[0].array_task} {rerun[0].time - signalled:.2f}s after the signal")
    minion = minions_by_label(sweep.status())[f"{job}_1"]
    assert minion["state"] == "finished" and minion["exit_code"] == 0, minion
    # A stop is not a failure: the attempt cut short is not counted.
    counted = {p: e.attempt for p, e in reruns.items() if e.attempt != 1}
    assert not counted, counted
    assert minion["released"] >= len(held), minion


def test_hard_kill_of_one_array_task_recovered_at_once_on_its_node(sweep: Sweep) -> None:
    """``scancel --batch --signal=KILL``: the minion dies at once (as on the OOM killer)
    and nobody gives its params back. Its claims name its host and process, so on its
    node (this one-node cluster) the next claim sees the holder gone and ends its leases
    at once, long before they expire; on another node the lease does it (that path:
    tests/integration/test_sweep_minions.py, a holder stopped by SIGSTOP)."""
    sweep.fill(24)
    lease = 60.0
    job = sweep.submit(
        "--array=0-3", TASK_SECONDS="1", MINION_LEASE=str(lease), MINION_WAIT="1"
    )
    held = wait_running(sweep, "2")
    killed = time.time()
    sweep.slurm.scancel(f"{job}_2", "--batch", "--signal=KILL")
    sweep.wait_finished(job, 90)

    assert_all_done(sweep, 24)
    events = sweep.events()
    for param in held:
        rerun = [e for e in events if e.param == param and e.kind == "start" and e.time > killed]
        assert rerun, f"param {param} held by the killed task never ran again"
        assert rerun[0].array_task != "2"
        assert rerun[0].attempt == 2, "a lease ended by its holder's death counts an attempt"
        assert rerun[0].time - killed < lease / 2, (rerun[0].time - killed, lease)
    minion = minions_by_label(sweep.status())[f"{job}_2"]
    assert minion["exit_code"] is None, "a SIGKILLed minion writes no stop record"


def test_concurrency_auto_uses_the_cpus_per_task(sweep: Sweep) -> None:
    sweep.fill(8)
    job = sweep.submit(
        "--array=0", "--cpus-per-task=2", TASK_SECONDS="0.6", MINION_CONCURRENCY="auto"
    )
    sweep.wait_finished(job, 60)
    assert_all_done(sweep, 8)

    # Sweep over the start and end times: how many tasks ran at once, at most.
    peak = max_overlap(sweep.events())
    assert peak == 2, f"{peak} tasks ran at once with --cpus-per-task=2"
    minion = sweep.status()["minions"][0]
    assert minion["jobs"]["SLURM_ARRAY_TASK_ID"] == "0"


def test_time_limit_warning_stops_the_minion_gracefully(sweep: Sweep) -> None:
    """The path a user gets from ``#SBATCH --signal=B:TERM@N`` with a real time limit:
    a 1-minute job warned 50 s ahead stops its minion about 10 s in, gives its params
    back, and exits 0 long before SLURM would kill it."""
    sweep.fill(40)
    started = time.monotonic()
    job = sweep.submit(
        "--array=0", "--time=1", "--signal=B:TERM@50", TASK_SECONDS="2", MINION_GRACE_PERIOD="2"
    )
    sweep.wait_finished(job, 60)
    elapsed = time.monotonic() - started
    assert elapsed < 45, f"the job ran {elapsed:.0f}s: it was killed, not warned"

    status = sweep.status()
    minion = status["minions"][0]
    assert minion["state"] == "finished" and minion["exit_code"] == 0, minion
    assert minion["released"] >= 1, minion
    queue = status["queue"]
    # Nothing lost: what was not done is back in the queue, ready for the next job.
    assert queue["in_flight"] == 0 and queue["dead"] == 0, queue
    assert queue["done"] + queue["todo"] == 40 and queue["todo"] > 0, queue
    assert queue["done"] == len(done_params(sweep.events()))
