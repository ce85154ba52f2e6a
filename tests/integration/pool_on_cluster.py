"""The tests of ``Pool(backend="oar")`` and ``Pool(backend="sge")``, written once: the
``test_*`` functions here are imported by :mod:`tests.integration.test_pool_oar` and
:mod:`tests.integration.test_pool_sge` (pytest collects them there), whose ``cluster``
fixture gives the :class:`Scheduler`; as :mod:`tests.integration.test_pool_slurm` does
for SLURM.

The test clusters live in namespaces of their own: the pool reaches them through
wrappers on PATH (``oarsub`` is ``nsenter ... /usr/bin/oarsub``), which also log each
call, so that a test counts the status queries and the cancels the pool made.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from minionize.pool import Executor, Pool, PoolError, TaskLost
from tests.services import alive, wait_for

#: What test_pool_oar.py and test_pool_sge.py take (``import *``): the shared tests.
__all__ = [
    "test_a_deleted_task_is_replaced_and_map_returns_every_result",
    "test_ctrl_c_is_one_cancel_and_stops_every_task",
    "test_every_task_deleted_is_a_pool_error_not_a_hang",
    "test_exceptions_and_crashes",
    "test_map_runs_on_one_array_job_with_a_task_per_worker",
    "test_the_executor_runs_on_the_array_job_too",
]


class Scheduler:
    """What the tests do to a test cluster: wrap its commands, delete a job as an
    admin would, list what it still runs."""

    backend = ""
    #: The pool's status query and cancel commands.
    query = ""
    cancel = ""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.calls = bindir / "calls.log"

    def wrap(self, prefix: Sequence[str], commands: dict[str, str]) -> None:
        """``commands`` (name: real path) on PATH, run with ``prefix`` (nsenter) and logged."""
        self.bindir.mkdir(parents=True, exist_ok=True)
        enter = " ".join(prefix[:-1])  # the last word is "--"
        for name, real in commands.items():
            path = self.bindir / name
            path.write_text(f'#!/bin/sh\necho "{name} $*" >> {self.calls}\n'
                            f'exec {enter} --wd="$(pwd)" -- {real} "$@"\n')
            path.chmod(0o755)

    def logged(self, name: str) -> int:
        """How many times the pool ran ``name`` so far."""
        if not self.calls.exists():
            return 0
        return sum(1 for line in self.calls.read_text().splitlines() if line.split()[0] == name)

    def delete(self, worker: str) -> None:
        """Delete a worker's job (task), as an admin would."""
        raise NotImplementedError

    def live(self, workers: Sequence[str]) -> list[str]:
        """The workers whose job (task) the scheduler still lists."""
        raise NotImplementedError

    def leftovers(self) -> None:
        """Delete every job left, for the next test."""
        raise NotImplementedError


def worker_name() -> str:
    """The pool's name of the worker this runs in (from its job's variables)."""
    if "OAR_JOB_ID" in os.environ:
        return "o" + os.environ["OAR_JOB_ID"]
    return f"g{os.environ.get('JOB_ID')}_{os.environ.get('SGE_TASK_ID')}"


def test_map_runs_on_one_array_job_with_a_task_per_worker(cluster: Scheduler, tmp_path: Path) -> None:
    with Pool(2, backend=cluster.backend, workdir=str(tmp_path), lease=5.0) as pool:
        assert pool.map(lambda x: x * x, range(20)) == [x * x for x in range(20)]
        backend = pool._run.backend
        assert len(backend.jobs) == 1  # type: ignore[attr-defined]
        wait_for(lambda: all(w.state == "alive" for w in pool.workers), 60, "both workers alive")
        names = sorted(w.name for w in pool.workers)
        assert len(names) == 2 and all(w.host and w.pid for w in pool.workers)
        assert set(pool.map(lambda x: worker_name(), range(40), chunksize=1)) <= set(names)
        # At most one status query a second, whatever the number of items.
        before, started = cluster.logged(cluster.query), time.monotonic()
        assert pool.map(lambda x: time.sleep(0.005) or x, range(600), chunksize=1) == list(range(600))
        elapsed = time.monotonic() - started
        queries = cluster.logged(cluster.query) - before
        assert queries <= elapsed / 1.0 + 2, (queries, elapsed)
        rundir = pool.rundir
    assert not os.path.exists(rundir)
    wait_for(lambda: not cluster.live(names), 60, "the array's jobs to leave the scheduler", every=0.5)
    assert cluster.logged(cluster.cancel) == 1


def test_the_executor_runs_on_the_array_job_too(cluster: Scheduler, tmp_path: Path) -> None:
    with Executor(2, backend=cluster.backend, workdir=str(tmp_path), lease=5.0) as executor:
        futures = [executor.submit(pow, 2, i) for i in range(8)]
        assert [f.result(timeout=120) for f in futures] == [2 ** i for i in range(8)]
        assert list(executor.map(lambda x: -x, range(5), chunksize=2)) == [0, -1, -2, -3, -4]
        rundir = executor.rundir
    assert not os.path.exists(rundir)


def refused_submission_is_shown(cluster: Scheduler, tmp_path: Path, args: list[str],
                                words: str) -> None:
    with pytest.raises(PoolError, match=f"(?s)refused the pool's workers: .*{words}"):
        Pool(2, backend=cluster.backend, workdir=str(tmp_path), submit_args=args)
    assert list(tmp_path.iterdir()) == []


def test_a_deleted_task_is_replaced_and_map_returns_every_result(cluster: Scheduler, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()

    def slow(x: int) -> int:
        (marks / str(x)).write_text(worker_name())
        time.sleep(0.5)
        return x + 1

    with Pool(2, backend=cluster.backend, workdir=str(tmp_path / "runs"), lease=2.0) as pool:
        first = sorted(w.name for w in pool.workers)[0]
        backend = pool._run.backend

        def delete_first() -> None:
            wait_for(lambda: any(p.read_text() == first for p in marks.iterdir()), 90,
                     f"worker {first} to run an item")
            cluster.delete(first)

        killer = threading.Thread(target=delete_first)
        killer.start()
        result = pool.map_async(slow, range(16), chunksize=2)
        assert result.get(timeout=240) == [x + 1 for x in range(16)]
        killer.join(timeout=30)
        states = {w.name: w.state for w in pool.workers}
        assert states[first] == "lost", states
        assert len(backend.jobs) == 2  # type: ignore[attr-defined]  # the replacement's array
        assert "left the queue" in backend.reasons[first]  # type: ignore[attr-defined]


def test_every_task_deleted_is_a_pool_error_not_a_hang(cluster: Scheduler, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()

    def forever(x: int) -> int:
        (marks / worker_name()).write_text(str(x))
        time.sleep(600)
        return x

    with Pool(1, backend=cluster.backend, workdir=str(tmp_path / "runs"), lease=60.0,
              max_replacements=1) as pool:
        stop = threading.Event()

        def delete_each() -> None:
            deleted: set[str] = set()
            while not stop.is_set() and len(deleted) < 2:
                for mark in marks.iterdir():
                    if mark.name not in deleted:
                        deleted.add(mark.name)
                        cluster.delete(mark.name)
                stop.wait(0.2)

        killer = threading.Thread(target=delete_each)
        killer.start()
        started = time.monotonic()
        try:
            with pytest.raises(PoolError, match="lost") as info:
                pool.map_async(forever, range(2), chunksize=1).get(timeout=300)
        finally:
            stop.set()
            killer.join(timeout=30)
        assert time.monotonic() - started < 240
        assert isinstance(info.value, TaskLost) or "every worker was lost" in str(info.value)
        assert [w.state for w in pool.workers] == ["lost", "lost"]


def test_exceptions_and_crashes(cluster: Scheduler, tmp_path: Path) -> None:
    def check(x: int) -> int:
        if x == 2:
            raise KeyError("two", x)
        return x

    def crash(x: int) -> int:
        if x == 1:
            os.kill(os.getpid(), signal.SIGSEGV)
        return x

    with Pool(2, backend=cluster.backend, workdir=str(tmp_path), max_attempts=2, lease=5.0) as pool:
        with pytest.raises(KeyError) as info:
            pool.map(check, range(4))
        assert info.value.args == ("two", 2) and "in check" in str(info.value.__cause__)
        with pytest.raises(TaskLost) as lost:
            pool.map(crash, range(4), chunksize=1)
        assert (lost.value.index, lost.value.attempts, lost.value.reason) == (1, 2, "killed by SIGSEGV")
        assert pool.map(abs, [-7]) == [7]  # the workers carry on


def secret_reaches_the_function(cluster: Scheduler, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files of a kept run directory that hold the caller's secret variable (the
    function saw it); the run directory and its cluster subdirectory are private."""
    monkeypatch.setenv("MY_API_TOKEN", "s3cr3t-t0ken-value")
    with Pool(1, backend=cluster.backend, workdir=str(tmp_path), keep_workdir=True) as pool:
        assert pool.map(lambda x: os.environ.get("MY_API_TOKEN") == "s3cr3t-t0ken-value", [0]) == [True]
        rundir = Path(pool.rundir)
    assert rundir.stat().st_mode & 0o777 == 0o700
    assert (rundir / cluster.backend).stat().st_mode & 0o777 == 0o700
    files = [p for p in rundir.rglob("*") if p.is_file()]
    return [f for f in files if b"s3cr3t-t0ken-value" in f.read_bytes()]


CTRL_C = textwrap.dedent("""\
    import os, sys, time
    from minionize.pool import Pool

    MARKS = sys.argv[1]

    def slow(x):
        with open(os.path.join(MARKS, "task-%d" % x), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)

    with Pool(2, backend=sys.argv[3], workdir=sys.argv[2]) as pool:
        with open(os.path.join(MARKS, "workers"), "w") as f:
            f.write(" ".join(w.name for w in pool.workers))
        pool.map(slow, range(4), chunksize=1)
""")


def test_ctrl_c_is_one_cancel_and_stops_every_task(cluster: Scheduler, tmp_path: Path) -> None:
    marks, runs = tmp_path / "marks", tmp_path / "runs"
    marks.mkdir()
    runs.mkdir()
    job_script = tmp_path / "job.py"
    job_script.write_text(CTRL_C)
    proc = subprocess.Popen([sys.executable, str(job_script), str(marks), str(runs), cluster.backend],
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        wait_for(lambda: len([p for p in marks.glob("task-*") if p.read_text()]) == 2, 120,
                 "two items to start")
        tasks = [int(p.read_text()) for p in marks.glob("task-*")]
        workers = (marks / "workers").read_text().split()
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert time.monotonic() - started < 25
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err
    assert cluster.logged(cluster.cancel) == 1
    assert cluster.live(workers) == []
    wait_for(lambda: not [pid for pid in tasks if alive(pid)], 10, "the tasks' processes to end")
    assert list(runs.iterdir()) == []

