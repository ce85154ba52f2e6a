"""What the process and docker callbacks share: log file names, the stderr tail, MINION_PARAM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from minionize.callbacks.base import Outcome, Task
from minionize.callbacks.process.callback import ProcessCallback
from minionize.callbacks.task_io import (
    STDERR_TAIL_BYTES,
    OutputSinks,
    UnsafeFile,
    log_paths,
    make_log_dir,
    open_regular,
    param_json,
    read_tail,
    safe_name,
)
from minionize.engines.base import Delivery
from minionize.errors import ConfigError


def test_log_paths_are_safe_names_in_the_log_directory(tmp_path: Path) -> None:
    out, err = log_paths(str(tmp_path), "a/b c", 2)
    assert out == str(tmp_path / "a_b_c.2.out") and err == str(tmp_path / "a_b_c.2.err")
    assert safe_name("") == "param" and len(safe_name("x" * 500)) == 120


def test_the_tail_is_the_same_streamed_or_read_back(tmp_path: Path,
                                                   capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    out, err = log_paths(str(tmp_path), "p", 1)
    lines = [f"line {n} " + "x" * 50 for n in range(200)]
    with OutputSinks(out, err) as sinks:
        for line in lines:
            sinks.write(b"o\n", (line + "\n").encode())
        streamed = sinks.tail()
    assert streamed == "\n".join(lines[-20:])
    assert read_tail(err) == streamed
    assert Path(out).read_bytes() == b"o\n" * 200
    assert capfdbinary.readouterr() == (b"", b"")  # all went to the files


def test_without_log_files_output_goes_to_the_minion(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    with OutputSinks(None, None) as sinks:
        sinks.write(b"out\n", b"\xff err\n")
        assert sinks.tail() == "\ufffd err"
    assert capfdbinary.readouterr() == (b"out\n", b"\xff err\n")


def test_tail_of_one_long_line_keeps_its_end(tmp_path: Path) -> None:
    path = tmp_path / "err"
    path.write_bytes(b"a" * 10_000 + b"END")
    assert read_tail(str(path)) == ("a" * 10_003)[-STDERR_TAIL_BYTES:-3] + "END"
    assert read_tail(str(tmp_path / "missing")) == ""


def test_param_json_and_log_dir(tmp_path: Path) -> None:
    assert json.loads(param_json({"é": [1, 2]})) == {"é": [1, 2]}
    assert param_json({1, 2}) == json.dumps(repr({1, 2}))
    make_log_dir(None)
    make_log_dir(str(tmp_path / "logs" / "deep"))
    assert os.path.isdir(tmp_path / "logs" / "deep")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="MINION_LOG_DIR"):
        make_log_dir(str(tmp_path / "file" / "logs"))


def test_open_regular_never_follows_a_link_nor_opens_a_fifo(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "link").symlink_to(victim)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for name, words in (("link", "symbolic link"), ("fifo", "not a regular file"),
                        ("dir", "not a regular file")):
        with pytest.raises(UnsafeFile, match=words) as caught:
            open_regular(str(tmp_path / name))
        assert str(tmp_path / name) in str(caught.value)
    assert victim.read_text() == "keep\n"


def test_open_regular_walks_the_directories_below_its_root(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "entry").symlink_to(elsewhere)
    with pytest.raises(UnsafeFile, match="entry is a symbolic link"):
        open_regular(str(root / "entry" / "1.out"), root=str(root), make_dirs=True)
    assert list(elsewhere.iterdir()) == []
    fd = open_regular(str(root / "new" / "deeper" / "1.out"), root=str(root), make_dirs=True)
    os.write(fd, b"x")
    os.close(fd)
    assert (root / "new" / "deeper" / "1.out").read_bytes() == b"x"
    # A link the user made above the root is theirs to make: followed.
    (tmp_path / "alias").symlink_to(root)
    os.close(open_regular(str(tmp_path / "alias" / "new" / "2.out"), root=str(tmp_path / "alias")))


def test_open_regular_truncates_a_regular_file_only(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("old content\n")
    fd = open_regular(str(path))
    assert os.get_blocking(fd)
    os.close(fd)
    assert path.read_text() == ""


def test_output_sinks_refuse_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "1.err").symlink_to(victim)
    with pytest.raises(UnsafeFile):
        OutputSinks(str(tmp_path / "1.out"), str(tmp_path / "1.err"))
    assert victim.read_text() == "keep\n"


@pytest.mark.parametrize("param, delivery_id, where", [
    ("a\0b", "p1", "argument 1"),
    ({"x": "a\0b"}, "p1", "argument 1"),
    ("ok", "id\0with-nul", "environment variable MINION_PARAM_ID"),
])
def test_a_nul_byte_in_the_command_is_rejected_at_once_saying_where(
        param: object, delivery_id: str, where: str) -> None:
    callback = ProcessCallback(["echo"], template="echo {}" if isinstance(param, str) else "echo {x}")
    callback.setup()
    try:
        result = callback.run(Task(Delivery(param, delivery_id)))
    finally:
        callback.teardown()
    assert result.outcome is Outcome.REJECTED
    assert "NUL byte" in result.reason and where in result.reason
    assert "--param-stdin" in result.reason


def test_a_param_holding_a_nul_byte_runs_with_param_stdin(tmp_path: Path) -> None:
    callback = ProcessCallback(["sh", "-c", 'od -An -c > "$0"; echo "$MINION_PARAM" >> "$0"',
                                str(tmp_path / "got")], param_stdin=True)
    callback.setup()
    try:
        result = callback.run(Task(Delivery("a\0b", "p1")))
    finally:
        callback.teardown()
    assert result.outcome is Outcome.OK, result.reason
    seen = (tmp_path / "got").read_text().split()
    assert seen == ["a", "\\0", "b", "\\n", '"a\\u0000b"']
