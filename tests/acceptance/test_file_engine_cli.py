"""The file engine as a user types it (issue 10 item 8)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import sh_bytes as sh
from tests.conftest import start_minion, task_env
from tests.services import script, wait_for


def test_the_file_flag_wins_over_the_default_sweep_queue(user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill from-the-queue", user_env).returncode == 0
    Path("p.txt").write_text("from-the-file\n")
    out = sh("minionize --file p.txt echo hi", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"hi from-the-file\n"


def test_lines_that_are_not_utf8_are_done_once_and_fail_into_failed(user_env: dict[str, str]) -> None:
    Path("p.txt").write_bytes(b"ok\n\xff\xfebad\n")
    out = sh("MINION_ENGINE=file FILE_PATH=p.txt minionize printf '%s|'", user_env)
    assert out.returncode == 0 and out.stderr == b"", out.stderr
    assert out.stdout == b"ok|\xff\xfebad|"  # the program got the very bytes
    assert sh("MINION_ENGINE=file FILE_PATH=p.txt minionize printf '%s|'", user_env).stdout == b""
    Path("q.txt").write_bytes(b"\xfefails\n")
    out = sh("MINION_ENGINE=file FILE_PATH=q.txt minionize --max-attempts 1 false", user_env)
    assert out.returncode == 1
    [record] = Path("q.txt.failed").read_bytes().splitlines()
    assert b"\xfefails" in record and json.loads(record.decode("utf-8", "surrogateescape"))["reason"]


def test_log_names_of_two_inputs_never_collide(user_env: dict[str, str]) -> None:
    Path("a.txt").write_text("first\n")
    Path("b.txt").write_text("second\n")
    for name in ("a.txt", "b.txt", "a.txt"):
        Path(name + ".done").unlink(missing_ok=True)
        out = sh(f"minionize --file {name} --log-dir logs echo", user_env)
        assert out.returncode == 0, out.stderr
    outputs = sorted(p.read_text() for p in Path("logs").glob("*.out"))
    assert outputs == ["first\n", "first\n", "second\n"]
    assert all(p.name.startswith(("a.txt-", "b.txt-")) for p in Path("logs").iterdir())


def test_the_idle_timeout_holds_on_an_open_silent_stdin(user_env: dict[str, str]) -> None:
    started = time.monotonic()
    proc = subprocess.Popen(
        [script("minionize"), "echo"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**user_env, "MINION_ENGINE": "file", "MINION_IDLE_TIMEOUT": "1"},
    )
    assert proc.stdin is not None
    proc.stdin.write(b"a\n")
    proc.stdin.flush()  # and the pipe stays open, silent
    try:
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
    finally:
        proc.kill()
        proc.stdin.close()
        proc.wait()
    assert proc.stdout is not None and proc.stdout.read() == b"a\n"


def test_a_dry_run_writes_nothing(user_env: dict[str, str]) -> None:
    Path("p.txt").write_text("1\n2\n")
    out = sh("minionize -n --file p.txt echo hi", user_env)
    assert out.returncode == 0 and out.stdout.splitlines() == [b"echo hi 1", b"echo hi 2"]
    assert sorted(p.name for p in Path().iterdir()) == ["p.txt"]


#: A task that records its param in $OUT, then waits until the file ``go`` exists.
RECORD_AND_WAIT = 'echo "$1" >> "$OUT"; while [ ! -e go ]; do sleep 0.05; done'


def test_two_minions_on_one_file_never_run_a_line_twice(tmp_path: Path) -> None:
    """Issue 22 item 10: the second minion on a file that another one reads says so and
    stops (exit 2), naming the file and the other minion; the lines run once each."""
    (tmp_path / "p.txt").write_text("".join(f"{i}\n" for i in range(1, 7)))
    env = task_env(tmp_path)
    minions = [start_minion(env, tmp_path, "--file", "p.txt", "sh", "-c", RECORD_AND_WAIT,
                            "task") for _ in range(2)]
    try:
        wait_for(lambda: any(m.process.poll() is not None for m in minions), 30,
                 "one of the two minions to stop")
        [loser] = [m for m in minions if m.process.poll() is not None]
        [winner] = [m for m in minions if m is not loser]
        code, err = loser.finish()
        assert code == 2, err
        [line] = err.splitlines()
        assert "p.txt" in line and f"pid {winner.pid}" in line and socket.gethostname() in line
        (tmp_path / "go").touch()
        code, err = winner.finish()
        assert code == 0, err
    finally:
        (tmp_path / "go").touch()
        for minion in minions:
            minion.kill_group()
    runs = (tmp_path / "out").read_text().splitlines()
    assert sorted(runs, key=int) == [str(i) for i in range(1, 7)]  # 6 runs, never 12
    assert not (tmp_path / "p.txt.lock").exists()  # nothing left once the run ends


def test_a_killed_minion_leaves_its_file_to_the_next_one(tmp_path: Path,
                                                        user_env: dict[str, str]) -> None:
    (tmp_path / "p.txt").write_text("1\n2\n")
    first = start_minion(task_env(tmp_path), tmp_path, "--file", "p.txt", "sh", "-c",
                         RECORD_AND_WAIT, "task")
    try:
        wait_for(lambda: (tmp_path / "out").exists(), 30, "the first task to start")
    finally:
        first.kill_group()
    out = sh("minionize --file p.txt echo", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"1\n2\n"  # the killed run's line was not done: it runs again


OTHER_DECODERS = ("GOOGLE_DECODER", "PULSAR_DECODER", "MINION_REDIS_DECODER")


def test_json_lines_read_as_text_say_add_decoder_json(user_env: dict[str, str]) -> None:
    """Issue 22 item 11: ``minionize --file`` reads text lines; a JSON mapping read as
    text says which flag reads it, and names only the file engine's variable."""
    Path("params.jsonl").write_text('{"x": 1}\n{"x": 2}\n')
    out = sh("minionize --file params.jsonl --template 'echo {x}'", user_env)
    assert out.returncode == 2 and out.stdout == b""
    [line] = out.stderr.decode().splitlines()
    assert "add --decoder json" in line and "FILE_DECODER=json" in line
    assert not any(name in line for name in OTHER_DECODERS), line
    done = Path("params.jsonl.done")
    assert not done.exists() or done.read_bytes() == b""  # nothing consumed


def test_decoder_json_reads_json_lines(user_env: dict[str, str]) -> None:
    Path("params.jsonl").write_text('{"x": 1}\n{"x": "a b"}\n')
    out = sh("minionize --file params.jsonl --decoder json --template 'echo {x}'", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"1\na b\n"


def test_decoder_text_wins_over_the_variable(user_env: dict[str, str]) -> None:
    Path("p.txt").write_text('"quoted"\n')
    out = sh("FILE_DECODER=json minionize -a p.txt --decoder text echo", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b'"quoted"\n'  # the line as typed, not the JSON string


def test_decoder_of_stdin_params(user_env: dict[str, str]) -> None:
    out = sh("""printf '{"n": 3}\\n' | minionize --decoder json --template 'echo n={n}'""",
             user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"n=3\n"


def test_a_text_param_that_is_not_json_names_the_flag_too(user_env: dict[str, str]) -> None:
    Path("p.txt").write_text("plain\n")
    out = sh("minionize -a p.txt --template 'echo {x}'", user_env)
    assert out.returncode == 2
    [line] = out.stderr.decode().splitlines()
    assert "--decoder json" in line and not any(name in line for name in OTHER_DECODERS)


def test_decoder_with_the_sweep_queue_is_refused(user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill 1", user_env).returncode == 0
    out = sh("minionize --decoder json echo", user_env)
    assert out.returncode == 2 and out.stdout == b""
    [line] = out.stderr.decode().splitlines()
    assert "--decoder" in line and "sweep" in line
    assert sh("minionize echo", user_env).stdout == b"1\n"  # nothing was consumed
