"""The parts of tasks with files (minionize/sandbox.py), without a minion: staging,
judging outputs, collecting all or nothing, and which sandboxes are kept."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from minionize import owners as _owner
from minionize.callbacks.base import Outcome, Result, StopReason
from minionize.callbacks.command.builder import CommandBuilder, ParamError
from minionize.callbacks.process.collect import STATE_DIR, CollectClash, claim, recover
from minionize.callbacks.process.sandbox import (
    MissingInput,
    Sandboxes,
    SandboxSpec,
    check_outputs,
    collect,
    split_list,
)
from minionize.config import Env
from minionize.engines.base import Delivery
from minionize.errors import CommandLineError, ConfigError


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


def made(here: Path) -> list[str]:
    """The sandboxes in work/, as ``<id>.<attempt>`` (their random part left out)."""
    return sorted(name.rsplit(".", 1)[0] for name in os.listdir(here / "work"))


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
    boxes(outputs=("out_{/.}.txt", "o_{}_{#}"))


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
    assert box.parent == here / "work" and box.name.startswith("p1.2.")
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


def test_files_every_param_names_alike_are_a_config_error(here: Path) -> None:
    with pytest.raises(ConfigError, match="two files named 'sharedfile.txt' for every param"):
        boxes(inputs=("in/sharedfile.txt",))
    with pytest.raises(ConfigError, match="two files named 'f_{}.txt' for every param"):
        boxes(inputs=("a/f_{}.txt", "b/f_{}.txt"))
    with pytest.raises(ConfigError, match="two outputs named 'o_{}.txt' for every param"):
        boxes(outputs=("a/o_{}.txt", "b/o_{}.txt"))
    boxes(outputs=("a/o_{}.txt", "b/o_{}.txt"), collect=None)  # not collected


def test_a_clash_only_this_param_makes_rejects_it(here: Path) -> None:
    with pytest.raises(ParamError, match="two files named 'sharedfile.txt' for this param"):
        prepare(boxes(inputs=("in/{}",)), "sharedfile.txt")
    with pytest.raises(ParamError, match="two outputs named 'o_x' for this param"):
        prepare(boxes(inputs=(), outputs=("o_{}", "sub/o_{/}")), "x")
    prepare(boxes(inputs=(), outputs=("o_{}", "sub/o_{/}")), "d/x")
    (here / "in" / "dir_1").mkdir()
    with pytest.raises(ParamError, match="'in/dir_1' is a directory: --stage hardlink"):
        prepare(boxes(stage="hardlink", inputs=("in/dir_{}",)), 1)
    assert made(here) == ["pd_x.1"]  # nothing made for a param rejected


@pytest.mark.parametrize("output", ["out_{#}.txt", "out_{%}.txt", "out_{}/result.txt", "o.txt"])
def test_a_flat_output_name_no_param_fills_is_a_config_error(here: Path, output: str) -> None:
    with pytest.raises(ConfigError, match="names no placeholder of the param in its file name"
                                          ".*--collect-layout per-param"):
        boxes(outputs=(output,))
    boxes(outputs=(output,), layout="per-param")


def test_sequence_number_is_the_commands(here: Path) -> None:
    sandboxes = boxes(inputs=(), outputs=("out_{#}.txt",), layout="per-param")
    builder = CommandBuilder(["./task.sh", "{#}"])
    delivery = Delivery("x", "x", 1, number=42)
    builder.begin(delivery)
    assert builder.argv("x") == ["./task.sh", "42"]
    assert sandboxes.prepare(delivery, builder).outputs == [("out_42.txt", "out_42.txt")]


def test_a_new_attempt_gets_a_fresh_sandbox_and_removes_older_ones(here: Path) -> None:
    sandboxes = boxes()
    first = prepare(sandboxes, 0, attempt=1)
    Path(first.path, "scratch").write_text("x")
    prepare(sandboxes, 1, attempt=1)  # another param's sandbox stays
    again = prepare(sandboxes, 0, attempt=1)  # after a stopped attempt with that number
    assert "scratch" not in os.listdir(again.path) and again.path != first.path
    prepare(sandboxes, 0, attempt=2)
    assert made(here) == ["p0.2", "p1.1"]


def test_a_minion_never_touches_a_sandbox_it_did_not_make(here: Path) -> None:
    mine, theirs = boxes(), boxes()  # two minions (two queues), one sandbox directory
    their_box = prepare(theirs, 0, attempt=1)
    Path(their_box.path, "cat_output_0.txt").write_text("theirs")
    attempt = prepare(mine, 0, attempt=1)
    assert attempt.path != their_box.path
    prepare(mine, 0, attempt=2)
    assert os.path.isdir(their_box.path)
    assert made(here) == ["p0.1", "p0.2"]
    assert theirs.finish(their_box, OK, None).ok
    assert (here / "results" / "cat_output_0.txt").read_text() == "theirs"


def test_keep_always_keeps_every_attempt(here: Path) -> None:
    sandboxes = boxes(keep="always")
    for attempt in (1, 2, 3):
        prepare(sandboxes, 0, attempt=attempt)
    assert made(here) == ["p0.1", "p0.2", "p0.3"]


# -- judging and collecting --------------------------------------------------------------
def test_check_outputs_wants_regular_files_the_task_made(tmp_path: Path) -> None:
    (tmp_path / "ok").write_text("")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "ok")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("")
    (tmp_path / "d").symlink_to(tmp_path / "outside")
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "data").write_text("")
    assert check_outputs(str(tmp_path), ["ok"]) == ""
    assert check_outputs(str(tmp_path), ["ok", "gone", "dir", "link"]) == (
        "output 'gone' is missing; output 'dir' is not a file, not a regular file; "
        "output 'link' is a symbolic link, not a regular file in the sandbox"
    )
    assert check_outputs(str(tmp_path), ["d/secret"]) == (
        "output 'd/secret' is a symbolic link: 'd', not a regular file in the sandbox")
    assert check_outputs(str(tmp_path), ["input/data", "ok"], staged=["input", "ok"]) == (
        "output 'input/data' is inside the staged input 'input', not a file the task made; "
        "output 'ok' is a staged input, not a file the task made")


def visible(path: Path) -> list[str]:
    return sorted(name for name in os.listdir(path) if name != STATE_DIR)


def test_collect_moves_exactly_the_files(tmp_path: Path) -> None:
    box = tmp_path / "box"
    (box / "sub").mkdir(parents=True)
    for name in ("a", "sub/b", "scratch"):
        (box / name).write_text(name)
    collect(str(box), [("a", "a"), ("sub/b", "b")], str(tmp_path / "results"))
    assert visible(tmp_path / "results") == ["a", "b"]
    assert sorted(os.listdir(box)) == ["scratch", "sub"]
    assert os.listdir(tmp_path / "results" / STATE_DIR) == []  # nothing in progress


def test_collect_is_all_or_nothing(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    (box / "a").write_text("a")
    results = tmp_path / "results"
    with pytest.raises(OSError):
        collect(str(box), [("a", "a"), ("gone", "gone")], str(results))
    assert visible(results) == [] and os.listdir(results / STATE_DIR) == []
    assert (box / "a").read_text() == "a"  # put back
    (results / "b").mkdir()  # a directory has an output's name
    (box / "b").write_text("b")
    with pytest.raises(IsADirectoryError):
        collect(str(box), [("a", "a"), ("b", "b")], str(results))
    assert visible(results) == ["b"] and sorted(os.listdir(box)) == ["a", "b"]
    (box / "d").symlink_to(tmp_path)  # a link on the way: never followed
    (tmp_path / "c").write_text("outside")
    with pytest.raises(OSError):
        collect(str(box), [("a", "a"), ("d/c", "c")], str(results))
    assert (tmp_path / "c").read_text() == "outside" and (box / "a").exists()


def test_collect_across_filesystems_copies_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = tmp_path / "box"
    box.mkdir()
    (box / "a").write_text("new")
    results = tmp_path / "results"
    results.mkdir()
    (results / "a").write_text("old")
    real_rename, real_replace = os.rename, os.replace
    seen: list[str] = []

    def rename(src: str, dst: str, **kwargs: Any) -> None:
        if kwargs.get("src_dir_fd") is not None:  # out of the sandbox: another disk
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst, **kwargs)

    def replace(src: str, dst: str) -> None:
        seen.append(os.path.basename(src))
        assert (results / "a").read_text() == "old"  # never half a file under its name
        real_replace(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    collect(str(box), [("a", "a")], str(results))
    assert (results / "a").read_text() == "new" and (box / "a").exists()
    assert visible(results) == ["a"] and seen == ["0"]  # a short temporary name


def test_a_name_is_owned_by_the_param_that_collected_it(tmp_path: Path) -> None:
    claim(str(tmp_path), "out_1.txt", "id1", "1")
    claim(str(tmp_path), "out_1.txt", "id1", "1")  # its own again: a next attempt
    with pytest.raises(CollectClash, match=r"'out_1.txt' was already collected by param 1: "
                                           r"""params "1" and 1 give one name"""):
        claim(str(tmp_path), "out_1.txt", "id2", '"1"')


def test_a_killed_collection_is_finished_or_dropped(tmp_path: Path) -> None:
    state = tmp_path / STATE_DIR
    committed, dropped, running = state / "c1", state / "p2", state / "p3"
    for path in (committed, dropped, running):
        path.mkdir(parents=True)
    (committed / "0").write_text("a")
    (committed / "manifest").write_text('["a", "x"]')  # x was renamed already
    (tmp_path / "x").write_text("x")
    (dropped / "owner").write_text(f"{_owner.host_hash()}.999999999.0\n")
    (running / "owner").write_text(f"{_owner.owner_tag()}\n")
    recover(str(tmp_path))
    assert (tmp_path / "a").read_text() == "a" and (tmp_path / "x").read_text() == "x"
    assert sorted(os.listdir(state)) == ["p3"]


# -- an attempt's end --------------------------------------------------------------------
def test_success_collects_and_removes_every_sandbox_of_the_param(here: Path) -> None:
    sandboxes = boxes()
    prepare(sandboxes, 0, attempt=1)
    attempt = prepare(sandboxes, 0, attempt=2)
    Path(attempt.path, "cat_output_0.txt").write_text("out")
    Path(attempt.path, "scratch").write_text("x")
    assert sandboxes.finish(attempt, OK, None).ok
    assert visible(here / "results") == ["cat_output_0.txt"]
    assert os.listdir(here / "work") == []


def test_a_non_zero_exit_fails_even_with_its_outputs(here: Path) -> None:
    sandboxes = boxes()
    attempt = prepare(sandboxes, 0)
    Path(attempt.path, "cat_output_0.txt").write_text("out")
    failed = Result(Outcome.FAILED, reason="exit code 1", exit_code=1)
    assert sandboxes.finish(attempt, failed, None) is failed
    assert os.listdir(here / "results") == []
    assert made(here) == ["p0.1"]  # kept, to look at


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
    assert made(here) == ["p0.1"]


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
    assert os.listdir(here / "results") == [] and made(here) == ["p0.2"]


def test_a_success_removes_every_sandbox_the_minion_made_for_its_param(here: Path) -> None:
    sandboxes = boxes(outputs=())
    failed = Result(Outcome.FAILED, reason="exit code 1", exit_code=1)
    sandboxes.finish(prepare(sandboxes, 0, attempt=3), failed, None)  # a dead letter's
    attempt = prepare(sandboxes, 0, attempt=1)  # requeued: its attempts counted again
    assert made(here) == ["p0.1"]
    assert sandboxes.finish(attempt, OK, None).ok
    assert os.listdir(here / "work") == []


def test_hard_links_across_filesystems_stop_the_minion(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def link(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link", src)

    sandboxes = boxes(stage="hardlink", shared=())
    with monkeypatch.context() as patch:
        patch.setattr(os, "link", link)
        with pytest.raises(CommandLineError, match="--stage hardlink: cannot link .*use --stage copy"):
            prepare(sandboxes, 0)
    assert os.listdir(here / "work") == []
    prepare(sandboxes, 0)
    monkeypatch.setattr(os, "link", link)  # once a param was linked: that param's files
    with pytest.raises(ParamError, match="--stage hardlink: cannot link"):
        prepare(sandboxes, 1)
