"""What the process and docker callbacks share: log file names, the stderr tail, MINION_PARAM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from minionize.callbacks._task_io import (
    STDERR_TAIL_BYTES,
    OutputSinks,
    log_paths,
    make_log_dir,
    param_json,
    read_tail,
    safe_name,
)
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
