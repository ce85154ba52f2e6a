"""Issue 22 item 9: `minion-status` from anywhere. A report names the queue its minion
serves, so that `minion-status DIR` finds it from any directory; reports of two queues in
one directory are shown per queue; log paths in reports are absolute; `--queue-dir`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import sh, status_json

#: Param 2 fails (a dead letter at once): its log is what minion-status points to.
TASK = "sh -c 'echo \"no luck with $1\" >&2; test \"$1\" != 2' task"


def run_in_project(env: dict[str, str]) -> None:
    Path("project").mkdir()
    result = sh("cd project && minion-queue fill 1..3 && MINION_REPORTER=json "
                f"MINION_LOG_DIR=logs MINION_MAX_ATTEMPTS=1 minionize {TASK}", env)
    assert result.returncode == 1, result.stderr  # a dead letter


def test_status_of_a_report_directory_elsewhere_asks_its_queue(user_env: dict[str, str]) -> None:
    run_in_project(user_env)
    queue = Path("project/sweeps").absolute()
    result = sh("minion-status project/minion-report", user_env)
    assert result.returncode == 0, result.stderr
    assert "queue size unknown" not in result.stdout, result.stdout
    assert (f"queue: 0 to do, 0 in flight, 0 expired, 2 done, 1 dead (sweep queue in {queue})"
            in result.stdout), result.stdout
    assert "ETA: the queue is empty" in result.stdout
    out = status_json(user_env, "project/minion-report")
    assert out["queue"]["done"] == 2 and out["queue"]["dead"] == 1
    assert [q["queue_ref"] for q in out["queues"]] == [{"engine": "sweep",
                                                        "location": str(queue)}]
    # The failure's log is named by its absolute path: it opens from here.
    log = Path(out["errors"][0]["stderr_path"])
    assert log.is_absolute() and "no luck with 2" in log.read_text()
    assert f"log: {log}" in result.stdout


def test_queue_dir_is_accepted_and_overrides(user_env: dict[str, str]) -> None:
    run_in_project(user_env)
    Path("other").mkdir()
    assert sh("minion-queue --queue-dir other fill 1..5", user_env).returncode == 0
    result = sh("minion-status --queue-dir other project/minion-report", user_env)
    assert result.returncode == 0, result.stderr
    other = Path("other").absolute()
    assert f"queue: 5 to do, 0 in flight, 0 expired, 0 done, 0 dead (sweep queue in {other})" \
        in result.stdout, result.stdout
    assert status_json(user_env, "--queue-dir", "other", "project/minion-report")["queue"]["todo"] == 5


def test_two_queues_in_one_report_directory_are_shown_per_queue(
        user_env: dict[str, str]) -> None:
    result = sh("minion-queue --queue-dir qa fill 1..2 && minion-queue --queue-dir qb fill 1..3 "
                "&& export MINION_REPORTER=json && minionize --queue-dir qa echo "
                "&& minionize --queue-dir qb echo", user_env)
    assert result.returncode == 0, result.stderr
    qa, qb = Path("qa").absolute(), Path("qb").absolute()
    result = sh("minion-status", user_env)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("minion-report: the runs of 2 queues, shown per queue\n"), text
    blocks = {block.splitlines()[0]: block for block in text.split("== ")[1:]}
    assert set(blocks) == {f"sweep queue {qa}", f"sweep queue {qb}"}, text
    assert "1 minion: 0 alive, 1 finished" in blocks[f"sweep queue {qa}"]
    assert "0 to do, 0 in flight, 0 expired, 2 done" in blocks[f"sweep queue {qa}"]
    assert "0 to do, 0 in flight, 0 expired, 3 done" in blocks[f"sweep queue {qb}"]
    out = status_json(user_env)
    assert out["done"] == 5 and len(out["minions"]) == 2
    by_queue = {q["queue_ref"]["location"]: q for q in out["queues"]}
    assert by_queue[str(qa)]["done"] == 2 and by_queue[str(qa)]["queue"]["done"] == 2
    assert by_queue[str(qb)]["done"] == 3 and len(by_queue[str(qb)]["minions"]) == 1


def test_reports_without_their_queue_are_read_as_before(user_env: dict[str, str]) -> None:
    """Reports written before they named their queue: the configured queue is asked."""
    run_in_project(user_env)
    report = Path("project/minion-report")
    [events] = report.glob("*.jsonl")
    lines = events.read_text().splitlines()
    start = json.loads(lines[0])
    del start["minion"]["queue"]
    events.write_text("\n".join([json.dumps(start), *lines[1:]]) + "\n")
    for summary in report.glob("*.summary.json"):
        summary.unlink()
    result = sh("cd project && minion-status", user_env)
    assert result.returncode == 0, result.stderr
    assert "queue: 0 to do, 0 in flight, 0 expired, 2 done, 1 dead (sweep queue in sweeps)" \
        in result.stdout, result.stdout
    assert "runs of" not in result.stdout
    elsewhere = sh("minion-status project/minion-report", user_env)
    assert "queue size unknown: no sweep queue in sweeps" in elsewhere.stdout, elsewhere.stdout
