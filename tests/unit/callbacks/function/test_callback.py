"""Function tasks run in worker processes: parallel, stoppable, crash-proof, recycled."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import minionize
from minionize import FuncCallback
from minionize.config import Settings
from minionize.minion.run import Minion
from minionize.testing import MemoryEngine
from tests.services import alive, wait_for


def settings(**overrides: object) -> Settings:
    return Settings.from_env({}, **overrides)


def state(pid: int) -> str:
    """The process's state letter in /proc ("Z": a zombie), "" when gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0]
    except OSError:
        return ""


def dead_unreaped(pid: int) -> bool:
    """A zombie whose every thread is gone (only then can its parent reap it)."""
    try:
        return state(pid) == "Z" and os.listdir(f"/proc/{pid}/task") == [str(pid)]
    except OSError:
        return False


def test_two_slots_run_the_function_at_the_same_time_in_two_processes(tmp_path: Path) -> None:
    def f(param: int) -> None:
        (tmp_path / f"{param}.pid").write_text(str(os.getpid()))
        # A barrier across processes: each waits until the other one has started.
        deadline = time.monotonic() + 10
        while len(list(tmp_path.glob("*.pid"))) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("the other task never ran at the same time")
            time.sleep(0.01)

    engine = MemoryEngine([0, 1])
    assert Minion(FuncCallback(f), engine, settings=settings(concurrency=2)).run() == 0
    pids = {int(p.read_text()) for p in tmp_path.glob("*.pid")}
    assert sorted(engine.done) == [0, 1]
    assert len(pids) == 2 and os.getpid() not in pids


def test_a_timeout_stops_the_function_and_fails_the_attempt(tmp_path: Path) -> None:
    def slow(param: str) -> None:
        (tmp_path / "pid").write_text(str(os.getpid()))
        time.sleep(60)

    engine = MemoryEngine(["x"])
    started = time.monotonic()
    code = Minion(FuncCallback(slow), engine,
                  settings=settings(task_timeout=0.5, max_attempts=1, grace_period=1.0)).run()
    assert time.monotonic() - started < 10
    assert code == 1
    assert engine.dead[0][1] == "timed out after 0.5s (killed by SIGTERM)"
    assert not alive(int((tmp_path / "pid").read_text()))


def test_a_function_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    def stubborn(param: str) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)

    engine = MemoryEngine(["x"])
    started = time.monotonic()
    Minion(FuncCallback(stubborn), engine,
           settings=settings(task_timeout=0.3, max_attempts=1, grace_period=0.5)).run()
    assert time.monotonic() - started < 10
    assert engine.dead[0][1] == "timed out after 0.3s (killed by SIGKILL)"


def test_a_graceful_stop_stops_the_function_and_gives_the_param_back(tmp_path: Path) -> None:
    def slow(param: str) -> None:
        (tmp_path / "pid").write_text(str(os.getpid()))
        time.sleep(60)

    engine = MemoryEngine(["a"])
    minion = Minion(FuncCallback(slow), engine, settings=settings(grace_period=2.0))
    thread = threading.Thread(target=lambda: setattr(minion, "code", minion.run()))
    thread.start()
    wait_for(lambda: (tmp_path / "pid").exists(), 10, "the function to start")
    started = time.monotonic()
    minion.stop()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert minion.code == 0  # type: ignore[attr-defined]
    assert engine.events == [("release", "0", 1)] and engine.status()["todo"] == 1
    assert not alive(int((tmp_path / "pid").read_text()))


def segfault(param: object) -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


@pytest.mark.parametrize(
    ("crash", "reason"),
    [
        (segfault, "killed by SIGSEGV"),
        (lambda p: os._exit(3), "exit code 3"),
        # What the OOM killer does.
        (lambda p: os.kill(os.getpid(), signal.SIGKILL), "killed by SIGKILL"),
    ],
    ids=["segfault", "os._exit", "oom-kill"],
)
def test_a_crash_is_a_failed_attempt_with_its_reason_not_a_dead_minion(crash: object, reason: str) -> None:
    def f(param: str) -> str:
        if param == "crash":
            crash(param)  # type: ignore[operator]
        return param

    engine = MemoryEngine(["crash", "fine", "also fine"])
    code = Minion(FuncCallback(f), engine, settings=settings(max_attempts=2)).run()
    assert code == 1
    assert engine.dead == [("crash", reason)]
    assert sorted(engine.done) == ["also fine", "fine"]
    assert [e[0] for e in engine.events if e[1] == "0"] == ["retry", "dead"]


def test_an_exception_is_a_failed_attempt_with_its_traceback() -> None:
    def f(param: int) -> None:
        raise KeyError(param)

    callback = FuncCallback(f)
    engine = MemoryEngine([7])
    assert Minion(callback, engine, settings=settings(max_attempts=1)).run() == 1
    assert engine.dead == [(7, "KeyError: 7")]


def test_workers_are_recycled_after_max_tasks_per_worker(tmp_path: Path) -> None:
    def f(param: int) -> None:
        (tmp_path / f"{param}").write_text(str(os.getpid()))

    engine = MemoryEngine(range(6))
    callback = FuncCallback(f, max_tasks_per_worker=2)
    assert Minion(callback, engine, settings=settings()).run() == 0
    pids = [int((tmp_path / str(i)).read_text()) for i in range(6)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]
    assert callback.worker_pids() == []  # every worker is gone after the run


def test_a_worker_is_reused_between_params_without_recycling(tmp_path: Path) -> None:
    def f(param: int) -> None:
        (tmp_path / f"{param}").write_text(str(os.getpid()))

    engine = MemoryEngine(range(5))
    assert Minion(FuncCallback(f), engine, settings=settings()).run() == 0
    assert len({(tmp_path / str(i)).read_text() for i in range(5)}) == 1


def test_closures_lambdas_and_unpicklable_state_work(tmp_path: Path) -> None:
    lock = threading.Lock()  # cannot be pickled: the worker is forked, nothing is
    out = tmp_path / "out"

    def f(param: int) -> None:
        with lock, out.open("a") as handle:
            handle.write(f"{param * 2}\n")

    engine = MemoryEngine([1, 2])
    assert Minion(FuncCallback(f), engine, settings=settings()).run() == 0
    assert sorted(out.read_text().split()) == ["2", "4"]


def test_the_task_decorator_runs_the_function_in_a_worker_process(tmp_path: Path) -> None:
    @minionize.task(max_tasks_per_worker=1)
    def simulate(param: int) -> int:
        (tmp_path / str(param)).write_text(str(os.getpid()))
        return param

    assert simulate(3) == 3  # still a plain function
    engine = MemoryEngine([1, 2])
    assert simulate.run(engine=engine, max_attempts=1) == 0
    pids = {int((tmp_path / str(i)).read_text()) for i in (1, 2)}
    assert len(pids) == 2 and os.getpid() not in pids


def test_thread_mode_keeps_the_old_behaviour() -> None:
    seen: list[int] = []
    engine = MemoryEngine([1, 2])
    assert Minion(FuncCallback(seen.append, mode="thread"), engine, settings=settings()).run() == 0
    assert sorted(seen) == [1, 2]


def test_the_return_value_comes_back_when_asked() -> None:
    from minionize.callbacks.base import Task
    from minionize.engines.base import Delivery

    callback = FuncCallback(lambda p: {"square": p * p})
    callback.keep_value = True
    try:
        result, value = callback.call(Task(Delivery(4, "0")))
        assert result.ok and value == {"square": 16}
        result, value = callback.call(Task(Delivery(5, "1")))
        assert value == {"square": 25}
    finally:
        callback.teardown()


def test_a_forked_worker_does_not_share_the_minions_queue_lock(tmp_path: Path) -> None:
    """The sweep queue's lock is an flock on a descriptor kept open per process: a forked
    worker must take its own, or it would 'hold' the lock its minion holds."""
    from minionize.callbacks.base import Task
    from minionize.engines.base import Delivery
    from minionize.engines.sweep.engine import SweepEngine
    from minionize.engines.sweep.lock import queue_lock

    queue = str(tmp_path / "queue")
    SweepEngine(queue).fill([1])
    lock = queue_lock(queue)
    callback = FuncCallback(lambda p: SweepEngine(queue).status()["todo"])
    callback.keep_value = True
    outcome: list[object] = []
    lock.acquire()
    try:
        thread = threading.Thread(target=lambda: outcome.append(callback.call(Task(Delivery(0, "0")))))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and outcome == []  # the worker waits for our lock
    finally:
        lock.release()
    thread.join(10)
    callback.teardown()
    assert outcome and outcome[0][1] == 1  # type: ignore[index]


def test_a_worker_that_died_while_idle_costs_no_attempt() -> None:
    from minionize.callbacks.base import Task
    from minionize.engines.base import Delivery

    callback = FuncCallback(lambda p: p + 1)
    callback.keep_value = True
    try:
        assert callback.call(Task(Delivery(1, "0")))[1] == 2
        [pid] = callback.worker_pids()
        os.kill(pid, signal.SIGKILL)  # the OOM killer, between two params
        wait_for(lambda: dead_unreaped(pid), 10, "the idle worker to die (a zombie not reaped yet)")
        result, value = callback.call(Task(Delivery(2, "1")))
        assert result.ok and value == 3
        assert callback.worker_pids() != [pid]
    finally:
        callback.teardown()
