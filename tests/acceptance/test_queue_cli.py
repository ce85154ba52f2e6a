"""``minion-queue`` as a user types it, in an empty directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import queue_status, resize_disk, sh, small_disk
from tests.services import script


def test_quick_start_fill_then_run(user_env: dict[str, str]) -> None:
    out = sh("minion-queue fill 0..9 && minionize echo hello", user_env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "sweep queue in sweeps: added 10 params"
    assert lines[1:] == [f"hello {i}" for i in range(10)]
    assert queue_status(user_env) == {"todo": 0, "in_flight": 0, "expired": 0, "done": 10,
                                      "dead": 0, "total": 10}


def test_status_for_a_person(user_env: dict[str, str]) -> None:
    sh("minion-queue fill 1..3", user_env)
    out = sh("minion-queue status", user_env)
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        "sweep queue in sweeps",
        "  todo            3",
        "  in flight       0",
        "  expired leases  0",
        "  done            0",
        "  dead letters    0",
        "  total           3",
    ]


def test_fill_from_stdin_a_file_and_a_product(tmp_path: Path, user_env: dict[str, str]) -> None:
    # The product first: a template that the first param of a run cannot fill is the
    # command line's fault (exit 2); once one has filled it, an odd param is a dead letter.
    out = sh("minion-queue fill --product a=1,2,3 b=x,y", user_env)
    assert out.stdout.strip() == "sweep queue in sweeps: added 6 params"
    out = sh("printf 'a b\\n\\n2\\n{\"k\": 1}\\n' | minion-queue fill -", user_env)
    assert out.stdout.strip() == "sweep queue in sweeps: added 3 params"
    (tmp_path / "params.jsonl").write_text('"a b"\n[1, 2]\n')
    out = sh("minion-queue fill --file params.jsonl", user_env)
    assert out.stdout.strip() == "sweep queue in sweeps: added 1 param (1 already present)"
    assert queue_status(user_env)["todo"] == 10
    out = sh("minionize --template 'echo {a}{b}' --max-attempts 1 2>/dev/null; "
             "minion-queue list done --json", user_env)
    done = [json.loads(line)["param"] for line in out.stdout.splitlines() if line.startswith("{")]
    assert {"a": 1, "b": "x"} in done and {"a": 3, "b": "y"} in done
    assert set(out.stdout.splitlines()[:6]) == {"1x", "1y", "2x", "2y", "3x", "3y"}
    assert queue_status(user_env)["dead"] == 4  # "a b", 2, {"k": 1}, [1, 2]: dead letters at once


def test_filling_twice_adds_nothing_twice(user_env: dict[str, str]) -> None:
    sh("minion-queue fill 0..4 && minionize true", user_env)
    out = sh("minion-queue fill 0..9", user_env)
    assert out.stdout.strip() == "sweep queue in sweeps: added 5 params (5 already present)"
    assert queue_status(user_env)["todo"] == 5


def test_dead_letters_are_listed_and_requeued(user_env: dict[str, str]) -> None:
    sh("minion-queue fill ok fail", user_env)
    out = sh("minionize --max-attempts 2 sh -c 'test \"$1\" = ok' sh", user_env)
    assert out.returncode == 1  # a param was dead-lettered
    assert queue_status(user_env)["dead"] == 1
    out = sh("minion-queue list dead", user_env)
    [line] = out.stdout.splitlines()
    assert '"fail"' in line and "attempts=2" in line and "exit" in line
    [record] = [json.loads(x) for x in sh("minion-queue list dead --json", user_env).stdout.splitlines()]
    assert record["param"] == "fail" and record["reason"]
    out = sh("minion-queue requeue-dead", user_env)
    assert out.stdout.strip() == "sweep queue in sweeps: 1 dead letters made todo again"
    assert sh("minionize echo retried", user_env).stdout.strip() == "retried fail"
    assert queue_status(user_env)["done"] == 2


def test_reset_expired_and_the_queue_directory_option(user_env: dict[str, str]) -> None:
    out = sh("minion-queue --dir elsewhere fill 7 && minion-queue reset-expired --dir elsewhere",
             user_env)
    assert out.stdout.splitlines() == [
        "sweep queue in elsewhere: added 1 param",
        "sweep queue in elsewhere: 0 expired leases put back",
    ]
    assert queue_status(user_env, "--queue-dir", "elsewhere")["todo"] == 1
    assert sh("EXECO_PERSISTENCE_DIR=elsewhere minionize echo", user_env).stdout == "7\n"


def test_settings_come_from_dotenv(tmp_path: Path, user_env: dict[str, str]) -> None:
    (tmp_path / ".env").write_text("EXECO_PERSISTENCE_DIR=from-dotenv\n")
    sh("minion-queue fill 1..2", user_env)
    assert (tmp_path / "from-dotenv" / "params.jsonl").exists()
    assert sh("minionize echo", user_env).stdout.split() == ["1", "2"]


def test_errors_are_one_line_and_exit_2(user_env: dict[str, str]) -> None:
    for line, words in [
        ("minion-queue fill", "nothing to fill"),
        ("minion-queue --engine nope status", "not a known engine"),
        ("minion-queue fill --product a", "NAME=V1,V2"),
        ("minion-queue fill --file missing.jsonl", "cannot read --file missing.jsonl"),
        ("minion-queue --engine file status", "cannot report a status of standard input"),
    ]:
        out = sh(line, user_env)
        assert out.returncode == 2, line
        assert len(out.stderr.strip().splitlines()) == 1 and words in out.stderr, out.stderr


def test_help_explains_the_inputs(user_env: dict[str, str]) -> None:
    out = sh("minion-queue --help && minion-queue fill --help", user_env)
    assert out.returncode == 0
    for words in ("fill 0..9", "status --json", "requeue-dead", "START..END", "--product"):
        assert words in out.stdout


RECORD_ARGS = """\
import json, sys
with open("args.jsonl", "a", encoding="utf-8") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def recorded_args(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "args.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_text_typed_arrives_exactly_and_alone(tmp_path: Path, user_env: dict[str, str]) -> None:
    # Issue 10 item 3: 3.10 and 3.1 were one param; 1e3 arrived as 1000.0; NaN was
    # written into the queue as non-standard JSON.
    (tmp_path / "record.py").write_text(RECORD_ARGS)
    texts = ["3.9", "3.10", "3.1", "1e3", "1e400", "1.50", " 5", "5 ", "5", "NaN", "Infinity", "-0"]
    out = subprocess.run([script("minion-queue"), "fill", *texts], env=user_env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"sweep queue in sweeps: added {len(texts)} params", out.stderr
    stdin_texts = ["7.10", "7.1", " 8", "8", "-Infinity", "2e0"]
    out = sh("minion-queue fill -", user_env, stdin="".join(t + "\n" for t in stdin_texts))
    assert out.stdout.strip() == f"sweep queue in sweeps: added {len(stdin_texts)} params"
    out = sh(f"minionize {sys.executable} record.py", user_env)
    assert out.returncode == 0, out.stderr
    args = recorded_args(tmp_path)
    assert sorted(a[0] for a in args if len(a) == 1) == sorted(texts + stdin_texts)
    out = sh("minion-queue fill --product 'a=1.0,1,NaN'", user_env)
    assert out.stdout.strip() == "sweep queue in sweeps: added 3 params"
    for line in (tmp_path / "sweeps" / "params.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in the queue"))
    out = sh(f"minionize --template '{sys.executable} record.py {{a}}'", user_env)
    assert out.returncode == 0, out.stderr
    assert sorted(recorded_args(tmp_path)[len(args):]) == [["1"], ["1.0"], ["NaN"]]


def test_a_json_lines_file_refuses_what_it_cannot_keep(tmp_path: Path, user_env: dict[str, str]) -> None:
    for line in ("NaN", "1e400", '{"x": Infinity}'):
        (tmp_path / "p.jsonl").write_text(f'1\n{line}\n')
        out = sh("minion-queue fill --file p.jsonl", user_env)
        assert out.returncode == 2 and "p.jsonl line 2:" in out.stderr, out.stderr
        assert len(out.stderr.splitlines()) == 1


def test_a_full_disk_is_one_line_and_the_queue_keeps_what_it_had(
    tmp_path: Path, user_env: dict[str, str]
) -> None:
    # Issue 11 item 7: fill on a full disk printed an OSError traceback. Without root,
    # tests/unit/cli/test_queue_errors.py covers the same message with a failing write.
    with small_disk(tmp_path / "small-disk", "64k") as disk:
        env = {**user_env, "EXECO_PERSISTENCE_DIR": str(disk / "sweeps")}
        assert sh("minion-queue fill 0..9", env).returncode == 0
        out = sh("minion-queue fill 0..99999", env)
        assert out.returncode == 2 and out.stdout == ""
        assert len(out.stderr.splitlines()) == 1 and "No space left on device" in out.stderr
        assert "Traceback" not in out.stderr
        # A fill the disk stopped leaves the queue as it was; a fill again, once there is
        # room, adds every param once.
        assert queue_status(env)["total"] == 10
        resize_disk(disk, "64m")
        again = sh("minion-queue fill 0..99999", env)
        assert again.returncode == 0, again.stderr
        assert queue_status(env) == {"dead": 0, "done": 0, "expired": 0, "in_flight": 0,
                                     "todo": 100_000, "total": 100_000}


def test_input_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path, user_env: dict[str, str]) -> None:
    (tmp_path / "p.jsonl").write_bytes(b'1\n"\xff\xfe"\n')
    out = sh("minion-queue fill --file p.jsonl", user_env)
    assert out.returncode == 2 and out.stderr.splitlines() == [
        "minion-queue: error: p.jsonl line 2 is not UTF-8 text (byte 0xff at column 2): "
        "JSON lines are UTF-8"]
    out = subprocess.run(["sh", "-c", "printf 'a\\n\\377b\\n' | minion-queue fill -"],
                         env=user_env, capture_output=True, timeout=60)
    assert out.returncode == 2 and out.stderr.splitlines() == [
        b"minion-queue: error: standard input line 2 is not UTF-8 text (byte 0xff at column 1): "
        b"a queue holds UTF-8 text"]
    out = subprocess.run([script("minion-queue"), "fill", "ok", b"\xffx"], env=user_env,
                         capture_output=True, timeout=60)
    assert out.returncode == 2 and b"is not UTF-8 text" in out.stderr
    assert len(out.stderr.splitlines()) == 1
    assert queue_status(user_env)["total"] == 0  # nothing of a refused fill went in
