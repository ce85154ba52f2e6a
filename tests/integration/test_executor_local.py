"""minionize.pool.Executor on local workers: what CPython's tests do not ask (a call lost
for good, a broken executor, the workers' output, an argument that cannot be sent)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from minionize.pool import BrokenPoolError, Executor, PoolError, TaskLost

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="minionize's pool runs on Linux")


def killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fails() -> None:
    raise ValueError("no start")


def test_a_call_lost_for_good_is_a_task_lost_on_its_own_future(tmp_path: Path) -> None:
    with Executor(2, workdir=str(tmp_path), max_attempts=2) as executor:
        lost = executor.submit(killed)
        others = [executor.submit(pow, 2, i) for i in range(10)]
        assert isinstance(lost.exception(timeout=60), TaskLost)
        assert [f.result(timeout=60) for f in others] == [2 ** i for i in range(10)]
        assert executor.submit(abs, -3).result(timeout=60) == 3
    assert list(tmp_path.iterdir()) == []


def test_workers_that_cannot_start_break_the_executor(tmp_path: Path) -> None:
    executor = Executor(1, initializer=fails, workdir=str(tmp_path))
    future = executor.submit(abs, -1)
    error = future.exception(timeout=60)
    assert isinstance(error, BrokenPoolError)
    assert isinstance(error, concurrent.futures.process.BrokenProcessPool) and isinstance(error, PoolError)
    assert "ValueError: no start" in str(error)
    with pytest.raises(BrokenPoolError):
        executor.submit(abs, -1)
    executor.shutdown()


def test_an_argument_that_cannot_be_sent_fails_its_future(tmp_path: Path) -> None:
    with Executor(1, workdir=str(tmp_path)) as executor:
        assert isinstance(executor.submit(id, threading.Lock()).exception(timeout=60), TypeError)
        assert executor.submit(abs, -2).result(timeout=60) == 2


def test_map_with_chunks_keeps_the_order_and_raises_in_turn(tmp_path: Path) -> None:
    with Executor(2, workdir=str(tmp_path)) as executor:
        assert list(executor.map(pow, range(20), range(20), chunksize=7)) == [pow(x, x) for x in range(20)]
        # A chunk's error is the whole chunk's, as with ProcessPoolExecutor.
        results = executor.map(divmod, [1, 1, 1, 1], [1, 1, 0, 1], chunksize=2)
        assert [next(results), next(results)] == [(1, 0), (1, 0)]
        with pytest.raises(ZeroDivisionError):
            next(results)
        with pytest.raises(ValueError):
            executor.map(abs, [1], chunksize=0)


def test_the_workers_print_to_the_callers_output_and_the_program_waits_for_them(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""\
        import time
        from minionize.pool import Executor

        def late(x):
            time.sleep(0.3)
            print("from the worker", x, flush=True)

        if __name__ == "__main__":
            executor = Executor(2)
            executor.submit(late, 1)
            executor.submit(lambda: print("lambda", flush=True)).result()
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert sorted(out.stdout.splitlines()) == ["from the worker 1", "lambda"]
