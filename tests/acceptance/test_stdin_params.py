"""Params from standard input without asking for them, the xargs habit (issue 22 item 2):
with no engine chosen and no sweep queue, a pipe or a file on standard input is the
input; a sweep queue there wins, with a warning that standard input is ignored."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import sh


def test_seq_piped_into_minionize_runs_each_line(user_env: dict[str, str]) -> None:
    out = sh("seq 3 | minionize echo", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["1", "2", "3"]
    assert out.stderr == ""
    assert not Path("sweeps").exists()


def test_lines_from_a_pipe_run_once_each_with_several_at_once(user_env: dict[str, str]) -> None:
    out = sh("seq 6 | minionize -j 3 echo n", user_env)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()) == [f"n {i}" for i in range(1, 7)]


def test_a_file_on_standard_input_is_input_too(user_env: dict[str, str]) -> None:
    Path("p.txt").write_text("a b\nc\n")
    out = sh("minionize echo < p.txt", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["a b", "c"]


def test_null_separated_records_alone_mean_standard_input(user_env: dict[str, str]) -> None:
    out = sh(r"""printf 'a\0b c\0' | minionize -0 sh -c 'echo "[$1]"' task""", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[a]", "[b c]"]  # 2 tasks, the space kept


def test_find_print0_piped_into_minionize_0(user_env: dict[str, str]) -> None:
    Path("d").mkdir()
    for name in ("x y.txt", "z.txt"):
        Path("d", name).write_text(name)
    out = sh("find d -type f -print0 | minionize -0 gzip", user_env)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in Path("d").iterdir()) == ["x y.txt.gz", "z.txt.gz"]


def test_a_sweep_queue_there_wins_over_a_pipe_with_one_warning(user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill q1 q2", user_env).returncode == 0
    out = sh("seq 3 | minionize echo", user_env)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()) == ["q1", "q2"]
    [warning] = out.stderr.splitlines()
    assert "standard input is ignored" in warning and "-a -" in warning
    assert "sweeps" in warning


def test_a_queue_dir_given_wins_over_a_pipe_too(user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill --queue-dir q only", user_env).returncode == 0
    out = sh("seq 3 | minionize --queue-dir q echo", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["only"]
    assert "standard input is ignored" in out.stderr


def test_dash_a_dash_reads_the_pipe_even_with_a_queue_there(user_env: dict[str, str]) -> None:
    assert sh("minion-queue fill q1", user_env).returncode == 0
    out = sh("seq 2 | minionize -a - echo", user_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["1", "2"] and out.stderr == ""


def test_dev_null_is_no_input_so_the_missing_queue_is_an_error(user_env: dict[str, str]) -> None:
    out = sh("minionize echo < /dev/null", user_env)
    assert out.returncode == 2
    assert "no sweep queue there" in out.stderr and "minion-queue fill" in out.stderr
    assert out.stdout == ""


def test_an_engine_chosen_never_reads_standard_input(user_env: dict[str, str]) -> None:
    out = sh("seq 3 | MINION_ENGINE=sweep minionize echo", user_env)
    assert out.returncode == 2 and "no sweep queue there" in out.stderr
    assert out.stdout == ""
