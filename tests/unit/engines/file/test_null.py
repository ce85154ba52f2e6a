"""FILE_SEPARATOR=nul: the file engine splits its input on NUL bytes (xargs -0)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from minionize.config import Settings
from minionize.engines.file.engine import FileEngine, LineReader
from minionize.errors import ConfigError


def test_records_split_on_nul_keep_newlines_and_a_last_unterminated_one() -> None:
    read, write = os.pipe()
    os.write(write, b"a b\0c\nd\0\0\xff\0last")
    os.close(write)
    reader = LineReader(read, separator=b"\0")
    records = []
    while (record := reader.next_line(None)) is not None:
        records.append(record)
    os.close(read)
    assert records == [b"a b", b"c\nd", b"", b"\xff", b"last"]


def test_file_engine_takes_nul_separated_params(tmp_path: Path) -> None:
    path = tmp_path / "in0"
    path.write_bytes(b"one\0two words\0line\nbreak \0\0")
    engine = FileEngine.from_settings(Settings.from_env({"FILE_PATH": str(path),
                                                         "FILE_SEPARATOR": "nul"}))
    engine.open()
    taken = engine.take(10, 0.1)
    # An empty record is a param, as in xargs -0 (a last NUL ends a record, no more).
    assert [(d.param, d.id.rsplit("-", 1)[1]) for d in taken] == [
        ("one", "1"), ("two words", "2"), ("line\nbreak ", "3"), ("", "4")]
    engine.ack(taken[2])
    engine.close()
    # The journal skips the acked record on a rerun.
    engine = FileEngine.from_settings(Settings.from_env({"FILE_PATH": str(path),
                                                         "FILE_SEPARATOR": "nul"}))
    engine.open()
    assert [d.param for d in engine.take(10, 0.1)] == ["one", "two words", ""]
    engine.close()


def test_unknown_separator_is_refused() -> None:
    with pytest.raises(ConfigError, match="FILE_SEPARATOR"):
        FileEngine.from_settings(Settings.from_env({"FILE_SEPARATOR": "tab"}))
