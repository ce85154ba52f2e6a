"""FILE_SEPARATOR=nul: the file engine splits its input on NUL bytes (xargs -0)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from minionize.config import Settings
from minionize.engines._records import nul_records
from minionize.engines.file import FileEngine
from minionize.errors import ConfigError


def test_records_split_on_nul_keep_newlines_and_a_last_unterminated_one() -> None:
    stream = io.BytesIO(b"a b\0c\nd\0\0\xff\0last")
    assert list(nul_records(stream)) == ["a b", "c\nd", "", "\udcff", "last"]


def test_file_engine_takes_nul_separated_params(tmp_path: Path) -> None:
    path = tmp_path / "in0"
    path.write_bytes(b"one\0two words\0line\nbreak \0\0")
    engine = FileEngine.from_settings(Settings.from_env({"FILE_PATH": str(path),
                                                         "FILE_SEPARATOR": "nul"}))
    engine.open()
    taken = engine.take(10, 0.1)
    # An empty record is a param, as in xargs -0 (a last NUL ends a record, no more).
    assert [(d.param, d.id) for d in taken] == [("one", "1"), ("two words", "2"),
                                                ("line\nbreak ", "3"), ("", "4")]
    engine.ack(taken[2])
    engine.close()
    # The journal skips the acked record on a rerun.
    engine.open()
    assert [d.param for d in engine.take(10, 0.1)] == ["one", "two words", ""]
    engine.close()


def test_unknown_separator_is_refused() -> None:
    with pytest.raises(ConfigError, match="FILE_SEPARATOR"):
        FileEngine.from_settings(Settings.from_env({"FILE_SEPARATOR": "tab"}))
