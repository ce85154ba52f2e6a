"""Grid Engine array jobs of minions on a real single-node Son of Grid Engine.

Every job here is ``examples/sge/minions.sge``, the script users submit, with the test's
settings passed through the environment (the script's ``-V``) and command-line options
that add to its ``#$`` lines. Each param runs ``task.sh``, which logs ``start``/``end``
lines with the array task, the attempt and the time, so the tests check what a user
would: every param done, exactly once when nothing is killed; the params of a deleted
array task finished by the others without an attempt counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_slurm_array import Event, done_params, max_overlap
from tests.services import wait_for
from tests.services.sge import SgeCluster, SgeError, sge  # noqa: F401 - the fixture

pytestmark = pytest.mark.service("sge")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "sge" / "minions.sge"
BIN = Path(sys.executable).parent

TASK = """\
#!/bin/sh
# One param: log its start and end, with the array task and the attempt.
log() { echo "$1 $PARAM ${SGE_TASK_ID:-x} ${MINION_ATTEMPT:-0} $(date +%s.%N)" >> "$TASK_LOG"; }
PARAM=$1
log start
if [ -n "${TASK_SECONDS:-}" ]; then sleep "$TASK_SECONDS"; fi
log end
"""


class Sweep:
    """A working directory as a user has it: a sweep queue, reports, the task."""

    def __init__(self, cluster: SgeCluster, directory: Path) -> None:
        self.cluster = cluster
        self.dir = directory
        self.task = directory / "task.sh"
        self.task.write_text(TASK)
        self.task.chmod(0o755)
        self.log = directory / "tasks.log"
        self.log.touch()
        self.env = {
            "EXECO_PERSISTENCE_DIR": str(directory / "sweeps"),
            "REPORTER_JSON_DIRECTORY": str(directory / "minion-report"),
            "MINION_REPORTER": "json",
            "TASK_LOG": str(self.log),
        }

    def command(self, *argv: str, timeout: float = 60) -> str:
        result = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]],
            cwd=self.dir,
            env={**self.cluster.env, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{argv} exited {result.returncode}: {result.stderr}"
        return result.stdout

    def fill(self, count: int) -> None:
        self.command("minion-queue", "fill", f"0..{count - 1}")

    def submit(self, *options: str, **env: str) -> str:
        return self.cluster.qsub(
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

    def wait_running(self, array_task: str, timeout: float = 30) -> set[str]:
        held: set[str] = set()

        def running() -> bool:
            held.clear()
            held.update(self.running_on(array_task))
            return bool(held)

        try:
            wait_for(running, timeout, f"array task {array_task} to run a param", every=0.05)
        except AssertionError:
            raise AssertionError(self.outputs()) from None
        return set(held)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.command("minion-status", "--json"))
        return data

    def minions(self) -> dict[str, dict[str, Any]]:
        """minion-status rows by job label (``1234.5``, as qstat and qdel name it)."""
        return {m["job"]: m for m in self.status()["minions"]}

    def outputs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.dir.glob("minion-*.out"))
        )

    def wait_finished(self, job: str, timeout: float) -> None:
        try:
            self.cluster.wait_finished(job, timeout)
        except AssertionError:
            raise AssertionError(f"job {job} did not finish\n{self.outputs()}") from None

    def assert_all_done(self, count: int) -> dict[str, Any]:
        """Every param ended once at least, and the queue agrees: all done, none dead."""
        done = done_params(self.events())
        assert set(done) == {str(i) for i in range(count)}, self.outputs()
        status = self.status()
        queue = status.get("queue") or {}
        assert queue.get("done") == count, status
        assert queue.get("dead", 0) == 0 and queue.get("todo", 0) == 0, status
        return status


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
    status = sweep.assert_all_done(300)
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
    held = sweep.wait_running("2")
    deleted = time.time()
    sweep.cluster.run(["qdel", job, "-t", "2"])
    sweep.wait_finished(job, 90)

    sweep.assert_all_done(24)
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
    sweep.assert_all_done(8)

    peak = max_overlap(sweep.events())
    assert peak == 2, f"{peak} tasks ran at once with -pe smp 2 (NSLOTS=2)"
    minion = sweep.minions()[f"{job}.1"]
    assert minion["jobs"] == {"JOB_ID": job, "SGE_TASK_ID": "1"}
