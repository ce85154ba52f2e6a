"""The pool's run directory: privacy checks, record files, and the progress line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from minionize.pool import PoolError
from minionize.pool.progress import format_line
from minionize.pool.rundir import HEADER, RecordReader, append_record, check_private, read_private


def test_records_are_read_whole_and_a_torn_one_waits(tmp_path: Path) -> None:
    path = tmp_path / "w0"
    reader = RecordReader(str(path))
    assert reader.read() == []
    append_record(str(path), b"one")
    append_record(str(path), b"two")
    assert reader.read() == [b"one", b"two"]
    with path.open("ab") as handle:  # a worker that died while writing
        handle.write(HEADER.pack(10) + b"part")
    assert reader.read() == []
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_pickles_are_read_only_from_a_private_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "calls").mkdir(parents=True)
    os.chmod(run, 0o700)
    os.chmod(run / "calls", 0o700)
    (run / "calls" / "0.func").write_bytes(b"data")
    os.chmod(run / "calls" / "0.func", 0o600)
    assert read_private(str(run), "calls/0.func", 1, 2) == b"at"
    os.chmod(run / "calls" / "0.func", 0o666)
    with pytest.raises(PoolError, match="others can write"):
        read_private(str(run), "calls/0.func")
    link = tmp_path / "link"
    link.symlink_to(run)
    with pytest.raises(PoolError, match="symbolic link"):
        check_private(str(link))


def test_the_progress_line() -> None:
    assert format_line(25, 100, 4, 1, 2, 5.0) == (
        "pool: 25/100 items, 4 worker(s) alive, 1 lost, 2 failed, 5.0 items/s, ETA 15s")
    assert format_line(0, 100, 4, 0, 0, 1.0).endswith("0.0 items/s, ETA ?")
    assert format_line(100, 100, 4, 0, 0, 10.0).endswith("10.0 items/s, ETA 0s")
