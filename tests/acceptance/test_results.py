"""What a function returned, read back as a user does: a ``@minionize.task`` script on a
sweep queue, then ``minion-queue results``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import sh

SCRIPT = """
import sys
import minionize

@minionize.task
def simulate(param):
    if param == 7:
        return None  # nothing to keep
    return {"param": param, "square": param * param, "label": f"é{param}"}

sys.exit(simulate.run())
"""


def test_a_function_task_on_a_sweep_queue_keeps_what_it_returned(
    tmp_path: Path, user_env: dict[str, str]
) -> None:
    (tmp_path / "simulate.py").write_text(SCRIPT)
    out = sh("minion-queue fill 0..9 && python simulate.py", user_env)
    assert out.returncode == 0, out.stderr
    out = sh("minion-queue results", user_env)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout == "".join(
        f'{p}\tnull\n' if p == 7 else
        f'{p}\t{{"label": "é{p}", "param": {p}, "square": {p * p}}}\n'
        for p in range(10)
    )
    done = sh("minion-queue list done --json", user_env).stdout.splitlines()
    ids = [json.loads(line)["id"] for line in done]
    out = sh("minion-queue results --json", user_env)
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        f'{{"id": "{ids[p]}", "param": 7, "result": null}}' if p == 7 else
        f'{{"id": "{ids[p]}", "param": {p}, "result": {{"label": "\\u00e9{p}", "param": {p}, '
        f'"square": {p * p}}}}}'
        for p in range(10)
    ]
    out = sh("minion-queue results --limit 2", user_env)
    assert out.stdout.splitlines() == ['0\t{"label": "é0", "param": 0, "square": 0}',
                                       '1\t{"label": "é1", "param": 1, "square": 1}']


def test_python_reads_the_results_with_the_settings_of_a_minion(
    tmp_path: Path, user_env: dict[str, str]
) -> None:
    (tmp_path / "simulate.py").write_text(SCRIPT)
    assert sh("minion-queue --dir q fill 0..3 && EXECO_PERSISTENCE_DIR=q python simulate.py",
              user_env).returncode == 0
    out = sh("""python -c 'import minionize
for row in minionize.results(EXECO_PERSISTENCE_DIR="q"): print(row["param"], row["result"])'""",
             user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"{p} {{'label': 'é{p}', 'param': {p}, 'square': {p * p}}}" for p in range(4)
    ]


SHAPES = """
import sys
import minionize

@minionize.task
def shape(param):
    if param == 1:
        value = 0
        for _ in range(980):
            value = [value]
        return value  # nested 980 deep
    if param == 2:
        return {1: "one"}
    return {"ok": param}

sys.exit(shape.run())
"""


def test_a_result_that_cannot_be_read_back_exactly_is_a_dead_letter_and_the_rest_read(
    tmp_path: Path, user_env: dict[str, str]
) -> None:
    (tmp_path / "shape.py").write_text(SHAPES)
    out = sh("minion-queue fill 0..3 && MINION_MAX_ATTEMPTS=1 python shape.py", user_env)
    assert out.returncode == 1, out.stderr  # a dead letter
    dead = {json.loads(line)["param"]: json.loads(line)["reason"]
            for line in sh("minion-queue list dead --json", user_env).stdout.splitlines()}
    assert set(dead) == {1, 2}
    assert "nested 980 deep" in dead[1] and "key 1 is not a string" in dead[2]
    out = sh("""python -c 'import minionize
for row in minionize.results(): print(row["param"], row["result"])'""", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["0 {'ok': 0}", "3 {'ok': 3}"]


def test_results_of_the_file_engine_deleted_are_an_error_and_a_rerun_recomputes_them(
    tmp_path: Path, user_env: dict[str, str]
) -> None:
    (tmp_path / "p.txt").write_text("a\nbb\n")
    (tmp_path / "length.py").write_text(
        "import minionize\n\n@minionize.task\ndef length(line):\n    return len(line)\n\n"
        "length.run()\n")
    run = "MINION_ENGINE=file FILE_PATH=p.txt python length.py"
    assert sh(run, user_env).returncode == 0
    (tmp_path / "p.txt.results").unlink()
    out = sh("FILE_PATH=p.txt minion-queue results --engine file", user_env)
    assert out.returncode == 2 and out.stdout == "", out
    assert "p.txt.results is missing: the results of 2 done lines are lost" in out.stderr
    assert len(out.stderr.splitlines()) == 1
    assert sh(run, user_env).returncode == 0
    out = sh("FILE_PATH=p.txt minion-queue results --engine file", user_env)
    assert (out.returncode, out.stdout) == (0, '"a"\t1\n"bb"\t2\n'), out
