"""Files a minion writes, attacked as a user of a shared directory would: planted symbolic
links and FIFOs named as the next log, results or joblog file, params no argument can
hold, and the temporary directories of a killed run."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

from tests.conftest import queue_status, sh, start_minion, task_env

VICTIM = "important data\n"


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim" / "important.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(VICTIM)
    return path


def log_name(env: dict[str, str], tmp_path: Path, param: str) -> str:
    """The predictable name of a param's log files: a run elsewhere on the same param."""
    probe = tmp_path / "probe"
    probe.mkdir(parents=True)
    result = sh(f"cd {probe} && minion-queue fill {param} && minionize --log-dir logs true", env)
    assert result.returncode == 0, result.stderr
    (name,) = {p.name.rsplit(".", 2)[0] for p in (probe / "logs").iterdir()}
    return name


def test_a_symlink_planted_as_the_next_log_file_is_never_written_through(tmp_path: Path) -> None:
    env = task_env(tmp_path)
    target = victim(tmp_path)
    name = log_name(env, tmp_path, "hello")
    logs = tmp_path / "logs"
    logs.mkdir()
    for suffix in ("out", "err"):
        (logs / f"{name}.1.{suffix}").symlink_to(target)
    result = sh(f"cd {tmp_path} && minion-queue fill hello && minionize --log-dir logs echo", env)
    assert target.read_text() == VICTIM
    # The attempt given the planted name failed, saying why; the next one ran.
    assert "symbolic link" in result.stderr and f"{name}.1.out" in result.stderr
    assert result.returncode == 0, result.stderr
    assert (logs / f"{name}.2.out").read_text() == "hello\n"
    assert (logs / f"{name}.1.out").is_symlink()


def test_planted_symlinks_in_the_results_directory_are_never_followed(tmp_path: Path) -> None:
    env = task_env(tmp_path)
    target = victim(tmp_path)
    ids = {param: log_name(env, tmp_path / param, param) for param in ("a", "b", "c")}
    results = tmp_path / "res"
    results.mkdir()
    (results / ids["a"]).symlink_to(target.parent)  # the param's directory
    (results / ids["b"]).mkdir()
    (results / ids["b"] / "param").symlink_to(target.parent / "param")
    (results / ids["c"]).mkdir()
    (results / ids["c"] / "1.out").symlink_to(target)  # an attempt's file
    result = sh(f"cd {tmp_path} && minion-queue fill a b c && MINION_MAX_ATTEMPTS=1 "
                "minionize --results res echo", env)
    assert target.read_text() == VICTIM
    assert sorted(p.name for p in target.parent.iterdir()) == ["important.txt"]
    assert result.returncode == 1
    dead = [line for line in result.stderr.splitlines() if "dead letter" in line]
    assert len(dead) == 3, result.stderr
    for param in ("a", "b", "c"):
        (line,) = [line for line in dead if f'param "{param}"' in line]
        assert "symbolic link" in line and ids[param] in line
    assert queue_status(env, cwd=tmp_path)["dead"] == 3


def test_a_joblog_that_is_a_symlink_is_refused_at_start(tmp_path: Path) -> None:
    env = task_env(tmp_path)
    target = victim(tmp_path)
    (tmp_path / "jl").symlink_to(target)
    sh(f"cd {tmp_path} && minion-queue fill 1 2", env)
    result = sh(f"cd {tmp_path} && minionize --joblog jl echo", env, timeout=20)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert "symbolic link" in line and "--joblog jl" in line
    assert target.read_text() == VICTIM
    assert queue_status(env, cwd=tmp_path)["todo"] == 2


def test_a_joblog_that_is_a_fifo_is_refused_at_start_not_waited_on(tmp_path: Path) -> None:
    env = task_env(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    sh(f"cd {tmp_path} && minion-queue fill 1 2", env)
    result = sh(f"cd {tmp_path} && minionize --joblog fifo echo", env, timeout=20)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert "not a regular file" in line and "--joblog fifo" in line
    assert queue_status(env, cwd=tmp_path)["todo"] == 2


def test_a_param_holding_a_nul_byte_is_a_dead_letter_at_once(tmp_path: Path) -> None:
    env = task_env(tmp_path)
    (tmp_path / "p.jsonl").write_text('"a\\u0000b"\n"c"\n')
    sh(f"cd {tmp_path} && minion-queue fill --file p.jsonl", env)
    result = sh(f"cd {tmp_path} && minionize echo", env)
    assert result.returncode == 1
    assert result.stdout == "c\n"
    (line,) = [ln for ln in result.stderr.splitlines() if "dead letter" in ln]
    assert "after attempt 1" in line and "NUL" in line and "--param-stdin" in line
    # What it suggests works: the param on standard input.
    sh(f"cd {tmp_path} && minion-queue requeue-dead", env)
    fixed = sh(f"cd {tmp_path} && minionize --param-stdin od -c", env)
    assert fixed.returncode == 0, fixed.stderr
    assert "a  \\0   b" in fixed.stdout


def output_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("minionize-output-*"))


def wait_until(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_keep_order_leaves_no_temporary_output_after_sigterm_or_sigkill(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = task_env(tmp_path, TMPDIR=str(tmp))
    sh(f"cd {tmp_path} && minion-queue fill 1", env)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        minion = start_minion(env, tmp_path, "-k", "sh", "-c", "echo started; sleep 30")
        wait_until(lambda: any(d.is_dir() and any(d.iterdir()) for d in output_dirs(tmp)))
        if signum == signal.SIGKILL:
            minion.kill_group()
            assert output_dirs(tmp), "a SIGKILLed minion cannot clean up"
        else:
            os.kill(minion.pid, signum)
            code, err = minion.finish()
            assert output_dirs(tmp) == [], err
    # The next -k run on this host removes what the killed one left, and only that.
    foreign = tmp / "minionize-output-0123456789.1.1-abc"  # another host's
    foreign.mkdir()
    (tmp_path / "next").mkdir()
    result = sh(f"cd {tmp_path}/next && minion-queue fill 2 && minionize -k echo", env)
    assert result.returncode == 0, result.stderr
    assert output_dirs(tmp) == [foreign]
    assert stat.S_ISDIR(foreign.stat().st_mode)


def test_a_fifo_planted_as_the_next_log_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    env = task_env(tmp_path)
    name = log_name(env, tmp_path, "hello")
    (tmp_path / "logs").mkdir()
    os.mkfifo(tmp_path / "logs" / f"{name}.1.out")
    result = sh(f"cd {tmp_path} && minion-queue fill hello && minionize --log-dir logs -k echo",
                env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("hello\n")
    assert "not a regular file" in result.stderr and f"{name}.1.out" in result.stderr


def test_a_symlink_planted_as_an_exit_file_is_not_written_through(tmp_path: Path) -> None:
    env = task_env(tmp_path)
    target = victim(tmp_path)
    name = log_name(env, tmp_path, "hello")
    (tmp_path / "res" / name).mkdir(parents=True)
    (tmp_path / "res" / name / "1.exit").symlink_to(target)
    result = sh(f"cd {tmp_path} && minion-queue fill hello && minionize --results res echo", env)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == VICTIM
    assert (tmp_path / "res" / name / "1.out").read_text() == "hello\n"
    assert "1.exit" in result.stderr and "symbolic link" in result.stderr
