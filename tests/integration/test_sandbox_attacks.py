"""Attacks on sandboxes and their collection, as a user types the commands: two runs
sharing one sandbox directory, output names that do not tell params apart, outputs that
lead out of the sandbox, a kill at each step of a collection, one bad param, a long
output name. Each judges what a user checks: exit codes, files, the queue's lists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import sh, start_minion, user_environment
from tests.services import wait_for

#: A task writing the param it ran ($MINION_PARAM) into the file named by $1.
WRITE_PARAM = """#!/bin/sh
mkdir -p "$(dirname "$1")"
printf '%s\\n' "$MINION_PARAM" > "$1"
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def script(name: str, text: str) -> None:
    Path(name).write_text(text)
    os.chmod(name, 0o755)


def listed(env: dict[str, str], kind: str, *flags: str) -> list[dict[str, object]]:
    out = sh(f"minion-queue list {kind} --json {' '.join(flags)}", env)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def visible(directory: str) -> list[str]:
    """What ``ls`` shows in ``directory`` (hidden entries left out)."""
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


# -- 1: two runs, one sandbox directory -------------------------------------------------

def test_two_runs_sharing_a_sandbox_directory_collect_their_own_outputs(here: Path) -> None:
    env = user_environment()
    script("task.sh", '#!/bin/sh\nsleep 1\necho "$QUEUE" > "out_$1.txt"\n')
    for queue in ("qa", "qb"):
        assert sh(f"minion-queue --dir {queue} fill 1..4", env).returncode == 0
    minions = [
        start_minion({**env, "QUEUE": queue, "EXECO_PERSISTENCE_DIR": queue}, here,
                     "-j", "4", "--sandbox", "work", "--output", "out_{}.txt",
                     "--collect", f"results_{queue}", "./task.sh", "{}")
        for queue in ("qa", "qb")
    ]
    for minion in minions:
        code, err = minion.finish(60)
        assert code == 0, err
    for queue in ("qa", "qb"):
        assert visible(f"results_{queue}") == [f"out_{i}.txt" for i in range(1, 5)]
        for i in range(1, 5):
            assert Path(f"results_{queue}/out_{i}.txt").read_text() == f"{queue}\n"
    assert visible("work") == []


# -- 3: collected outputs never overwritten ----------------------------------------------

@pytest.mark.parametrize("output", ["out_{#}.txt", "out_{%}.txt", "out_{}/result.txt"])
def test_an_output_name_no_param_fills_is_refused_at_start(here: Path, output: str) -> None:
    env = user_environment()
    assert sh("minion-queue fill 1..6", env).returncode == 0
    run = sh(f"minionize --sandbox work --output '{output}' --collect results true", env)
    assert run.returncode == 2, run.stderr
    assert "--collect-layout per-param" in run.stderr and len(run.stderr.splitlines()) == 1
    assert not listed(env, "done") and not listed(env, "dead")  # nothing consumed


@pytest.mark.parametrize("fill, output, command, collected", [
    ("--product n=1,2 m=a,b", "out_{n}.txt", "--template './task.sh out_{n}.txt'",
     ["out_1.txt", "out_2.txt"]),
    ("a/x b/x", "{}.res", "./task.sh {}.res", ["x.res"]),
    ("1 --file ones.jsonl", "out_{}.txt", "./task.sh out_{}.txt", ["out_1.txt"]),
])
def test_a_name_two_params_fill_is_never_replaced(
    here: Path, fill: str, output: str, command: str, collected: list[str]
) -> None:
    env = user_environment()
    script("task.sh", WRITE_PARAM)
    Path("ones.jsonl").write_text('"1"\n')
    assert sh(f"minion-queue fill {fill}", env).returncode == 0
    run = sh(f"minionize -j 2 --sandbox work --output '{output}' "
             f"--collect results {command}", env)
    assert run.returncode == 1, run.stderr
    assert visible("results") == collected
    done, dead = listed(env, "done"), listed(env, "dead")
    assert len(done) == len(collected) and len(dead) == len(collected), (done, dead)
    for name in collected:  # written once, by the param that is done with it
        assert Path("results", name).read_text().strip(), name
    for row in dead:
        assert row["attempts"] == 1, row
        reason = str(row["reason"])
        assert "already collected" in reason and "per-param" in reason, reason


def test_per_param_layout_keeps_both(here: Path) -> None:
    env = user_environment()
    script("task.sh", WRITE_PARAM)
    assert sh("minion-queue fill a/x b/x", env).returncode == 0
    run = sh("minionize --sandbox work --output '{}.res' --collect results "
             "--collect-layout per-param ./task.sh {}.res", env)
    assert run.returncode == 0, run.stderr
    contents = sorted(p.read_text() for p in Path("results").glob("*/x.res"))
    assert contents == ['"a/x"\n', '"b/x"\n']


# -- 4: nothing outside the sandbox is moved ---------------------------------------------

def test_a_staged_input_is_never_moved(here: Path) -> None:
    env = user_environment()
    Path("in/set_1").mkdir(parents=True)
    Path("in/set_1/data.txt").write_text("original\n")
    assert sh("minion-queue fill 1", env).returncode == 0
    run = sh("minionize --max-attempts 1 --sandbox work --input 'in/set_{}' "
             "--output 'set_{}/data.txt' --collect results --collect-layout per-param true",
             env)
    assert run.returncode == 1, run.stderr
    assert Path("in/set_1/data.txt").read_text() == "original\n"
    assert list(Path("results").rglob("data.txt")) == []
    [row] = listed(env, "dead")
    assert "set_1" in str(row["reason"]), row


@pytest.mark.parametrize("stage", ["copy", "hardlink"])
def test_a_staged_input_is_not_an_output(here: Path, stage: str) -> None:
    env = user_environment()
    Path("in").mkdir()
    Path("in/data_1.txt").write_text("original\n")
    assert sh("minion-queue fill 1", env).returncode == 0
    run = sh(f"minionize --max-attempts 1 --sandbox work --stage {stage} "
             "--input 'in/data_{}.txt' --output 'data_{}.txt' --collect results true", env)
    assert run.returncode == 1, run.stderr
    assert Path("in/data_1.txt").read_text() == "original\n" and visible("results") == []


def test_a_directory_symlink_the_task_made_pulls_nothing_in(here: Path) -> None:
    env = user_environment()
    Path("outside").mkdir()
    Path("outside/secret_1.txt").write_text("secret\n")
    script("task.sh", f'#!/bin/sh\nln -s {here}/outside "d_$1"\n')
    assert sh("minion-queue fill 1", env).returncode == 0
    run = sh("minionize --max-attempts 1 --sandbox work --output 'd_{}/secret_{}.txt' "
             "--collect results ./task.sh {}", env)
    assert run.returncode == 1, run.stderr
    assert Path("outside/secret_1.txt").read_text() == "secret\n"
    assert visible("results") == []
    [row] = listed(env, "dead")
    assert "symbolic link" in str(row["reason"]), row


# -- 5: a kill at each step of a collection ----------------------------------------------
#: The private test hook of minionize.callbacks.process.sandbox_files: the collecting minion SIGKILLs
#: itself right after step N of a collection (1: first output staged, 2: all staged and
#: the manifest written, 3: committed, 4: first output renamed, 5: all renamed).
KILL_AT = "_MINIONIZE_COLLECT_KILL_AT"


@pytest.mark.parametrize("step", [1, 2, 3, 4, 5])
def test_a_kill_at_any_step_of_a_collection_leaves_all_or_nothing(here: Path, step: int) -> None:
    env = {**user_environment(), "MINION_LEASE": "1"}
    script("task.sh", '#!/bin/sh\necho "$MINION_SANDBOX" > a_$1.txt\n'
                      'echo "$MINION_SANDBOX" > b_$1.txt\n')
    assert sh("minion-queue fill 7", env).returncode == 0
    command = ("minionize --sandbox work --output 'a_{}.txt' --output 'b_{}.txt' "
               "--collect results ./task.sh {}")
    killed = sh(command, {**env, KILL_AT: str(step)})
    assert killed.returncode == -9 or killed.returncode == 137, (killed.returncode, killed.stderr)
    names = visible("results")
    if step < 3:  # not committed: nothing under its name
        assert names == [], names
    wait_for(lambda: ": 1 expired" in sh("minion-queue reset-expired", env).stdout, 30,
             "the killed minion's lease to expire", every=0.2)
    rerun = sh(command, env)  # completes (or drops) what was left, then runs the param again
    assert rerun.returncode == 0, rerun.stderr
    assert visible("results") == ["a_7.txt", "b_7.txt"]
    a, b = (Path("results", name).read_text() for name in ("a_7.txt", "b_7.txt"))
    assert a == b  # one attempt's set
    leftovers = [p for p in Path("results").rglob("*") if p.is_file()
                 and "owners" not in p.parts and p.name not in ("a_7.txt", "b_7.txt")]
    assert leftovers == []


# -- 6: one bad param is its own dead letter ---------------------------------------------

def test_two_outputs_one_param_names_alike_are_its_dead_letter(here: Path) -> None:
    env = user_environment()
    script("task.sh", '#!/bin/sh\nmkdir -p "$(dirname "o_$1")" sub\n'
                      'touch "o_$1" "sub/o_$(basename "$1")"\n')
    assert sh("minion-queue fill x/1 x/2 3", env).returncode == 0
    run = sh("minionize --sandbox work --output 'o_{}' --output 'sub/o_{/}' "
             "--collect results ./task.sh {}", env)
    assert run.returncode == 1, run.stderr
    [row] = listed(env, "dead")
    assert row["param"] == 3 and row["attempts"] == 1 and "o_3" in str(row["reason"]), row
    assert visible("results") == ["1", "2", "o_1", "o_2"]


def test_a_clash_only_some_params_cause_dead_letters_them_at_once(here: Path) -> None:
    env = user_environment()
    Path("in/shared").mkdir(parents=True)
    for i in (1, 2, 3):
        Path(f"in/f_{i}.txt").write_text(f"{i}\n")
    Path("in/shared/f_2.txt").write_text("shared\n")
    Path("in/d_2").mkdir()
    for i in (1, 3):
        Path(f"in/d_{i}").write_text("file\n")
    script("task.sh", '#!/bin/sh\necho ok > "r_$1.txt"\n')
    assert sh("minion-queue fill --dir names 1..3", env).returncode == 0
    run = sh("minionize --sandbox work --input 'in/f_{}.txt' "
             "--shared in/shared/f_2.txt --output 'r_{}.txt' --collect results ./task.sh {}",
             {**env, "EXECO_PERSISTENCE_DIR": "names"})
    assert run.returncode == 1, run.stderr
    names = {**env, "EXECO_PERSISTENCE_DIR": "names"}
    [row] = listed(names, "dead")
    assert row["param"] == 2 and row["attempts"] == 1 and "f_2.txt" in str(row["reason"]), row
    assert visible("results") == ["r_1.txt", "r_3.txt"]
    # a directory input staged by hard link: that param only
    assert sh("minion-queue fill 1..3", env).returncode == 0
    run = sh("minionize --sandbox work2 --stage hardlink --input 'in/d_{}' "
             "--output 'r_{}.txt' --collect results2 ./task.sh {}", env)
    assert run.returncode == 1, run.stderr
    [row] = listed(env, "dead")
    assert row["param"] == 2 and row["attempts"] == 1 and "directory" in str(row["reason"]), row
    assert visible("results2") == ["r_1.txt", "r_3.txt"]


# -- 19: a long output name ---------------------------------------------------------------

def test_an_output_name_of_255_bytes_is_collected(here: Path) -> None:
    env = user_environment()
    name = "x" * 249 + "_{}.txt"  # 255 bytes once filled with 7
    script("task.sh", f'#!/bin/sh\necho ok > "{"x" * 249}_$1.txt"\n')
    assert sh("minion-queue fill 7", env).returncode == 0
    run = sh(f"minionize --max-attempts 1 --sandbox work --output '{name}' "
             "--collect results ./task.sh {}", env)
    assert run.returncode == 0, run.stderr
    assert visible("results") == ["x" * 249 + "_7.txt"]
