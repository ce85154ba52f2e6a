"""The minion loop's promise, with an in-memory engine."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Optional

import pytest

from minionize import FuncCallback, ProcessCallback, minionizer
from minionize.callbacks.base import Callback, Outcome, Result, Task
from minionize.config import Settings
from minionize.engines.base import Delivery
from minionize.engines.kit import Calls, Outage, Unreachable
from minionize.minion.run import Minion
from minionize.reporters.base import Reporter, TaskReport
from minionize.testing import MemoryEngine
from tests.services import wait_for


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
    # After a param filled the command, a mapping (it needs --template) is the param's fault.
    engine = MemoryEngine(["ok", {"x": 1}])
    callback = ProcessCallback(["true"])
    code = Minion(callback, engine, settings=settings()).run()
    assert code == 1
    assert engine.dead and "needs --template" in engine.dead[0][1]
    assert [e for e in engine.events if e[1] == "1"] == [("dead", "1", 1)]


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


def run_until_renewed(engine: MemoryEngine, renewals: int = 2) -> None:
    """Run one task that ends once the engine saw ``renewals`` lease renewals: it is done
    if they came (within 10 s), dead if they never did."""

    def task(param: object) -> None:
        wait_for(lambda: engine.extended >= renewals, 10, f"{renewals} lease renewals")

    code = Minion(FuncCallback(task, mode="thread"), engine, settings=settings(max_attempts=1)).run()
    assert engine.dead == [] and code == 0
    assert engine.done == ["a"] and engine.extended >= renewals


def test_leases_are_renewed_while_a_task_runs() -> None:
    run_until_renewed(MemoryEngine(["a"]))


class NoLease(MemoryEngine):
    def lease_renewal_interval(self) -> None:
        return None


def test_an_engine_with_the_old_heartbeat_interval_name_still_gets_its_leases_renewed() -> None:
    with pytest.warns(DeprecationWarning, match="name it lease_renewal_interval"):

        class OldName(NoLease):
            """A third-party engine written before the method had its name (its parent
            has the new name: the old-name override still wins, as it did)."""

            def heartbeat_interval(self) -> float:
                return 0.2

        class OldSuper(NoLease):
            def heartbeat_interval(self) -> Optional[float]:
                return super().heartbeat_interval()

    class NewName(MemoryEngine):
        def lease_renewal_interval(self) -> float:
            return 0.3

    assert OldName().lease_renewal_interval() == 0.2
    assert OldSuper().lease_renewal_interval() is None
    assert NewName().heartbeat_interval() == 0.3  # old callers get the new value
    assert NoLease().heartbeat_interval() is None
    run_until_renewed(OldName(["a"]))


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


class Restarting(MemoryEngine):
    """An endless queue on a server that is down for ``down`` seconds after the first
    param was taken, then needs one more empty answer before its params come again
    (a broker that restarts, then redelivers): through the kit's outage policy."""

    def __init__(self, params: list[object], down: float) -> None:
        super().__init__(params)
        self._calls = Calls(lambda what: contextlib.nullcontext(), Outage("restarting queue", limit=60))
        self.down = down
        self.down_until: Optional[float] = None
        self.answered_empty = False

    def exhausted(self) -> bool:
        return False

    def reachable_since(self) -> Optional[float]:
        return self._calls.reachable_since()

    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        return self._calls("take", lambda: self._take_once(max_count, timeout))

    def _take_once(self, max_count: int, timeout: float) -> list[Delivery]:
        if self.down_until is None and self.done:
            self.down_until = time.monotonic() + self.down
        if self.down_until is not None and time.monotonic() < self.down_until:
            raise Unreachable("the server is restarting")
        if self.down_until is not None and not self.answered_empty:
            self.answered_empty = True
            return []
        return super().take(1, timeout)


def test_idle_time_does_not_count_while_the_engine_cannot_reach_its_server() -> None:
    # The server is down for longer than the idle timeout: an outage, never "empty".
    engine = Restarting(["a", "b", "c"], down=1.5)
    code = Minion(FuncCallback(lambda p: None, mode="thread"), engine,
                  settings=settings(idle_timeout=0.5)).run()
    assert code == 0
    assert sorted(engine.done) == ["a", "b", "c"]  # nothing left behind


def test_an_engine_without_a_server_is_always_reachable() -> None:
    assert MemoryEngine().reachable_since() == 0.0


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


def test_a_command_line_error_gives_the_param_back_stops_the_others_and_raises() -> None:
    from minionize.errors import CommandLineError

    engine = MemoryEngine(["slow", "bad", "never1", "never2"])
    slow_started = threading.Event()

    class Callback_(Callback):
        def run(self, task: Task) -> Result:
            if task.param == "slow":
                slow_started.set()
                while task.stop_reason is None:
                    time.sleep(0.01)
                return Result(Outcome.OK, exit_code=0)  # exits 0 on SIGTERM: not done
            assert slow_started.wait(10)
            raise CommandLineError("the template needs {b}, which no param has")

    minion = Minion(Callback_(), engine, settings=settings(concurrency=2, grace_period=1.0))
    with pytest.raises(CommandLineError, match="needs"):
        minion.run()
    assert engine.done == [] and engine.dead == []
    assert sorted(e[0] for e in engine.events) == ["release", "release"]
    assert engine.status()["todo"] == 4  # nothing consumed, no attempt counted


def halting(rule: str, **overrides: object) -> Settings:
    return Settings.from_env({"MINION_HALT": rule}, **overrides)


def test_halt_soon_lets_running_tasks_finish_and_takes_nothing_new() -> None:
    engine = MemoryEngine(["bad", "slow", *range(10)])
    slow_started = threading.Event()

    def f(param: object) -> None:
        if param == "slow":
            slow_started.set()
            time.sleep(0.5)
        elif param == "bad":
            assert slow_started.wait(10)
            raise ValueError("no good")

    code = Minion(FuncCallback(f, mode="thread"), engine,
                  settings=halting("soon,fail=1", concurrency=2, max_attempts=1)).run()
    assert code == 3
    assert engine.done == ["slow"]
    assert [p for p, _ in engine.dead] == ["bad"]
    assert engine.status()["todo"] == 10


def test_halt_now_stops_running_tasks_and_gives_them_back() -> None:
    engine = MemoryEngine(["bad", "slow", *range(10)])
    slow_started = threading.Event()

    class Cb(Callback):
        def run(self, task: Task) -> Result:
            if task.param == "slow":
                slow_started.set()
                while task.stop_reason is None:
                    time.sleep(0.01)
                return Result(Outcome.FAILED, reason="killed by SIGTERM", exit_code=-15)
            assert slow_started.wait(10)
            return Result(Outcome.FAILED, reason="exit code 1", exit_code=1)

    code = Minion(Cb(), engine, settings=halting("now,fail=1", concurrency=2)).run()
    assert code == 3
    assert ("retry", "0", 1) in engine.events and ("release", "1", 1) in engine.events
    assert engine.done == [] and engine.dead == []
    assert engine.status()["todo"] == 12


def test_halt_counts_failed_attempts_as_a_percentage() -> None:
    engine = MemoryEngine(["ok1", "bad1", "ok2", "bad2", *range(20)])

    def f(param: object) -> None:
        if str(param).startswith("bad"):
            raise ValueError("no good")

    code = Minion(FuncCallback(f), engine,
                  settings=halting("soon,fail=50%", max_attempts=1)).run()
    assert code == 3
    assert engine.done == ["ok1", "ok2"] and len(engine.dead) == 2
    assert engine.status()["todo"] == 20


@pytest.mark.parametrize("rule", ["sometimes", "now,fail=0", "soon,fail=x", "now,fail=150%",
                                  "now,fail=1.5", "later,fail=1"])
def test_bad_halt_rules_are_config_errors(rule: str) -> None:
    from minionize.errors import ConfigError

    with pytest.raises(ConfigError, match="MINION_HALT"):
        Minion(FuncCallback(print), MemoryEngine(), settings=halting(rule))


def test_the_loop_logs_its_lines_and_prints_nothing(caplog: pytest.LogCaptureFixture,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    engine = MemoryEngine(["bad"])

    def f(param: object) -> None:
        raise ValueError("no good")

    with caplog.at_level(logging.WARNING, logger="minionize"):
        code = Minion(FuncCallback(f, mode="thread"), engine,
                      settings=halting("soon,fail=1", max_attempts=1)).run()
    assert code == 3
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("minionize.minion", 'dead letter: param "bad" after attempt 1: ValueError: no good'),
        ("minionize.minion", "--halt soon,fail=1: 1 of 1 attempts failed: the minion halts; "
                             "it takes no new param and lets its running tasks finish"),
    ]
    assert capfd.readouterr() == ("", "")


def test_a_minion_stopped_by_a_signal_exits_with_minion_stopped_exit() -> None:
    # A Kubernetes Job counts a pod that exits 0 as the work done: its minion, stopped
    # before the queue was drained, needs a code of its own that the Job replaces.
    import signal as signals
    import threading

    from minionize import FuncCallback
    from minionize.config import Settings
    from minionize.errors import ConfigError
    from minionize.minion.run import Minion
    from minionize.testing import MemoryEngine

    started = threading.Event()

    def task(param: int) -> None:
        started.set()
        threading.Event().wait(0.05)

    for value, expected in (("75", 75), (None, 0)):
        started.clear()
        engine = MemoryEngine(range(1000))
        env = {} if value is None else {"MINION_STOPPED_EXIT": value}
        minion = Minion(FuncCallback(task, mode="thread"), engine, settings=Settings.from_env(env))
        def stop(minion: Minion = minion) -> None:
            if started.wait(10):
                minion.stopping.on_signal(signals.SIGTERM, None)

        stopper = threading.Thread(target=stop)
        stopper.start()
        assert minion.run() == expected
        stopper.join()
        assert engine.in_flight == {} and len(engine.done) < 1000
    # A queue drained is exit 0 whatever MINION_STOPPED_EXIT says.
    drained = MemoryEngine(range(3))
    assert Minion(FuncCallback(task, mode="thread"), drained,
                  settings=Settings.from_env({"MINION_STOPPED_EXIT": "75"})).run() == 0
    with pytest.raises(ConfigError, match="MINION_STOPPED_EXIT"):
        Settings.from_env({"MINION_STOPPED_EXIT": "300"})


def test_a_stop_during_an_outage_ends_the_minion_at_once() -> None:
    # The Kubernetes run showed it: with its Redis down, an idle minion took about 33 s
    # to exit on SIGTERM (its take rode the outage out first). A take gives up when the
    # minion stops; a settle is still ridden out.
    import signal as signals

    from minionize.engines.kit import Interrupted

    class Away(Restarting):
        def take(self, max_count: int, timeout: float) -> list[Delivery]:
            try:
                return self._calls("take", lambda: self._take_once(max_count, timeout),
                                   interruptible=True)
            except Interrupted:
                return []

        def stop_waiting(self) -> None:
            self._calls.outage.stopping.set()

    engine = Away(["a"], down=600)
    minion = Minion(FuncCallback(lambda p: None, mode="thread"), engine, settings=settings())
    threading.Timer(1.0, minion.stopping.on_signal, (signals.SIGTERM, None)).start()
    started = time.monotonic()
    assert minion.run() == 0
    assert time.monotonic() - started < 3  # not the outage's 60 s
    assert engine.done == ["a"] and engine.in_flight == {}
