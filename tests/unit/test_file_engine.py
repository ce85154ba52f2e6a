from __future__ import annotations

import json
from pathlib import Path

from minionize.config import Settings
from minionize.engines.file import FileEngine


def open_engine(path: Path, decoder: str = "identity") -> FileEngine:
    engine = FileEngine.from_settings(
        Settings.from_env({"FILE_PATH": str(path), "FILE_DECODER": decoder})
    )
    engine.open()
    return engine


def drain(engine: FileEngine) -> list[str]:
    out = []
    while True:
        batch = engine.take(10, 0)
        if not batch:
            return out
        for delivery in batch:
            out.append(delivery.param)
            engine.ack(delivery)


def test_blank_lines_skipped_and_journal_resumes(tmp_path: Path) -> None:
    params = tmp_path / "p.txt"
    params.write_text("a\n\n  \nb\na\n")
    engine = open_engine(params)
    first = engine.take(2, 0)
    assert [d.param for d in first] == ["a", "b"]
    engine.ack(first[0])
    engine.close()
    # Rerun: the acked "a" is skipped once; "b" and the second "a" still run.
    engine = open_engine(params)
    assert drain(engine) == ["b", "a"]
    assert engine.exhausted()
    engine.close()
    assert drain(open_engine(params)) == []


def test_dead_letter_goes_to_failed_with_reason(tmp_path: Path) -> None:
    params = tmp_path / "p.txt"
    params.write_text("x\n")
    engine = open_engine(params)
    [delivery] = engine.take(1, 0)
    engine.retry(delivery, "exit code 1")
    [again] = engine.take(1, 0)
    assert again.attempt == 2
    engine.dead_letter(again, "exit code 1")
    engine.close()
    record = json.loads((tmp_path / "p.txt.failed").read_text())
    assert record["param"] == "x" and record["reason"] == "exit code 1"
    assert (tmp_path / "p.txt.done").read_text() == ""


def test_json_decoder_marks_bad_lines(tmp_path: Path) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text('{"x": 1}\n{oops\n')
    engine = open_engine(params, "json")
    good, bad = engine.take(2, 0)
    assert good.param == {"x": 1} and good.error is None
    assert bad.error and "not JSON" in bad.error


def test_torn_journal_line_is_ignored(tmp_path: Path) -> None:
    params = tmp_path / "p.txt"
    params.write_text("a\nb\n")
    (tmp_path / "p.txt.done").write_text('"a"\n"b')  # crash mid-write
    assert drain(open_engine(params)) == ["b"]
