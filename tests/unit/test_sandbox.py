"""The parts of tasks with files (minionize/sandbox.py), without a minion: staging,
judging outputs, collecting all or nothing, and which sandboxes are kept."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from minionize.callbacks.base import Outcome, Result, StopReason
from minionize.callbacks.command import CommandBuilder
from minionize.config import Env
from minionize.engines.base import Delivery
from minionize.errors import CommandLineError, ConfigError
from minionize.sandbox import (
    MissingInput,
    Sandboxes,
    SandboxSpec,
    check_outputs,
    collect,
    sandboxes_of,
    split_list,
)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"inputfile_{i}.txt").write_text(f"a{i}\n")
        (tmp_path / "in" / f"secondinputfile_{i}.txt").write_text(f"b{i}\n")
    (tmp_path / "in" / "sharedfile.txt").write_text("shared\n")
    return tmp_path


def boxes(**given: Any) -> Sandboxes:
    spec: dict[str, Any] = {
        "root": "work",
        "inputs": ("in/inputfile_{}.txt", "in/secondinputfile_{}.txt"),
        "shared": ("in/sharedfile.txt",),
        "outputs": ("cat_output_{}.txt",),
        "collect": "results",
    }
    spec.update(given)
    sandboxes = Sandboxes(SandboxSpec(**spec))
    sandboxes.setup()
    return sandboxes


def prepare(sandboxes: Sandboxes, param: Any, attempt: int = 1, ident: str = "") -> Any:
    builder = CommandBuilder(["./task.sh", "{}"])
    delivery = Delivery(param, ident or f"p{param}", attempt)
    builder.begin(delivery)
    builder.argv(param)
    return sandboxes.prepare(delivery, builder)


OK = Result(Outcome.OK, exit_code=0)


# -- the settings ------------------------------------------------------------------------
def test_spec_from_variables_with_defaults() -> None:
    spec = SandboxSpec.from_env(Env({
        "MINION_SANDBOX": "work", "MINION_INPUT": "a_{}.txt\nb_{}.txt\n", "MINION_OUTPUT": "o_{}",
    }))
    assert spec == SandboxSpec(root="work", inputs=("a_{}.txt", "b_{}.txt"), outputs=("o_{}",))
    assert (spec.stage, spec.keep, spec.layout) == ("symlink", "failed", "flat")
    assert SandboxSpec.from_env(Env({})) is None
    assert split_list("\n x \n\n y") == ("x", "y")


@pytest.mark.parametrize("values, words", [
    ({"MINION_SANDBOX": "w", "MINION_STAGE": "move"}, "MINION_STAGE='move' is not one of symlink"),
    ({"MINION_SANDBOX": "w", "MINION_KEEP_SANDBOX": "x"}, "MINION_KEEP_SANDBOX='x'"),
    ({"MINION_OUTPUT": "o_{}"}, "MINION_OUTPUT works in a sandbox: give --sandbox"),
    ({"MINION_COLLECT": "r"}, "MINION_COLLECT works in a sandbox"),
])
def test_spec_mistakes_name_the_variable(values: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        SandboxSpec.from_env(Env(values))


def test_flat_collection_of_an_output_without_placeholder_is_a_config_error(here: Path) -> None:
    with pytest.raises(ConfigError, match="'out.txt' names no placeholder.*per-param"):
        boxes(outputs=("out.txt",))
    with pytest.raises(ConfigError, match="names no placeholder"):
        boxes(outputs=("out_{%}.txt",))  # the slot is not the param
    boxes(outputs=("out.txt",), layout="per-param")  # DIR/<id>/out.txt: fine
    boxes(outputs=("out.txt",), collect=None)  # not collected: fine
    boxes(outputs=("out_{/.}.txt", "o_{#}"))


@pytest.mark.parametrize("output", ["/tmp/out_{}.txt", "../out_{}.txt", "a/../../out_{}"])
def test_an_output_outside_the_sandbox_is_a_config_error(here: Path, output: str) -> None:
    with pytest.raises(ConfigError, match="inside the sandbox"):
        boxes(outputs=(output,))


def test_a_malformed_pattern_is_a_config_error(here: Path) -> None:
    with pytest.raises(ConfigError, match="--input/MINION_INPUT 'in/{a.b}'"):
        boxes(inputs=("in/{a.b}",))


def test_a_missing_shared_file_is_a_config_error_at_setup(here: Path) -> None:
    with pytest.raises(ConfigError, match="MINION_SHARED 'in/nope.txt': no such file"):
        boxes(shared=("in/nope.txt",))
    assert not (here / "work").exists() or not os.listdir(here / "work")


def test_two_shared_files_with_one_name_is_a_config_error(here: Path) -> None:
    (here / "other").mkdir()
    (here / "other" / "sharedfile.txt").write_text("")
    with pytest.raises(ConfigError, match="two files named 'sharedfile.txt'"):
        boxes(shared=("in/sharedfile.txt", "other/sharedfile.txt"))


# -- staging -----------------------------------------------------------------------------
def test_a_sandbox_holds_exactly_its_inputs_and_the_shared_files(here: Path) -> None:
    attempt = prepare(boxes(), 1, attempt=2)
    box = Path(attempt.path)
    assert box == here / "work" / "p1.2"
    assert sorted(os.listdir(box)) == ["inputfile_1.txt", "secondinputfile_1.txt", "sharedfile.txt"]
    link = box / "inputfile_1.txt"
    assert link.is_symlink() and os.readlink(link) == str(here / "in" / "inputfile_1.txt")
    assert link.read_text() == "a1\n"


@pytest.mark.parametrize("how", ["copy", "hardlink"])
def test_staging_by_copy_or_hard_link(here: Path, how: str) -> None:
    box = Path(prepare(boxes(stage=how), 0).path)
    staged = box / "inputfile_0.txt"
    assert not staged.is_symlink() and staged.read_text() == "a0\n"
    same = os.stat(staged).st_ino == os.stat(here / "in" / "inputfile_0.txt").st_ino
    assert same is (how == "hardlink")


def test_placeholders_as_in_the_command(here: Path) -> None:
    sandboxes = boxes(inputs=("{}", "{//}/secondinputfile_1.txt"), outputs=("{/.}.out",))
    attempt = prepare(sandboxes, "in/inputfile_1.txt")
    assert sorted(os.listdir(attempt.path)) == [
        "inputfile_1.txt", "secondinputfile_1.txt", "sharedfile.txt"]
    assert attempt.outputs == [("inputfile_1.out", "inputfile_1.out")]


def test_a_mapping_param_fills_names(here: Path) -> None:
    sandboxes = boxes(inputs=("in/inputfile_{n}.txt",), outputs=("out_{n}.txt",))
    builder = CommandBuilder([], template="./task.sh {n}")
    delivery = Delivery({"n": 2}, "x", 1)
    builder.argv(delivery.param)
    attempt = sandboxes.prepare(delivery, builder)
    assert "inputfile_2.txt" in os.listdir(attempt.path)
    with pytest.raises(CommandLineError, match="MINION_INPUT 'in/inputfile_{m}.txt'.*no key 'm'"):
        boxes(inputs=("in/inputfile_{m}.txt",)).prepare(delivery, builder)


def test_a_missing_input_rejects_the_param_naming_the_file(here: Path) -> None:
    (here / "in" / "secondinputfile_2.txt").unlink()
    with pytest.raises(MissingInput, match="input 'in/secondinputfile_2.txt' does not exist"):
        prepare(boxes(), 2)
    assert os.listdir(here / "work") == []  # nothing made for a param that does not run


def test_two_inputs_with_one_base_name_stop_the_minion(here: Path) -> None:
    with pytest.raises(CommandLineError, match="two files named 'sharedfile.txt'"):
        prepare(boxes(inputs=("in/sharedfile.txt",)), 0)


def test_two_outputs_with_one_base_name_stop_the_minion(here: Path) -> None:
    with pytest.raises(CommandLineError, match="two outputs named 'o_0.txt'"):
        prepare(boxes(outputs=("a/o_{}.txt", "b/o_{}.txt")), 0)
    prepare(boxes(outputs=("a/o_{}.txt", "b/o_{}.txt"), collect=None), 0)  # not collected


def test_sequence_number_is_the_commands(here: Path) -> None:
    sandboxes = boxes(inputs=(), outputs=("out_{#}.txt",))
    builder = CommandBuilder(["./task.sh", "{#}"])
    delivery = Delivery("x", "x", 1, number=42)
    builder.begin(delivery)
    assert builder.argv("x") == ["./task.sh", "42"]
    assert sandboxes.prepare(delivery, builder).outputs == [("out_42.txt", "out_42.txt")]


def test_a_new_attempt_gets_a_fresh_sandbox_and_removes_older_ones(here: Path) -> None:
    sandboxes = boxes()
    first = prepare(sandboxes, 0, attempt=1)
    Path(first.path, "scratch").write_text("x")
    prepare(boxes(), 1, attempt=1)  # another param's sandbox stays
    again = prepare(sandboxes, 0, attempt=1)  # a leftover of a stopped attempt
    assert "scratch" not in os.listdir(again.path)
    prepare(sandboxes, 0, attempt=2)
    assert sorted(os.listdir(here / "work")) == ["p0.2", "p1.1"]


def test_keep_always_keeps_every_attempt(here: Path) -> None:
    sandboxes = boxes(keep="always")
    for attempt in (1, 2, 3):
        prepare(sandboxes, 0, attempt=attempt)
    assert sorted(os.listdir(here / "work")) == ["p0.1", "p0.2", "p0.3"]


def test_sandboxes_of_a_param_by_name() -> None:
    names = ["7.1", "7.12", "77.1", "7.x", "7", "8.1"]
    assert sandboxes_of(names, "7") == [("7.1", 1), ("7.12", 12)]


# -- judging and collecting --------------------------------------------------------------
def test_check_outputs_wants_regular_files(tmp_path: Path) -> None:
    (tmp_path / "ok").write_text("")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "ok")
    assert check_outputs(str(tmp_path), ["ok"]) == ""
    assert check_outputs(str(tmp_path), ["ok", "gone", "dir", "link"]) == (
        "output 'gone' is missing; output 'dir' is not a file, not a regular file; "
        "output 'link' is a symbolic link, not a regular file"
    )


def test_collect_moves_exactly_the_files(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    for name in ("a", "b", "scratch"):
        (box / name).write_text(name)
    collect([(str(box / "a"), "a"), (str(box / "b"), "b")], str(tmp_path / "results"))
    assert sorted(os.listdir(tmp_path / "results")) == ["a", "b"]
    assert os.listdir(box) == ["scratch"]


def test_collect_is_all_or_nothing(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    (box / "a").write_text("a")
    results = tmp_path / "results"
    with pytest.raises(OSError):
        collect([(str(box / "a"), "a"), (str(box / "gone"), "gone")], str(results))
    assert os.listdir(results) == []  # no part, no a
    assert (box / "a").read_text() == "a"  # put back
    (results / "b").mkdir()  # a directory has an output's name
    (box / "b").write_text("b")
    with pytest.raises(IsADirectoryError):
        collect([(str(box / "a"), "a"), (str(box / "b"), "b")], str(results))
    assert os.listdir(results) == ["b"] and sorted(os.listdir(box)) == ["a", "b"]


def test_collect_across_filesystems_copies_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = tmp_path / "box"
    box.mkdir()
    (box / "a").write_text("new")
    results = tmp_path / "results"
    results.mkdir()
    (results / "a").write_text("old")
    real_rename = os.rename
    seen: list[str] = []

    def rename(src: str, dst: str) -> None:
        if str(src).startswith(str(box)):  # as if box were on a node's local disk
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)

    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        seen.append(os.path.basename(src))
        assert (results / "a").read_text() == "old"  # never half a file under its name
        real_replace(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    collect([(str(box / "a"), "a")], str(results))
    assert (results / "a").read_text() == "new"
    assert os.listdir(results) == ["a"]
    assert seen[0].startswith(".a.") and seen[0].endswith(".part")


# -- an attempt's end --------------------------------------------------------------------
def test_success_collects_and_removes_every_sandbox_of_the_param(here: Path) -> None:
    sandboxes = boxes()
    prepare(sandboxes, 0, attempt=1)
    attempt = prepare(sandboxes, 0, attempt=2)
    Path(attempt.path, "cat_output_0.txt").write_text("out")
    Path(attempt.path, "scratch").write_text("x")
    assert sandboxes.finish(attempt, OK, None).ok
    assert os.listdir(here / "results") == ["cat_output_0.txt"]
    assert os.listdir(here / "work") == []


def test_a_non_zero_exit_fails_even_with_its_outputs(here: Path) -> None:
    sandboxes = boxes()
    attempt = prepare(sandboxes, 0)
    Path(attempt.path, "cat_output_0.txt").write_text("out")
    failed = Result(Outcome.FAILED, reason="exit code 1", exit_code=1)
    assert sandboxes.finish(attempt, failed, None) is failed
    assert os.listdir(here / "results") == []
    assert os.listdir(here / "work") == ["p0.1"]  # kept, to look at


def test_exit_zero_with_an_output_missing_fails_naming_it(here: Path) -> None:
    sandboxes = boxes(outputs=("cat_output_{}.txt", "ls_output_{}.txt"))
    attempt = prepare(sandboxes, 0)
    Path(attempt.path, "cat_output_0.txt").write_text("out")
    result = sandboxes.finish(attempt, OK, None)
    assert result.outcome is Outcome.FAILED and result.exit_code == 0
    assert result.reason == "exit code 0 but output 'ls_output_0.txt' is missing"
    assert os.listdir(here / "results") == []
    assert sorted(os.listdir(attempt.path))[:1] == ["cat_output_0.txt"]


def test_per_param_layout(here: Path) -> None:
    sandboxes = boxes(outputs=("out.txt",), layout="per-param")
    attempt = prepare(sandboxes, 0, ident="id/0")
    Path(attempt.path, "out.txt").write_text("out")
    assert sandboxes.finish(attempt, OK, None).ok
    assert (here / "results" / "id_0" / "out.txt").read_text() == "out"


def test_keep_never_and_keep_always(here: Path) -> None:
    failed = Result(Outcome.FAILED, reason="exit code 1", exit_code=1)
    never = boxes(keep="never")
    assert not never.finish(prepare(never, 0), failed, None).ok
    assert os.listdir(here / "work") == []
    always = boxes(keep="always")
    attempt = prepare(always, 0)
    Path(attempt.path, "cat_output_0.txt").write_text("out")
    assert always.finish(attempt, OK, None).ok
    assert os.listdir(here / "work") == ["p0.1"]


def test_a_stopped_task_decides_nothing(here: Path) -> None:
    sandboxes = boxes()
    attempt = prepare(sandboxes, 0)
    Path(attempt.path, "cat_output_0.txt").write_text("out")
    # Given back at a graceful stop: nothing collected, nothing left.
    assert sandboxes.finish(attempt, OK, StopReason.SHUTDOWN) is OK
    assert os.listdir(here / "results") == [] and os.listdir(here / "work") == []
    # Timed out: a failed attempt, its sandbox kept.
    attempt = prepare(sandboxes, 0, attempt=2)
    Path(attempt.path, "cat_output_0.txt").write_text("out")
    sandboxes.finish(attempt, OK, StopReason.TIMEOUT)
    assert os.listdir(here / "results") == [] and os.listdir(here / "work") == ["p0.2"]


def test_a_dead_letters_sandbox_goes_when_the_param_succeeds(here: Path) -> None:
    sandboxes = boxes()
    prepare(sandboxes, 0, attempt=3)  # kept by the dead letter
    attempt = prepare(sandboxes, 0, attempt=1)  # requeued: its attempts counted again
    assert sorted(os.listdir(here / "work")) == ["p0.1", "p0.3"]
    failed = Result(Outcome.FAILED, reason="exit code 1", exit_code=1)
    sandboxes.finish(attempt, failed, None)
    attempt = prepare(sandboxes, 0, attempt=2)
    assert sorted(os.listdir(here / "work")) == ["p0.2", "p0.3"]
    Path(attempt.path, "cat_output_0.txt").write_text("out")
    assert sandboxes.finish(attempt, OK, None).ok
    assert os.listdir(here / "work") == []


def test_hard_links_across_filesystems_stop_the_minion(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def link(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link", src)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(CommandLineError, match="--stage hardlink: cannot link .*use --stage copy"):
        prepare(boxes(stage="hardlink"), 0)
    assert os.listdir(here / "work") == []
