"""The minion loop's promise, with an in-memory engine."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from minionize import FuncCallback, ProcessCallback, minionizer
from minionize.callbacks.base import Callback, Outcome, Result, Task
from minionize.config import Settings
from minionize.engines.base import Delivery
from minionize.minion import Minion
from minionize.reporters.base import Reporter, TaskReport
from minionize.testing import MemoryEngine


def settings(**overrides: object) -> Settings:
    return Settings.from_env({}, **overrides)


class Recorder(Reporter):
    def __init__(self) -> None:
        self.reports: list[TaskReport] = []
        self.lock = threading.Lock()

    def task_finished(self, report: TaskReport) -> None:
        with self.lock:
            self.reports.append(report)


def test_success_is_acked_and_exit_code_is_zero() -> None:
    engine = MemoryEngine(range(5))
    seen: list[int] = []
    code = Minion(FuncCallback(seen.append, mode="thread"), engine, settings=settings()).run()
    assert code == 0
    assert sorted(engine.done) == [0, 1, 2, 3, 4]
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert engine.dead == []


def test_failure_is_retried_then_dead_lettered_never_done() -> None:
    engine = MemoryEngine(["bad", "good"])
    calls: list[str] = []

    def f(param: str) -> None:
        calls.append(param)
        if param == "bad":
            raise ValueError("no good")

    code = Minion(FuncCallback(f, mode="thread"), engine, settings=settings(max_attempts=3)).run()
    assert code == 1
    assert engine.done == ["good"]
    assert engine.dead == [("bad", "ValueError: no good")]
    assert calls.count("bad") == 3
    assert [e for e in engine.events if e[1] == "0"] == [
        ("retry", "0", 1), ("retry", "0", 2), ("dead", "0", 3)
    ]


def test_rejected_param_is_dead_lettered_at_once() -> None:
    engine = MemoryEngine([{"x": 1}])
    callback = ProcessCallback(["echo"])  # a mapping needs --template
    code = Minion(callback, engine, settings=settings()).run()
    assert code == 1
    assert engine.dead and "needs --template" in engine.dead[0][1]
    assert engine.events == [("dead", "0", 1)]


def test_undecodable_delivery_is_dead_lettered_without_running() -> None:
    engine = MemoryEngine()
    engine._todo.append(Delivery("{oops", "7", error="not JSON"))
    ran: list[object] = []
    assert Minion(FuncCallback(ran.append, mode="thread"), engine, settings=settings()).run() == 1
    assert ran == [] and engine.dead == [("{oops", "not JSON")]


def test_concurrency_runs_that_many_tasks_at_once() -> None:
    engine = MemoryEngine(range(8))
    barrier = threading.Barrier(4, timeout=10)
    peak = {"now": 0, "max": 0}
    lock = threading.Lock()

    def f(param: int) -> None:
        with lock:
            peak["now"] += 1
            peak["max"] = max(peak["max"], peak["now"])
        barrier.wait()  # fails (BrokenBarrierError) unless 4 run at the same time
        with lock:
            peak["now"] -= 1

    assert Minion(FuncCallback(f, mode="thread"), engine, settings=settings(concurrency=4)).run() == 0
    assert peak["max"] == 4
    assert sorted(engine.done) == list(range(8))


def test_process_timeout_kills_the_group_and_fails_the_attempt() -> None:
    engine = MemoryEngine(["x"])
    callback = ProcessCallback([sys.executable, "-c", "import time; time.sleep(30)"])
    started = time.monotonic()
    code = Minion(callback, engine, settings=settings(task_timeout=0.5, max_attempts=1,
                                                      grace_period=1.0)).run()
    assert code == 1
    assert time.monotonic() - started < 10
    assert engine.dead and engine.dead[0][1].startswith("timed out after 0.5s")


def test_stop_releases_running_params_without_counting_an_attempt() -> None:
    engine = MemoryEngine(["a"])
    started = threading.Event()

    class Slow(Callback):
        def run(self, task: Task) -> Result:
            started.set()
            while task.stop_reason is None:
                time.sleep(0.01)
            return Result(Outcome.FAILED, reason="interrupted")

    minion = Minion(Slow(), engine, settings=settings(grace_period=1.0))
    thread = threading.Thread(target=lambda: setattr(minion, "code", minion.run()))
    thread.start()
    assert started.wait(10)
    minion.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert minion.code == 0  # type: ignore[attr-defined]
    assert engine.events == [("release", "0", 1)]
    assert engine.done == [] and engine.status()["todo"] == 1


def test_leases_are_extended_while_a_task_runs() -> None:
    engine = MemoryEngine(["a"])
    Minion(FuncCallback(lambda p: time.sleep(0.7)), engine, settings=settings()).run()
    assert engine.extended >= 2


def test_reporter_gets_every_outcome() -> None:
    engine = MemoryEngine(["ok", "ko"])
    recorder = Recorder()

    def f(param: str) -> None:
        if param == "ko":
            raise RuntimeError("boom")

    Minion(FuncCallback(f), engine, recorder, settings(max_attempts=2)).run()
    outcomes = sorted((r.param, r.attempt, r.outcome) for r in recorder.reports)
    assert outcomes == [("ko", 1, "retry"), ("ko", 2, "dead"), ("ok", 1, "done")]
    dead = next(r for r in recorder.reports if r.outcome == "dead")
    assert "RuntimeError: boom" in dead.stderr_tail


def test_idle_timeout_ends_a_minion_on_an_endless_queue() -> None:
    class Endless(MemoryEngine):
        def exhausted(self) -> bool:
            return False

    started = time.monotonic()
    code = Minion(FuncCallback(print), Endless(), settings=settings(idle_timeout=0.3)).run()
    assert code == 0
    assert 0.3 <= time.monotonic() - started < 5


def test_minionizer_reads_env_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINION_MAX_ATTEMPTS", "7")
    minion = minionizer(FuncCallback(print), engine=MemoryEngine(), concurrency=3)
    assert minion.settings.max_attempts == 7
    assert minion.settings.concurrency == 3


def test_a_failing_queue_stops_the_minion_with_an_engine_error() -> None:
    from minionize.errors import EngineError

    class Broken(MemoryEngine):
        calls = 0

        def take(self, max_count: int, timeout: float) -> list[Delivery]:
            Broken.calls += 1
            if Broken.calls > 1:
                raise ConnectionError("server gone")
            return super().take(1, timeout)

    engine = Broken(["a", "b"])
    minion = Minion(FuncCallback(lambda p: time.sleep(0.3), mode="thread"), engine,
                    settings=settings(concurrency=2))
    with pytest.raises(EngineError, match="server gone"):
        minion.run()
    # The param it was running finished and was acked; nothing was lost.
    assert engine.done == ["a"] and engine.status()["todo"] == 1
