"""minionize.pool.Pool on the local backend: worker minions as child processes.

Each pypoolparty 0.3.1 defect of issue 13 has its test here (named ``..._pypoolparty_...``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from minionize.pool import Pool, PoolError, RemoteError, TaskLost
from minionize.pool.rundir import check_private
from tests.services import alive, wait_for

ROOT = Path(__file__).resolve().parents[2]


def all_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


@pytest.fixture(params=["fork", "exec"])
def pool(tmp_path: Path, request: pytest.FixtureRequest) -> object:
    with Pool(2, workdir=str(tmp_path / "runs"), lease=2.0, start=request.param) as p:
        yield p


def test_map_starmap_imap_and_imap_unordered(pool: Pool) -> None:
    assert pool.map(sum, [[1, 2], [2, 3], [4, 5]]) == [3, 5, 9]
    assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
    assert list(pool.imap(abs, range(-5, 5), chunksize=3)) == [abs(i) for i in range(-5, 5)]
    assert sorted(pool.imap_unordered(abs, range(-50, 0))) == list(range(1, 51))
    assert pool.map(abs, []) == []
    assert pool.map(str, range(1000), chunksize=7) == [str(i) for i in range(1000)]
    states = [(w.state, w.host == os.uname().nodename) for w in pool.workers]
    assert states == [("alive", True), ("alive", True)]
    assert all(isinstance(w.pid, int) and alive(w.pid) for w in pool.workers)


def test_lambdas_and_closures_travel_by_value(pool: Pool) -> None:
    offset = 10
    assert pool.map(lambda x: x + offset, [1, 2]) == [11, 12]

    def scaled(x: int) -> int:
        return x * offset

    assert pool.map(scaled, [1, 2]) == [10, 20]


def test_pypoolparty_main_functions_and_lambdas_work_in_a_script(tmp_path: Path) -> None:
    """pypoolparty: a function from __main__ gives [None, None] and a lambda hangs."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""\
        from minionize.pool import Pool

        class Point:
            def __init__(self, x):
                self.x = x

        def double(p):
            return Point(p.x * 2)

        if __name__ == "__main__":
            with Pool(2) as pool:
                print([p.x for p in pool.map(double, [Point(1), Point(2)])])
                print(pool.map(lambda x: x * x, [3, 4]))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[2, 4]", "[9, 16]"]


def test_an_unpicklable_function_fails_at_once_in_the_caller(pool: Pool) -> None:
    lock = threading.Lock()
    started = time.monotonic()
    with pytest.raises(PoolError, match="cannot send .* to the workers: TypeError: cannot pickle"):
        pool.map(lambda x: lock, [1])
    assert time.monotonic() - started < 2
    assert pool.map(abs, [-1]) == [1]  # the pool still works


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickle calls Unpicklable(msg): TypeError
        super().__init__(f"{a}/{b}")


def test_pypoolparty_an_exception_is_raised_with_its_type_args_and_traceback(
    tmp_path: Path, pool: Pool
) -> None:
    """pypoolparty: an exception comes back as None in the list. Here: raised, never retried."""
    calls = tmp_path / "calls"

    def check(x: int) -> int:
        with calls.open("a") as handle:
            handle.write(f"{x}\n")
        if x == 3:
            raise ValueError("no threes", x)
        return x

    with pytest.raises(ValueError) as info:
        pool.map(check, range(6), chunksize=1)
    assert info.value.args == ("no threes", 3)
    cause = str(info.value.__cause__)
    assert "Traceback (most recent call last)" in cause and "in check" in cause
    assert calls.read_text().split().count("3") == 1  # never retried


def test_an_exception_that_cannot_be_pickled_back_is_a_remote_error(pool: Pool) -> None:
    def bad(x: int) -> None:
        raise Unpicklable(1, 2)

    with pytest.raises(RemoteError, match=r"Unpicklable: 1/2") as info:
        pool.map(bad, [1])
    assert "raise Unpicklable(1, 2)" in info.value.traceback
    assert pool.map(abs, [-2]) == [2]


def test_a_result_that_cannot_be_pickled_is_a_remote_error(pool: Pool) -> None:
    with pytest.raises(RemoteError, match="the result of item 1 .* cannot be pickled"):
        pool.map(lambda x: threading.Lock() if x else x, [0, 1])


def test_pypoolparty_a_crashing_chunk_runs_again_then_task_lost(tmp_path: Path) -> None:
    """pypoolparty: past its resubmission limit, map() dies with a bare AssertionError."""
    runs = tmp_path / "runs"
    tries = tmp_path / "tries"

    def crash(x: int) -> int:
        if x == 5:
            with tries.open("a") as handle:
                handle.write("try\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    with Pool(2, workdir=str(runs), max_attempts=2, lease=2.0) as pool:
        started = time.monotonic()
        with pytest.raises(TaskLost) as info:
            pool.map(crash, range(8), chunksize=2)
        assert time.monotonic() - started < 30
        error = info.value
        assert isinstance(error, PoolError)
        assert (error.index, error.attempts) == (4, 2)
        assert error.reason == "killed by SIGKILL"
        assert pool.rundir in str(error) and os.path.isdir(pool.rundir)
        assert tries.read_text().split() == ["try", "try"]
        rundir = pool.rundir
    assert not os.path.exists(rundir)  # the error was caught, the pool ended as usual


def test_a_pool_error_that_ends_the_pool_keeps_the_run_directory(tmp_path: Path) -> None:
    def crash(x: int) -> int:
        os.kill(os.getpid(), signal.SIGKILL)
        return x

    kept = r"run directory \(kept if this error ends the pool\): "
    with pytest.raises(TaskLost, match=kept), Pool(1, workdir=str(tmp_path), max_attempts=1) as pool:
        pool.map(crash, [1])
    assert os.path.isdir(os.path.join(pool.rundir, "queue"))  # kept, for a look
    with Pool(1, workdir=str(tmp_path)) as other:
        assert other.map(abs, [-1]) == [1]
    assert os.path.isdir(os.path.join(pool.rundir, "queue"))  # never taken for a leftover


def test_pypoolparty_a_killed_worker_is_replaced_and_map_returns_every_result(tmp_path: Path) -> None:
    """pypoolparty: a worker SIGKILLed without a result makes map() wait forever."""
    marks = tmp_path / "marks"
    marks.mkdir()

    def slow(x: int) -> int:
        (marks / str(x)).write_text(str(os.getppid()))  # the worker minion's pid
        time.sleep(0.3)
        return x * 10

    with Pool(2, workdir=str(tmp_path / "runs"), lease=1.0) as pool:
        killed: list[int] = []

        def victim() -> int:
            """The worker minion of an item that started (0: none yet); a mark just
            created may not hold its pid yet."""
            for mark in marks.iterdir():
                text = mark.read_text()
                if text:
                    return int(text)
            return 0

        def kill_one() -> None:
            wait_for(victim, 30, "a first item to start")
            pid = victim()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        killer = threading.Thread(target=kill_one)
        killer.start()
        started = time.monotonic()
        assert pool.map(slow, range(12), chunksize=2) == [x * 10 for x in range(12)]
        killer.join()
        assert time.monotonic() - started < 40
        states = {w.pid: w.state for w in pool.workers}
        assert states[killed[0]] == "lost"
        assert list(states.values()).count("alive") == 2


def test_the_run_directory_is_bounded_and_removed_after_success(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    counts: list[int] = []
    with Pool(2, workdir=str(runs)) as pool:
        rundir = Path(pool.rundir)
        assert rundir.parent == runs
        assert oct(rundir.stat().st_mode & 0o777) == "0o700"

        def count_files(x: int) -> int:
            return x

        for it in pool.imap(count_files, range(3000), chunksize=1):
            if it % 500 == 0:
                counts.append(len(all_files(rundir)))
        assert max(counts) < 40, counts  # per worker, not per item
    assert list(runs.iterdir()) == []  # workdir as it was


def test_keep_workdir_keeps_it(tmp_path: Path) -> None:
    with Pool(1, workdir=str(tmp_path), keep_workdir=True) as pool:
        assert pool.map(abs, [-1]) == [1]
    assert os.path.isdir(pool.rundir) and os.path.isdir(os.path.join(pool.rundir, "queue"))


def test_pypoolparty_two_pools_started_in_the_same_second_do_not_collide(tmp_path: Path) -> None:
    pools = [Pool(1, workdir=str(tmp_path)), Pool(1, workdir=str(tmp_path))]
    try:
        assert pools[0].rundir != pools[1].rundir
        results: dict[int, list[int]] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, pools[i].map(lambda x, i=i: x + 100 * i, range(20)))) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results == {i: [x + 100 * i for x in range(20)] for i in (0, 1)}
    finally:
        for p in pools:
            p.terminate()


def test_pypoolparty_no_secret_of_the_environment_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pypoolparty writes the whole environment, secrets included, to a world-readable script."""
    monkeypatch.setenv("MY_API_TOKEN", "s3cr3t-t0ken-value")
    with Pool(1, workdir=str(tmp_path), keep_workdir=True) as pool:
        assert pool.map(lambda x: len(os.environ.get("MY_API_TOKEN", "")), [0]) == [18]
    files = all_files(Path(pool.rundir))
    assert files and not [f for f in files if b"s3cr3t-t0ken-value" in f.read_bytes()]
    assert Path(pool.rundir).stat().st_mode & 0o777 == 0o700  # nothing inside is reachable


def test_pickles_are_never_read_from_a_directory_others_can_write(tmp_path: Path) -> None:
    with Pool(1, workdir=str(tmp_path)) as pool:
        os.chmod(pool.rundir, 0o777)
        with pytest.raises(PoolError, match="others can write"):
            pool.map(abs, [1])
        with pytest.raises(PoolError, match="others can write"):
            check_private(pool.rundir)


def test_the_worker_refuses_a_run_directory_others_can_write(tmp_path: Path) -> None:
    rundir = tmp_path / "run"
    rundir.mkdir(mode=0o777)
    os.chmod(rundir, 0o777)
    out = subprocess.run([sys.executable, "-m", "minionize.pool.worker", str(rundir), "--name", "w"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "others can write" in out.stderr


CTRL_C = """\
import os, sys, time
from minionize.pool import Pool

MARKS = sys.argv[1]  # travels with slow (the worker's own sys.argv differs)

def slow(x):
    with open(os.path.join(MARKS, "task-%d" % x), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)

with Pool(2, workdir=sys.argv[2]) as pool:
    with open(os.path.join(sys.argv[1], "workers"), "w") as f:
        f.write(" ".join(str(w.pid) for w in pool.workers))
    pool.map(slow, range(4), chunksize=1)
"""


def test_pypoolparty_ctrl_c_stops_every_worker_and_task_and_removes_the_run(tmp_path: Path) -> None:
    """pypoolparty: Ctrl-C leaves the jobs running."""
    marks, runs = tmp_path / "marks", tmp_path / "runs"
    marks.mkdir()
    runs.mkdir()
    script = tmp_path / "job.py"
    script.write_text(CTRL_C)
    proc = subprocess.Popen([sys.executable, str(script), str(marks), str(runs)],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len([p for p in marks.glob("task-*") if p.read_text()]) == 2, 60,
                 "two tasks to start")
        tasks = [int(p.read_text()) for p in marks.glob("task-*")]
        workers = [int(w) for w in (marks / "workers").read_text().split()]
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - started < 10
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert not [pid for pid in tasks + workers if alive(pid)]
    assert list(runs.iterdir()) == []


def test_close_and_join_let_the_workers_finish(tmp_path: Path) -> None:
    pool = Pool(2, workdir=str(tmp_path))
    assert pool.map(abs, [-3, -4]) == [3, 4]
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(abs, [1])
    pool.join(30)
    assert {w.state for w in pool.workers} == {"finished"}
    assert list(tmp_path.iterdir()) == []


def test_never_hang_when_every_worker_is_lost_and_none_may_replace_them(tmp_path: Path) -> None:
    def die(x: int) -> int:
        os.kill(os.getppid(), signal.SIGKILL)  # kills the worker minion itself
        time.sleep(30)
        return x

    with Pool(1, workdir=str(tmp_path), max_replacements=0, lease=1.0) as pool:
        started = time.monotonic()
        lost = r"every worker was lost .* run directory \(kept if this error ends the pool\): "
        with pytest.raises(PoolError, match=lost) as info:
            pool.map(die, [1])
        assert time.monotonic() - started < 20
        assert pool.rundir in str(info.value)
        assert [w.state for w in pool.workers] == ["lost"]


def test_max_tasks_per_worker_recycles_the_function_process(tmp_path: Path) -> None:
    with Pool(1, workdir=str(tmp_path), max_tasks_per_worker=1) as pool:
        pids = pool.map(lambda x: os.getpid(), range(4), chunksize=1)
    assert len(set(pids)) == 4


def test_the_progress_line_says_done_total_workers_failures_rate_and_eta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Pool(2, workdir=str(tmp_path), progress=True) as pool:
        assert pool.map(lambda x: time.sleep(0.05) or x, range(20), chunksize=2) == list(range(20))
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\r")[-1].strip()
    assert last.startswith("pool: 20/20 items, 2 worker(s) alive, 0 lost, 0 failed, ")
    assert last.endswith("items/s, ETA 0s")


def test_calls_from_two_threads_and_two_imaps_side_by_side_get_their_own_results(pool: Pool) -> None:
    results: dict[int, list[int]] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, pool.map(lambda x, i=i: (x, i), range(300), chunksize=7)))  # type: ignore[misc]
        for i in (0, 1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {i: [(x, i) for x in range(300)] for i in (0, 1, 2)}
    first = pool.imap(lambda x: -x, range(50), chunksize=3)
    second = pool.imap(lambda x: x * 2, range(50), chunksize=4)
    assert list(zip(first, second)) == [(-x, x * 2) for x in range(50)]


def test_a_pool_never_closed_is_cleaned_up_when_the_program_ends(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    script = tmp_path / "forgetful.py"
    script.write_text(textwrap.dedent(f"""\
        from minionize.pool import Pool
        pool = Pool(2, workdir={str(runs)!r})
        print(pool.map(abs, [-1, -2]), " ".join(str(w.pid) for w in pool.workers))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    printed, pids = out.stdout.split("]")
    assert printed == "[1, 2"
    assert not [pid for pid in map(int, pids.split()) if alive(pid)]
    assert list(runs.iterdir()) == []


def test_a_killed_workers_chunk_runs_again_at_once_not_after_its_lease(tmp_path: Path) -> None:
    tries = tmp_path / "tries"

    def kill_my_worker(x: int) -> int:
        if x == 3:
            with tries.open("a") as handle:
                handle.write("try\n")
            os.kill(os.getppid(), signal.SIGKILL)  # the worker minion, not the function
            time.sleep(30)
        return x

    with Pool(2, workdir=str(tmp_path / "runs"), lease=60.0, max_attempts=2) as pool:
        started = time.monotonic()
        assert pool.map(abs, range(4)) == [0, 1, 2, 3]
        with pytest.raises(TaskLost) as info:
            pool.map(kill_my_worker, range(6), chunksize=1)
        assert time.monotonic() - started < 15  # not the 60 s lease, twice
        assert info.value.index == 3 and info.value.attempts == 2
        reason = info.value.reason
        # Whichever sees the death first says so: the pool's supervisor (its worker was
        # killed) or the queue (the lease's holder on this host is gone).
        assert (reason.startswith("worker w") and reason.endswith(" lost: killed by SIGKILL")
                or reason.startswith("lease ended (its minion ended) 2 time(s)")), reason
        assert tries.read_text().split() == ["try", "try"]
        assert pool.map(abs, [-1, -2]) == [1, 2]  # with the replacements
