from __future__ import annotations

import pytest

from minionize.config import Settings, parse_concurrency
from minionize.errors import ConfigError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.engine, s.reporter, s.concurrency, s.max_attempts) == ("sweep", "null", 1, 3)
    assert s.task_timeout is None and s.grace_period == 10.0 and s.lease == 300.0
    assert not s.dry and not s.wait


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MINION_CONCURRENCY", "abc"),
        ("MINION_CONCURRENCY", "0"),
        ("MINION_MAX_ATTEMPTS", "x"),
        ("MINION_MAX_ATTEMPTS", "0"),
        ("MINION_TASK_TIMEOUT", "soon"),
        ("MINION_GRACE_PERIOD", "-1"),
        ("MINION_WAIT", "maybe"),
        ("MINION_CALLBACK", "thread"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_auto_concurrency_follows_the_scheduler() -> None:
    assert parse_concurrency("auto", {"SLURM_CPUS_PER_TASK": "3"}) == 3
    assert parse_concurrency("auto", {"SLURM_CPUS_ON_NODE": "5"}) == 5
    assert parse_concurrency("auto", {}) >= 1
    assert parse_concurrency(" 4 ", {}) == 4


def test_timeouts_accept_none_and_zero() -> None:
    assert Settings.from_env({"MINION_TASK_TIMEOUT": "0"}).task_timeout is None
    assert Settings.from_env({"MINION_TASK_TIMEOUT": "none"}).task_timeout is None
    assert Settings.from_env({"MINION_TASK_TIMEOUT": "1.5"}).task_timeout == 1.5
    assert Settings.from_env({"MINION_GRACE_PERIOD": "0"}).grace_period == 0.0


def test_cgroup_quota_caps_auto_concurrency(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from minionize.config import cgroup_cpu_quota

    limit = tmp_path / "cpu.max"
    limit.write_text("150000 100000\n")  # a pod limited to 1.5 CPUs
    assert cgroup_cpu_quota(str(limit)) == 2
    limit.write_text("max 100000\n")
    assert cgroup_cpu_quota(str(limit)) is None
    assert cgroup_cpu_quota(str(tmp_path / "missing")) is None
    limit.write_text("garbage\n")
    assert cgroup_cpu_quota(str(limit)) is None
