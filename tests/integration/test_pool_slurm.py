"""minionize.pool.Pool on the slurm backend, on the real single-node SLURM of the tests.

The pool submits with the caller's environment (sbatch's default ``--export=ALL``), so
each test points ``SLURM_CONF`` and ``PATH`` at the test cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from minionize.pool import Executor, Pool, PoolError, TaskLost
from tests.services import alive, script, wait_for
from tests.services.slurm import SlurmCluster

pytestmark = pytest.mark.service("slurm")


@pytest.fixture
def env(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    yield slurm.env
    # Leave no job behind for the next test.
    for job in slurm.jobs():
        slurm.scancel(job)


def test_map_runs_on_one_array_job_with_a_task_per_worker(
    slurm: SlurmCluster, env: dict[str, str], tmp_path: Path
) -> None:
    with Pool(2, backend="slurm", workdir=str(tmp_path), lease=5.0) as pool:
        assert pool.map(lambda x: x * x, range(20)) == [x * x for x in range(20)]
        assert pool.starmap(pow, [(2, 5)]) == [32]
        backend = pool._run.backend
        assert len(backend.jobs) == 1  # type: ignore[attr-defined]
        job = backend.jobs[0]  # type: ignore[attr-defined]
        wait_for(lambda: all(w.state == "alive" for w in pool.workers), 30, "both workers alive")
        assert sorted(w.name for w in pool.workers) == [f"s{job}_0", f"s{job}_1"]
        assert all(w.host and w.pid for w in pool.workers)
        # A pool run is visible in minion-status like any other.
        out = subprocess.run([script("minion-status"), "--json", os.path.join(pool.rundir, "report")],
                             capture_output=True, text=True, timeout=30)
        status = json.loads(out.stdout)
        assert len(status["minions"]) == 2, out.stdout
        rundir = pool.rundir
    assert not os.path.exists(rundir)
    wait_for(lambda: job not in slurm.jobs(), 30, "the array job to leave the queue")


def test_the_executor_runs_on_the_array_job_too(env: dict[str, str], tmp_path: Path) -> None:
    with Executor(2, backend="slurm", workdir=str(tmp_path), lease=5.0) as executor:
        futures = [executor.submit(pow, 2, i) for i in range(8)]
        assert [f.result(timeout=120) for f in futures] == [2 ** i for i in range(8)]
        assert list(executor.map(lambda x: -x, range(5), chunksize=2)) == [0, -1, -2, -3, -4]
        rundir = executor.rundir
    assert not os.path.exists(rundir)


def test_sbatch_own_error_is_shown(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(PoolError, match="sbatch refused the pool's workers: .*[Ii]nvalid partition"):
        Pool(2, backend="slurm", workdir=str(tmp_path), sbatch_args=["--partition=nosuch"])
    assert list(tmp_path.iterdir()) == []


def test_a_lost_array_task_is_replaced_and_map_returns_every_result(
    slurm: SlurmCluster, env: dict[str, str], tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()

    def slow(x: int) -> int:
        (marks / str(x)).write_text(os.environ.get("SLURM_ARRAY_TASK_ID", "?"))
        time.sleep(0.5)
        return x + 1

    with Pool(2, backend="slurm", workdir=str(tmp_path / "runs"), lease=2.0) as pool:
        job = pool._run.backend.jobs[0]  # type: ignore[attr-defined]

        def cancel_task_0() -> None:
            wait_for(lambda: any(p.read_text() == "0" for p in marks.iterdir()), 60,
                     "array task 0 to run an item")
            slurm.scancel(f"{job}_0")

        killer = threading.Thread(target=cancel_task_0)
        killer.start()
        assert pool.map(slow, range(16), chunksize=2) == [x + 1 for x in range(16)]
        killer.join()
        jobs = pool._run.backend.jobs  # type: ignore[attr-defined]
        states = {w.name: w.state for w in pool.workers}
        assert states[f"s{job}_0"] == "lost"
        assert len(jobs) == 2  # the replacement: one more array job of one task
        assert "left the queue" in pool._run.backend.reasons[f"s{job}_0"]  # type: ignore[attr-defined]


def test_no_secret_is_written_to_the_batch_script(env: dict[str, str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_API_TOKEN", "s3cr3t-t0ken-value")
    with Pool(1, backend="slurm", workdir=str(tmp_path), keep_workdir=True) as pool:
        # The job has the submitting environment (from sbatch, not from a file).
        assert pool.map(lambda x: os.environ.get("MY_API_TOKEN") == "s3cr3t-t0ken-value", [0]) == [True]
        rundir = Path(pool.rundir)
    batch = rundir / "slurm" / "workers.sbatch"
    assert batch.stat().st_mode & 0o777 == 0o700 and rundir.stat().st_mode & 0o777 == 0o700
    files = [p for p in rundir.rglob("*") if p.is_file()]
    assert batch in files
    assert not [f for f in files if b"s3cr3t-t0ken-value" in f.read_bytes()]


CTRL_C = textwrap.dedent("""\
    import os, sys, time
    from minionize.pool import Pool

    MARKS = sys.argv[1]

    def slow(x):
        with open(os.path.join(MARKS, "task-%d" % x), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)

    with Pool(2, backend="slurm", workdir=sys.argv[2]) as pool:
        with open(os.path.join(MARKS, "jobs"), "w") as f:
            f.write(" ".join(pool._run.backend.jobs))
        pool.map(slow, range(4), chunksize=1)
""")


def test_ctrl_c_cancels_the_array_and_stops_every_task(
    slurm: SlurmCluster, env: dict[str, str], tmp_path: Path
) -> None:
    marks, runs = tmp_path / "marks", tmp_path / "runs"
    marks.mkdir()
    runs.mkdir()
    job_script = tmp_path / "job.py"
    job_script.write_text(CTRL_C)
    proc = subprocess.Popen([sys.executable, str(job_script), str(marks), str(runs)],
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        wait_for(lambda: len([p for p in marks.glob("task-*") if p.read_text()]) == 2, 90,
                 "two items to start")
        tasks = [int(p.read_text()) for p in marks.glob("task-*")]
        job = (marks / "jobs").read_text().split()[0]
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert time.monotonic() - started < 20
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert job not in slurm.jobs()
    assert not [pid for pid in tasks if alive(pid)]
    assert list(runs.iterdir()) == []


def test_exceptions_and_crashes_on_slurm(env: dict[str, str], tmp_path: Path) -> None:
    def check(x: int) -> int:
        if x == 2:
            raise KeyError("two", x)
        return x

    def crash(x: int) -> int:
        if x == 1:
            os.kill(os.getpid(), signal.SIGSEGV)
        return x

    with Pool(2, backend="slurm", workdir=str(tmp_path), max_attempts=2, lease=5.0) as pool:
        with pytest.raises(KeyError) as info:
            pool.map(check, range(4))
        assert info.value.args == ("two", 2) and "in check" in str(info.value.__cause__)
        with pytest.raises(TaskLost) as lost:
            pool.map(crash, range(4), chunksize=1)
        assert (lost.value.index, lost.value.attempts, lost.value.reason) == (1, 2, "killed by SIGSEGV")
        assert pool.map(abs, [-7]) == [7]  # the workers carry on
