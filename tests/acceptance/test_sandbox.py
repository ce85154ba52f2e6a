"""Tasks with files, typed as a user types them: a run shaped like locusts' tutorial
(101 input pairs, a shared file, a task that cats and lists into two outputs), with
tasks that fail, tasks that forget an output and a param whose input is missing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import queue_status, sh, start_minion
from tests.services import wait_for

PAIRS = 101
#: Params whose task exits 1 after writing both outputs, and whose task forgets one.
EXITS_1 = {3, 13, 23}
FORGETS = {7, 17}
#: The param whose second input is missing.
NO_INPUT = 50
TASK = """#!/bin/sh
# Run in its sandbox: the inputs and the shared file are here, by their base names.
echo "$1" >> "$RAN_LOG"
cat inputfile_$1.txt secondinputfile_$1.txt sharedfile.txt > cat_output_$1.txt
echo "$MINION_SANDBOX" >> cat_output_$1.txt
ls > ls_output_$1.txt
echo scratch > scratch.tmp
case " $FAILING " in *" $1 "*) exit 1;; esac
case " $FORGETTING " in *" $1 "*) rm ls_output_$1.txt;; esac
exit 0
"""
COMMAND = (
    "minionize -j 4 --max-attempts 2 --sandbox work "
    "--input 'in/inputfile_{}.txt' --input 'in/secondinputfile_{}.txt' "
    "--shared in/sharedfile.txt --output 'cat_output_{}.txt' --output 'ls_output_{}.txt' "
    "--collect results ./task.sh {}"
)


def tutorial(env: dict[str, str], pairs: int = PAIRS) -> dict[str, str]:
    """locusts' tutorial in the working directory; the environment of its task."""
    Path("in").mkdir()
    for i in range(pairs):
        Path(f"in/inputfile_{i}.txt").write_text(f"first {i}\n")
        if i != NO_INPUT:
            Path(f"in/secondinputfile_{i}.txt").write_text(f"second {i}\n")
    Path("in/sharedfile.txt").write_text("shared\n")
    Path("task.sh").write_text(TASK)
    os.chmod("task.sh", 0o755)
    return {
        **env,
        "RAN_LOG": str(Path("ran.log").resolve()),
        "FAILING": " ".join(map(str, sorted(EXITS_1))),
        "FORGETTING": " ".join(map(str, sorted(FORGETS))),
    }


def ls(directory: str) -> list[str]:
    """What ``ls`` shows: minionize's records (``.minionize``) are hidden."""
    return [name for name in os.listdir(directory) if not name.startswith(".")]


def ran(param: int) -> int:
    """How many times the task ran for ``param``."""
    return Path("ran.log").read_text().split().count(str(param))


def dead_letters(env: dict[str, str]) -> dict[int, dict[str, object]]:
    out = sh("minion-queue list dead --json", env)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return {int(row["param"]): row for row in rows}  # --from-files: "7" for inputfile_7.txt


def test_the_tutorial_run_and_its_rerun(user_env: dict[str, str]) -> None:
    env = tutorial(user_env)
    fill = sh("minion-queue fill --from-files 'in/inputfile_{}.txt'", env)
    assert fill.stdout.strip() == f"sweep queue in sweeps: added {PAIRS} params", fill.stderr
    start = time.monotonic()
    run = sh(COMMAND, env, timeout=300)
    took = time.monotonic() - start
    print(f"\n{PAIRS} input pairs with -j 4 (2 attempts of {len(EXITS_1 | FORGETS)} failing "
          f"params): {took:.2f} s")
    assert run.returncode == 1, run.stderr  # params were dead-lettered

    failing = EXITS_1 | FORGETS
    good = set(range(PAIRS)) - failing - {NO_INPUT}
    # Exactly the outputs of the successes, flat by name: no input, no scratch file.
    assert sorted(ls("results")) == sorted(
        f"{kind}_output_{i}.txt" for i in good for kind in ("cat", "ls"))
    dead = dead_letters(env)
    assert set(dead) == failing | {NO_INPUT}
    assert queue_status(env)["done"] == len(good)
    some = min(good)
    sandbox = Path(Path(f"results/cat_output_{some}.txt").read_text().splitlines()[-1])
    # Each attempt ran in its own sandbox, <id>.<attempt>.<random> under --sandbox, its
    # $MINION_SANDBOX.
    assert sandbox.parent == Path("work").resolve() and ".1." in sandbox.name
    assert Path(f"results/cat_output_{some}.txt").read_text() == (
        f"first {some}\nsecond {some}\nshared\n{sandbox}\n")
    # It held exactly the staged files (and what the task made before ls).
    assert Path(f"results/ls_output_{some}.txt").read_text().split() == [
        f"cat_output_{some}.txt", f"inputfile_{some}.txt", f"ls_output_{some}.txt",
        f"secondinputfile_{some}.txt", "sharedfile.txt"]

    # A non-zero exit fails even with its outputs; exit 0 with an output missing fails
    # naming it; neither is collected.
    for i in EXITS_1:
        assert dead[i]["reason"] == "exit code 1" and ran(i) == 2
    for i in FORGETS:
        assert dead[i]["reason"] == f"exit code 0 but output 'ls_output_{i}.txt' is missing"
        assert ran(i) == 2
    # The missing input: dead at once, not run, the reason naming the file.
    assert dead[NO_INPUT]["reason"] == (
        f"input 'in/secondinputfile_{NO_INPUT}.txt' does not exist: the param was not run")
    assert ran(NO_INPUT) == 0
    # Of each failed param, only its last attempt's sandbox is kept, named by its id.
    kept = sorted(os.listdir("work"))
    assert [name.rsplit(".", 1)[0] for name in kept] == sorted(
        f"{dead[i]['id']}.2" for i in failing)
    [one] = Path("work").glob(f"{dead[3]['id']}.2.*")
    assert sorted(os.listdir(one)) == [
        "cat_output_3.txt", "inputfile_3.txt", "ls_output_3.txt", "scratch.tmp",
        "secondinputfile_3.txt", "sharedfile.txt"]
    assert "dead letter: param \"50\" after attempt 1: input 'in/secondinputfile_50.txt'" in run.stderr

    # Fix the input and the task, requeue the dead letters, rerun: the job is finished;
    # the rerun leaves no sandbox, and removes none it did not make (the first run's).
    Path(f"in/secondinputfile_{NO_INPUT}.txt").write_text(f"second {NO_INPUT}\n")
    env = {**env, "FAILING": "", "FORGETTING": ""}
    assert sh("minion-queue requeue-dead", env).returncode == 0
    rerun = sh(COMMAND, env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(ls("results")) == 2 * PAIRS
    assert sorted(os.listdir("work")) == kept
    assert queue_status(env)["done"] == PAIRS and queue_status(env)["dead"] == 0


def test_variables_work_as_the_flags_and_per_param_layout(user_env: dict[str, str]) -> None:
    env = tutorial(user_env, pairs=3)
    env.update({
        "MINION_SANDBOX": "work",
        "MINION_INPUT": "in/inputfile_{}.txt\nin/secondinputfile_{}.txt",
        "MINION_SHARED": "in/sharedfile.txt",
        "MINION_OUTPUT": "cat_output_{}.txt",
        "MINION_COLLECT": "results",
        "MINION_COLLECT_LAYOUT": "per-param",
        "MINION_STAGE": "copy",
        "FAILING": "",
    })
    assert sh("minion-queue fill 0..2", env).returncode == 0
    run = sh("minionize ./task.sh {}", env)
    assert run.returncode == 0, run.stderr
    done = sh("minion-queue list done --json", env).stdout.splitlines()
    ids = sorted(json.loads(line)["id"] for line in done)
    assert sorted(ls("results")) == ids
    for ident in ids:
        assert os.listdir(Path("results", ident)) == [
            next(n for n in ["cat_output_0.txt", "cat_output_1.txt", "cat_output_2.txt"]
                 if Path("results", ident, n).exists())]
    assert os.listdir("work") == []


def test_a_missing_shared_file_stops_at_start(user_env: dict[str, str]) -> None:
    env = tutorial(user_env, pairs=3)
    assert sh("minion-queue fill 0..2", env).returncode == 0
    run = sh(COMMAND.replace("in/sharedfile.txt", "in/nosuchfile.txt"), env)
    assert run.returncode == 2
    assert run.stderr == ("minionize: error: --shared/MINION_SHARED 'in/nosuchfile.txt': no "
                          "such file: nothing was consumed\n")
    assert queue_status(env)["todo"] == 3 and not Path("ran.log").exists()


def test_a_flat_output_without_placeholder_stops_at_start(user_env: dict[str, str]) -> None:
    env = tutorial(user_env, pairs=3)
    assert sh("minion-queue fill 0..2", env).returncode == 0
    run = sh(COMMAND.replace("--output 'ls_output_{}.txt'", "--output ls_output.txt"), env)
    assert run.returncode == 2
    assert len(run.stderr.splitlines()) == 1
    assert "--output/MINION_OUTPUT 'ls_output.txt' names no placeholder" in run.stderr
    assert queue_status(env)["todo"] == 3 and not Path("ran.log").exists()


def test_keep_sandbox_always_and_never(user_env: dict[str, str]) -> None:
    env = tutorial(user_env, pairs=3)
    env["FAILING"] = "1"
    assert sh("minion-queue fill 0..2", env).returncode == 0
    run = sh(COMMAND.replace("minionize", "minionize --keep-sandbox never"), env)
    assert run.returncode == 1, run.stderr
    assert os.listdir("work") == []
    assert sh("minion-queue requeue-dead", env).returncode == 0
    run = sh(COMMAND.replace("minionize", "minionize --keep-sandbox always"), env)
    assert run.returncode == 1, run.stderr
    assert len(os.listdir("work")) == 2  # both attempts of param 1


def test_collect_to_another_filesystem(user_env: dict[str, str], tmp_path: Path) -> None:
    local = Path("/dev/shm")  # node-local scratch: a tmpfs, unlike the test's directory
    if not local.is_dir() or os.stat(local).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to put the sandboxes on")
    scratch = local / f"minionize-test-{os.getpid()}"
    env = tutorial(user_env, pairs=5)
    env["FAILING"] = ""
    try:
        assert sh("minion-queue fill 0..4", env).returncode == 0
        run = sh(COMMAND.replace("--sandbox work", f"--sandbox {scratch}"), env)
        assert run.returncode == 0, run.stderr
        assert sorted(ls("results")) == sorted(
            f"{kind}_output_{i}.txt" for i in range(5) for kind in ("cat", "ls"))
        assert Path("results/cat_output_4.txt").read_text().startswith("first 4\nsecond 4\n")
        assert os.listdir(scratch) == []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


SLOW = """#!/bin/sh
cat inputfile_$1.txt > out_$1.txt
touch started
exec sleep 60
"""


def test_a_graceful_stop_collects_nothing_and_leaves_no_sandbox(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    env = tutorial(user_env, pairs=3)
    Path("slow.sh").write_text(SLOW)
    os.chmod("slow.sh", 0o755)
    assert sh("minion-queue fill 0..2", env).returncode == 0
    minion = start_minion(
        {**env, "MINION_GRACE_PERIOD": "5"}, tmp_path, "-j", "2", "--sandbox", "work",
        "--input", "in/inputfile_{}.txt", "--output", "out_{}.txt", "--collect", "results",
        "./slow.sh", "{}")
    try:
        wait_for(lambda: len(list(Path("work").glob("*/started"))) == 2, 30,
                 "two tasks to start in their sandboxes")
        start = time.monotonic()
        os.kill(minion.pid, signal.SIGTERM)
        code, err = minion.finish(30)
    finally:
        minion.kill_group()
    assert code == 0, err
    assert time.monotonic() - start < 5  # the tasks got SIGTERM through the wrapper
    assert os.listdir("work") == [] and ls("results") == []
    assert queue_status(env)["todo"] == 3


def test_a_timed_out_attempt_keeps_its_sandbox(user_env: dict[str, str]) -> None:
    env = tutorial(user_env, pairs=1)
    Path("slow.sh").write_text(SLOW)
    os.chmod("slow.sh", 0o755)
    assert sh("minion-queue fill 0", env).returncode == 0
    run = sh("minionize --timeout 1 --max-attempts 1 --sandbox work --input "
             "'in/inputfile_{}.txt' --output 'out_{}.txt' --collect results ./slow.sh {}", env)
    assert run.returncode == 1, run.stderr
    assert "timed out after 1s" in run.stderr
    kept = os.listdir("work")
    assert len(kept) == 1 and ".1." in kept[0]
    assert sorted(os.listdir(Path("work", kept[0]))) == ["inputfile_0.txt", "out_0.txt", "started"]
    assert ls("results") == []
