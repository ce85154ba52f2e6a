"""Queue administration with ``minion-queue``, as a user types it: what is todo, who
holds what, a reset, chosen dead letters requeued; the file engine's journals; fill's
ranges."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import queue_status, sh, start_minion
from tests.services import wait_for

SLOW = 'echo "$1" >> started; exec sleep 300'


def test_list_todo_and_in_flight_with_holder_and_lease_end(tmp_path: Path,
                                                           user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill 1..4", user_env).returncode == 0
    holder = start_minion({**user_env, "SLURM_JOB_ID": "777"}, tmp_path, "-j", "2",
                          "sh", "-c", SLOW, "task")
    try:
        started = tmp_path / "started"
        wait_for(lambda: started.exists() and len(started.read_text().split()) == 2, 30,
                 "two tasks started")
        out = sh("minion-queue list todo", user_env)
        assert out.returncode == 0, out.stderr
        assert [line.split()[1] for line in out.stdout.splitlines()] == ["3", "4"]
        out = sh("minion-queue list in-flight", user_env)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert [line.split()[1] for line in lines] == ["1", "2"]
        for line in lines:
            assert re.search(rf"attempts=1  held by minion \w+ on \S+ \(pid {holder.pid}, job "
                             r"777\), lease ends in \d+m\d\ds \(at \d\d:\d\d:\d\d\)$", line), line
        out = sh("minion-queue list in-flight --json", user_env)
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        assert [row["param"] for row in rows] == [1, 2]
        assert all(row["pid"] == holder.pid and row["job"] == "777" and row["host"]
                   and row["lease_end"] > 0 for row in rows), rows
    finally:
        holder.kill_group()


def test_reset_asks_for_yes_then_makes_every_param_todo(user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill 1..3 && minionize echo", user_env).returncode == 0
    out = sh("minion-queue reset", user_env)
    assert out.returncode == 2
    assert "--yes" in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
    assert queue_status(user_env)["done"] == 3
    out = sh("minion-queue reset --yes", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sweep queue in sweeps: 3 params made todo again"
    assert queue_status(user_env) == {"todo": 3, "in_flight": 0, "expired": 0, "done": 0,
                                      "dead": 0, "total": 3}
    out = sh("minionize echo again", user_env)
    assert out.stdout.splitlines() == ["again 1", "again 2", "again 3"]


def test_requeue_dead_of_chosen_ids(user_env: dict[str, str]) -> None:
    sh("minion-queue fill 1..3 && minionize --max-attempts 1 false", user_env)
    out = sh("minion-queue list dead --json", user_env)
    ids = [json.loads(line)["id"] for line in out.stdout.splitlines()]
    assert len(ids) == 3
    out = sh("minion-queue requeue-dead nosuchid", user_env)
    assert out.returncode == 2
    assert "nosuchid" in out.stderr and "list dead" in out.stderr, out.stderr
    assert queue_status(user_env)["dead"] == 3
    out = sh(f"minion-queue requeue-dead {ids[0]} {ids[2]}", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sweep queue in sweeps: 2 dead letters made todo again"
    status = queue_status(user_env)
    assert (status["todo"], status["dead"]) == (2, 1)
    out = sh("minion-queue list todo --json", user_env)
    assert [json.loads(line)["id"] for line in out.stdout.splitlines()] == [ids[0], ids[2]]


def test_the_file_engine_status_dead_letters_and_requeue(tmp_path: Path,
                                                         user_env: dict[str, str]) -> None:
    (tmp_path / "params.txt").write_text("a\nb\nc\nd\n")
    sh("minionize --file params.txt --max-attempts 1 sh -c 'test \"$1\" != b' task", user_env)
    env = {**user_env, "MINION_ENGINE": "file", "FILE_PATH": "params.txt"}
    out = sh("minion-queue status --json", env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"todo": 0, "in_flight": None, "expired": None,
                                      "done": 3, "dead": 1, "total": 4}
    out = sh("minion-queue list dead", env)
    assert out.returncode == 0, out.stderr
    [line] = out.stdout.splitlines()
    assert '"b"' in line and "attempts=1" in line and "exit" in line, line
    out = sh("minion-queue list done", env)
    assert [line.split()[1] for line in out.stdout.splitlines()] == ['"a"', '"c"', '"d"']
    dead_id = line.split()[0]
    out = sh(f"minion-queue requeue-dead {dead_id}", env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "file params.txt: 1 dead letters made todo again"
    assert json.loads(sh("minion-queue status --json", env).stdout) == {
        "todo": 1, "in_flight": None, "expired": None, "done": 3, "dead": 0, "total": 4}
    out = sh("minionize --file params.txt echo rerun", user_env)
    assert out.stdout.splitlines() == ["rerun b"]


def test_fill_ranges_in_a_product_and_a_spaced_range_is_one_param(
        user_env: dict[str, str]) -> None:
    out = sh("minion-queue fill --product n=0..3 algo=fast,exact", user_env)
    assert out.stdout.strip() == "sweep queue in sweeps: added 8 params", out.stderr
    out = sh("minion-queue list todo --json", user_env)
    params = [json.loads(line)["param"] for line in out.stdout.splitlines()]
    assert params[:2] == [{"n": 0, "algo": "fast"}, {"n": 0, "algo": "exact"}]
    assert params[-1] == {"n": 3, "algo": "exact"}
    out = sh("minion-queue fill '0 ..9' ' 1..2'", user_env)
    assert out.stdout.strip() == "sweep queue in sweeps: added 2 params", out.stderr
    out = sh("minion-queue list todo --json", user_env)
    assert [json.loads(line)["param"] for line in out.stdout.splitlines()][8:] == ["0 ..9", " 1..2"]


def test_a_failed_fill_from_files_leaves_no_queue_behind(tmp_path: Path,
                                                        user_env: dict[str, str]) -> None:
    out = sh("minion-queue fill --from-files 'in/data_{}.txt'", user_env)
    assert out.returncode == 2 and "no file matches" in out.stderr, out.stderr
    assert not (tmp_path / "sweeps").exists()
    out = sh("minion-queue fill 1 --from-files 'in/data_{}.txt'", user_env)
    assert out.returncode == 2
    assert not (tmp_path / "sweeps").exists()
