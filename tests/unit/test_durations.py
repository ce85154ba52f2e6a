"""GNU parallel's durations (30, 1.5s, 2m, 2h30m) and the X% task timeout (issue 22,
item 6)."""

from __future__ import annotations

import pytest

from minionize.callbacks.base import StopReason, Task
from minionize.config import Settings
from minionize.durations import parse_duration
from minionize.engines.base import Delivery
from minionize.errors import ConfigError
from minionize.minion.timeouts import MedianTimeout


@pytest.mark.parametrize("text, seconds", [
    ("30", 30.0), ("0.5", 0.5), ("1.5s", 1.5), ("1m", 60.0), ("2h30m", 9000.0),
    ("1d3.5h16.6m4s", 86400 + 3.5 * 3600 + 16.6 * 60 + 4), (" 2m ", 120.0), (".5m", 30.0),
])
def test_a_duration_is_seconds_or_numbers_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "1x", "1 m", "2m30", "1M", "1.2.3s", "-1m", "h1"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_every_duration_setting_takes_units() -> None:
    settings = Settings.from_env({"MINION_TASK_TIMEOUT": "2h30m", "MINION_GRACE_PERIOD": "1m",
                                  "MINION_LEASE": "5m", "MINION_IDLE_TIMEOUT": "1.5s"})
    assert (settings.task_timeout, settings.grace_period, settings.lease,
            settings.idle_timeout) == (9000.0, 60.0, 300.0, 1.5)
    with pytest.raises(ConfigError, match=r"MINION_LEASE='5x' must be a positive duration"):
        Settings.from_env({"MINION_LEASE": "5x"})
    with pytest.raises(ConfigError, match=r"MINION_TASK_TIMEOUT='1x' is not a duration"):
        Settings.from_env({"MINION_TASK_TIMEOUT": "1x"})


@pytest.mark.parametrize("value", ["0%", "-5%", "x%", "%", "inf%"])
def test_a_percent_timeout_must_be_a_positive_percentage(value: str) -> None:
    with pytest.raises(ConfigError, match="is not a percentage"):
        Settings.from_env({"MINION_TASK_TIMEOUT": value})


def test_a_percent_timeout_is_no_fixed_timeout() -> None:
    settings = Settings.from_env({"MINION_TASK_TIMEOUT": "200%"})
    assert settings.task_timeout is None
    timeout = MedianTimeout.from_settings(settings)
    assert timeout is not None and timeout.percent == 200
    assert MedianTimeout.from_settings(Settings.from_env({"MINION_TASK_TIMEOUT": "5"})) is None
    assert MedianTimeout.from_settings(Settings.from_env({})) is None


def task(started: float) -> Task:
    return Task(Delivery(param=1, id="1"), started=started)


def test_no_limit_until_three_tasks_are_done_then_the_median_times_the_percent() -> None:
    timeout = MedianTimeout(200)
    running = task(100.0)
    for seconds in (1.0, 9.0):
        timeout.record(seconds)
        timeout.apply([running])
        assert timeout.limit() is None and running.deadline is None
    timeout.record(2.0)
    assert timeout.median() == 2.0 and timeout.limit() == 4.0
    timeout.apply([running])
    assert running.deadline == 104.0
    timeout.record(3.0)  # an even count: the mean of the two middle values
    assert timeout.median() == 2.5


def test_the_median_of_many_run_times() -> None:
    import random
    import statistics

    times = [random.random() * 10 for _ in range(1001)]
    timeout = MedianTimeout(100)
    for seconds in times:
        timeout.record(seconds)
    assert timeout.median() == statistics.median(times)


def test_only_done_tasks_count_and_a_timed_out_one_names_the_rule() -> None:
    timeout = MedianTimeout(150)
    failed = task(0.0)
    assert timeout.settled(failed, done=False, reason="exit code 1") == "exit code 1"
    assert timeout.median() is None and timeout._count == 0
    for _ in range(3):
        timeout.settled(task(0.0), done=True, reason="")
    assert timeout._count == 3
    stopped = task(0.0)
    stopped.stop_reason = StopReason.TIMEOUT
    reason = timeout.settled(stopped, done=False, reason="timed out after 2s")
    assert reason.startswith("timed out after 2s (150% of the median run time ")


def test_minion_status_lost_after_takes_a_duration() -> None:
    from minionize.cli.status import build_parser

    assert build_parser("minion-status", watch=False).parse_args(
        ["--lost-after", "1.5m"]).lost_after == 90.0
