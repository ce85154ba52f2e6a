from __future__ import annotations

import os
from pathlib import Path

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


# -- issue 10, item 7: unknown variables are named, zero is not a silent default ----------
def test_a_misspelt_variable_is_warned_once_naming_the_closest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from minionize import config

    config.forget_warnings()
    values = {"MINION_CONCURENCY": "4", "MINION_MAX_ATTEMPT": "1", "MINION_ENGIN": "file",
              "MINION_ENGINE": "file", "MINION_PARAM": "7", "MINION_ZZZZZZZZZZZZZ": "1"}
    with caplog.at_level("WARNING", logger="minionize"):
        Settings.from_env(values)
        Settings.from_env(values)  # once per name, however often settings are read
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("minionize")]
    assert len(warnings) == 4, warnings
    assert any("MINION_CONCURENCY" in w and "MINION_CONCURRENCY" in w for w in warnings)
    assert any("MINION_MAX_ATTEMPT " in w and "MINION_MAX_ATTEMPTS" in w for w in warnings)
    assert any("MINION_ENGIN " in w and "MINION_ENGINE" in w for w in warnings)
    assert any("MINION_ZZZZZZZZZZZZZ" in w and "did you mean" not in w for w in warnings)
    assert all(r.levelname == "WARNING" for r in caplog.records)


def test_every_variable_the_package_and_env_example_use_is_known() -> None:
    import re
    from pathlib import Path

    from minionize.config import KNOWN_VARIABLES

    root = Path(__file__).resolve().parents[2]
    files = [*(root / "minionize").rglob("*.py"), root / ".env.example"]
    used = {name for path in files
            for name in re.findall(r"\bMINION_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())}
    assert used, "the pattern found nothing"
    assert used - set(KNOWN_VARIABLES) == set()


#: Variables the code names that are not settings: minionize sets them for each task
#: (a minion started inside a task sees them), or tests use them.
NOT_SETTINGS = {"MINION_PARAM", "MINION_PARAM_ID", "MINION_ATTEMPT", "MINION_PARAM_FILE",
                "MINION_SWEEP_TEST_HOLD_LOCK"}


def test_env_example_lists_every_variable_the_code_reads() -> None:
    """Every variable named by a whole string literal in the package (what is passed to
    an Env getter, a tuple of names, os.environ.get(...)) is in .env.example."""
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    name = re.compile(r"DRY|(MINION|FILE|EXECO|REPORTER|PULSAR|GOOGLE|PUBSUB|DOCKER)_[A-Z0-9_]*[A-Z0-9]")
    read = {node.value for path in (root / "minionize").rglob("*.py")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and name.fullmatch(node.value)}
    assert {"MINION_CONCURRENCY", "PULSAR_TOPIC", "MINION_STAGE", "DRY"} <= read
    example = (root / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    assert read - NOT_SETTINGS - listed == set()


@pytest.mark.parametrize("value", ["0", "-3", "none", "soon"])
def test_heartbeat_must_be_a_positive_number_of_seconds(value: str) -> None:
    from minionize.reporters.json import JsonReporter

    with pytest.raises(ConfigError, match="MINION_HEARTBEAT"):
        JsonReporter.from_settings(Settings.from_env({"MINION_HEARTBEAT": value}))
    assert JsonReporter.from_settings(
        Settings.from_env({"MINION_HEARTBEAT": "2.5"})).heartbeat_period == 2.5


@pytest.mark.parametrize("value", ["0", "none"])
def test_lease_zero_is_refused_not_replaced_by_the_default(value: str) -> None:
    with pytest.raises(ConfigError, match="MINION_LEASE"):
        Settings.from_env({"MINION_LEASE": value})


@pytest.mark.parametrize("value", ["0", "none", "-1"])
def test_outage_timeout_zero_is_refused_not_replaced_by_the_default(value: str) -> None:
    with pytest.raises(ConfigError, match="MINION_OUTAGE_TIMEOUT"):
        Settings.from_env({"MINION_OUTAGE_TIMEOUT": value})
    assert Settings.from_env({"MINION_OUTAGE_TIMEOUT": "5"}).outage_timeout == 5.0


# Issue 20 item 16: a .env that cannot be read exactly is a configuration error naming
# the file and the line, and nothing of it is loaded.
DOTENV_NAMES = ("MINION_CONCURRENCY", "MINION_TASK_TIMEOUT", "MINION_LOG_DIR")


def _forget(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Unset ``names``, and have them unset again after the test (whatever it loads)."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


ENV_DAMAGE = [
    (b"MINION_CONCURRENCY=2\nMINION_TASK_TIMEOUT=5\nMINION_LOG_DIR=caf\xff\n", 3, "not UTF-8"),
    (b"MINION_CONCURRENCY=2\nMINION_TASK_\x00TIMEOUT=5\n", 2, "NUL byte"),
    (b"MINION_CONCURRENCY=2\nMINION_TASK_TIMEOUT=\"5\nMINION_LOG_DIR=logs\n", 2, "cannot parse"),
    (b"# a comment\n\nMINION_CONCURRENCY=2\nnot a statement at all\n", 4, "cannot parse"),
    (b"MINION_CONCURRENCY='2\n", 1, "cannot parse"),
]


@pytest.mark.parametrize(("data", "line", "why"), ENV_DAMAGE, ids=range(len(ENV_DAMAGE)))
def test_a_dotenv_that_cannot_be_read_exactly_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    data: bytes, line: int, why: str,
) -> None:
    from minionize.config import load_dotenv_file

    _forget(monkeypatch, *DOTENV_NAMES)
    monkeypatch.chdir(tmp_path)
    Path(".env").write_bytes(data)
    with caplog.at_level("WARNING"), pytest.raises(ConfigError) as error:
        load_dotenv_file()
    message = str(error.value)
    assert message.startswith(f".env line {line}: "), message
    assert why in message and "\n" not in message
    assert "MINION_CONCURRENCY" not in os.environ  # nothing consumed, not even line 1
    assert caplog.records == []  # python-dotenv's own warning is not printed


def test_a_good_dotenv_is_loaded_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from minionize.config import load_dotenv_file

    monkeypatch.chdir(tmp_path)
    _forget(monkeypatch, *DOTENV_NAMES)
    monkeypatch.setenv("MINION_CONCURRENCY", "4")
    Path(".env").write_bytes(
        b"\xef\xbb\xbf# caf\xc3\xa9\nMINION_CONCURRENCY=2\nexport MINION_TASK_TIMEOUT='5'\n"
        b'MINION_LOG_DIR="logs\ncaf\xc3\xa9"\n\n')
    with caplog.at_level("WARNING"):
        load_dotenv_file()
    assert os.environ["MINION_CONCURRENCY"] == "4"
    assert os.environ["MINION_TASK_TIMEOUT"] == "5"
    assert os.environ["MINION_LOG_DIR"] == "logs\ncafé"
    assert caplog.records == []


def test_a_dotenv_that_cannot_be_opened_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minionize.config import load_dotenv_file

    _forget(monkeypatch, *DOTENV_NAMES)
    monkeypatch.chdir(tmp_path)
    Path(".env").write_text("MINION_CONCURRENCY=2\n")
    Path(".env").chmod(0)
    if os.access(".env", os.R_OK):
        pytest.skip("running as a user who reads any file")
    with pytest.raises(ConfigError, match=r"^cannot read \.env: "):
        load_dotenv_file()
