"""Take no param the walltime cannot finish: the decision alone, the estimate, the loop."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from minionize import FuncCallback
from minionize.config import Settings
from minionize.errors import ConfigError
from minionize.minion.run import Minion
from minionize.minion.time_left import SAFETY, RunTimes, TimeLeft, may_take
from minionize.testing import MemoryEngine
from tests.unit.reporters.test_run_times import write_report


def test_a_task_is_taken_when_it_and_the_grace_period_fit() -> None:
    assert may_take(left=100, expected=60, reserve=10)
    assert may_take(left=70, expected=60, reserve=10)
    assert not may_take(left=69, expected=60, reserve=10)
    assert not may_take(left=-5, expected=1, reserve=0)


def test_without_an_estimate_it_takes_while_more_than_the_grace_period_is_left() -> None:
    assert may_take(left=11, expected=None, reserve=10)
    assert not may_take(left=10, expected=None, reserve=10)


def test_the_estimate_is_a_high_percentile_of_the_recent_run_times() -> None:
    times = RunTimes(recent=10, percentile=90)
    assert times.estimate() is None
    for seconds in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]:
        times.record(seconds)
    assert times.estimate() == 9
    for _ in range(10):  # the old ones are forgotten
        times.record(2)
    assert times.estimate() == 2


def test_time_left_learns_then_refuses_for_good(caplog: pytest.LogCaptureFixture) -> None:
    gate = TimeLeft(ends=time.monotonic() + 30, reserve=5)
    assert gate.task_time() is None and gate.admits()
    gate.ran(10)
    assert gate.task_time() == 10 * SAFETY
    assert gate.admits()  # 30 s left >= 12.5 + 5
    gate.ends = time.monotonic() + 15
    with caplog.at_level(logging.WARNING, "minionize.minion"):
        assert not gate.admits()
    assert "s left, tasks take about 12 s, grace period 5 s: taking no more" in caplog.text
    gate.ends = time.monotonic() + 1000
    assert not gate.admits()


def test_the_expected_duration_given_wins_over_the_learned_one() -> None:
    gate = TimeLeft(ends=time.monotonic() + 30, reserve=0, expected=40)
    assert not gate.admits()
    gate = TimeLeft(ends=time.monotonic() + 30, reserve=0, expected=20)
    gate.ran(100)
    assert gate.task_time() == 20 and gate.admits()


def test_a_minion_stops_taking_before_its_walltime_and_gives_back_untouched() -> None:
    engine = MemoryEngine(range(40))
    ran: list[int] = []

    def task(param: int) -> None:
        time.sleep(0.2)
        ran.append(param)

    settings = Settings.from_env({"MINION_WALLTIME": "1.1", "MINION_GRACE_PERIOD": "0.1",
                                  "MINION_CONCURRENCY": "2"})
    started = time.monotonic()
    code = Minion(FuncCallback(task, mode="thread"), engine, settings=settings).run()
    took = time.monotonic() - started
    assert code == 0
    assert 2 <= len(ran) < 12 and took < 1.1
    assert sorted(engine.done) == sorted(ran)
    assert engine.in_flight == {}
    assert not engine.dead and not [e for e in engine.events if e[0] == "retry"]
    left = engine.take(100, 0)
    assert len(left) == 40 - len(ran) and all(d.attempt == 1 for d in left)


def test_no_walltime_no_gate() -> None:
    assert TimeLeft.from_settings(Settings.from_env({})) is None
    assert TimeLeft.from_settings(Settings.from_env({"MINION_WALLTIME": "none",
                                                     "SLURM_JOB_ID": "1"})) is None


def test_a_new_minion_knows_how_long_the_queues_tasks_take_from_its_reports(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The minions before it ran tasks of about 4 s; with 3 s left it takes nothing,
    # where a minion that only learns from its own tasks would start one.
    sweeps = str(tmp_path / "sweeps")
    write_report(tmp_path / "reports", 1, {"EXECO_PERSISTENCE_DIR": sweeps},
                 [("done", 100.0 + 5 * n, 4.0) for n in range(10)])
    env = {"MINION_ENGINE": "sweep", "EXECO_PERSISTENCE_DIR": sweeps, "MINION_WALLTIME": "3",
           "MINION_GRACE_PERIOD": "0.5", "MINION_REPORTER": "json",
           "REPORTER_JSON_DIRECTORY": str(tmp_path / "reports")}
    caplog.set_level(logging.INFO, "minionize.minion")
    limit = TimeLeft.from_settings(Settings.from_env(env))
    assert limit is not None and limit.task_time() == 4.0 * SAFETY
    assert "tasks of this queue take about 5.0 s" in caplog.text
    assert not limit.admits()
    # Another queue's reports, or no JSON reports, say nothing of this one.
    other = TimeLeft.from_settings(Settings.from_env(
        {**env, "EXECO_PERSISTENCE_DIR": str(tmp_path / "other")}))
    assert other is not None and other.task_time() is None and other.admits()
    unreported = TimeLeft.from_settings(Settings.from_env({**env, "MINION_REPORTER": "null"}))
    assert unreported is not None and unreported.task_time() is None
    # The expected duration given wins.
    given = TimeLeft.from_settings(Settings.from_env({**env, "MINION_EXPECTED_DURATION": "1"}))
    assert given is not None and given.task_time() == 1.0 and given.admits()


def test_the_walltime_lead_is_time_the_minion_does_not_plan_for(
        caplog: pytest.LogCaptureFixture) -> None:
    # oarsub --checkpoint 120 signals the job 120 s before its walltime: with 100 s left
    # and that lead, the minion is already past the point where it can start a task.
    env = {"OAR_JOB_WALLTIME_SECONDS": "100", "OAR_JOB_ID": "7", "MINION_GRACE_PERIOD": "5"}
    caplog.set_level(logging.WARNING, "minionize.minion")
    late = TimeLeft.from_settings(Settings.from_env({**env, "MINION_WALLTIME_LEAD": "120"}))
    assert late is not None and not late.admits()
    assert "to be done 120 s before its end" in caplog.text
    plain = TimeLeft.from_settings(Settings.from_env(env))
    assert plain is not None and plain.admits()
    with pytest.raises(ConfigError, match="MINION_WALLTIME_LEAD"):
        Settings.from_env({"MINION_WALLTIME_LEAD": "soon"})
