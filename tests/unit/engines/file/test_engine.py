from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from minionize.callbacks.task_io import safe_name
from minionize.config import Settings
from minionize.engines.file.engine import FileEngine
from tests.conftest import drain


def open_engine(path: Path, decoder: str = "identity") -> FileEngine:
    engine = FileEngine.from_settings(
        Settings.from_env({"FILE_PATH": str(path), "FILE_DECODER": decoder})
    )
    engine.open()
    return engine


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


# -- issue 10 items 3 and 8 -------------------------------------------------------------
def test_identity_keeps_each_line_exactly_as_text(tmp_path: Path) -> None:
    params = tmp_path / "p.txt"
    params.write_text("3.10\n1e3\n 5\n5 \nNaN\n\"a\"\n{\"x\": 1.50}\n")
    assert drain(open_engine(params)) == ["3.10", "1e3", " 5", "5 ", "NaN", '"a"', '{"x": 1.50}']


def test_json_decoder_refuses_what_json_cannot_keep(tmp_path: Path) -> None:
    params = tmp_path / "p.jsonl"
    params.write_text('NaN\n[Infinity]\n1e400\n3.10\n{"x": 1e3}\n')
    engine = open_engine(params, "json")
    deliveries = engine.take(10, 0)
    assert [d.error is not None for d in deliveries] == [True, True, True, False, False]
    assert "line 1" in str(deliveries[0].error) and "not standard JSON" in str(deliveries[0].error)
    assert "1e400" in str(deliveries[2].error)
    assert [d.param for d in deliveries[3:]] == [3.1, {"x": 1000.0}]


def test_bytes_that_are_not_utf8_round_trip_into_done_and_failed(tmp_path: Path) -> None:
    params = tmp_path / "p.txt"
    params.write_bytes(b"ok\n\xff\xfebad\n\xfeother\n")
    engine = open_engine(params)
    ok, bad, other = engine.take(3, 0)
    engine.ack(ok)
    engine.ack(bad)
    engine.dead_letter(other, "exit code 1")
    engine.close()
    assert b"\xff\xfebad" in (tmp_path / "p.txt.done").read_bytes()
    failed = (tmp_path / "p.txt.failed").read_bytes()
    assert b"\xfeother" in failed and b"exit code 1" in failed
    assert drain(open_engine(params)) == [other.param]  # line 2 is done: it does not run again
    assert os.fsencode(other.param) == b"\xfeother"  # the program gets the very bytes


def test_ids_of_two_input_files_never_collide(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ids = []
    for path in (tmp_path / "p.txt", tmp_path / "q.txt", tmp_path / "a" / "p.txt",
                 tmp_path / "b" / "p.txt", tmp_path / "p.txt"):
        path.write_text("x\ny\n")
        (tmp_path / (path.name + ".done")).unlink(missing_ok=True)
        engine = open_engine(path)
        ids += [d.id for d in engine.take(2, 0)]
        engine.close()
    assert len(set(ids)) == len(ids)
    assert all(safe_name(i) == i for i in ids) and ids[0].startswith("p.txt-") and ids[0].endswith("-1")


def test_take_honours_its_timeout_on_a_silent_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"a\n")
        monkeypatch.setattr(sys, "stdin", os.fdopen(read_end, "r"))
        engine = FileEngine(None)
        engine.open()
        assert [d.param for d in engine.take(5, 0.2)] == ["a"]
        started = time.monotonic()
        assert engine.take(5, 0.3) == []
        assert 0.25 <= time.monotonic() - started < 2 and not engine.exhausted()
        os.write(write_end, b"b\nc")
        assert [d.param for d in engine.take(5, 1)] == ["b"]
        os.close(write_end)
        write_end = -1
        assert [d.param for d in engine.take(5, 1)] == ["c"]
        assert engine.take(5, 1) == [] and engine.exhausted()
    finally:
        if write_end >= 0:
            os.close(write_end)


def test_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    params = tmp_path / "p.txt"
    params.write_text("1\n2\n")
    engine = FileEngine.from_settings(Settings.from_env({"FILE_PATH": str(params), "DRY": "1"}))
    engine.open()
    assert engine.peek(10) == ["1", "2"]
    engine.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]


@pytest.mark.parametrize("text", ["NaN", "Infinity", "1e400", '{"x": -Infinity}'])
def test_every_engine_refuses_a_message_that_standard_json_cannot_hold(text: str) -> None:
    from minionize.params import decode_param

    param, error = decode_param(text.encode(), "json", "GOOGLE_DECODER")
    assert param == text and error is not None
    assert decode_param(b'{"x": 3.10}', "json", "GOOGLE_DECODER") == ({"x": 3.1}, None)


@pytest.mark.parametrize("engine, variable", [("file", "FILE_DECODER"),
                                              ("pubsub", "GOOGLE_DECODER"),
                                              ("pulsar", "PULSAR_DECODER"),
                                              ("redis", "MINION_REDIS_DECODER")])
def test_decoder_flag_and_hint_name_only_the_engine_in_use(engine: str, variable: str) -> None:
    """Issue 22 item 11: --decoder sets the decoder variable of the engine in use, and
    the hint of a string param meeting {x} names that variable alone."""
    from minionize.cli.minion import build_parser, decoder_hint, engine_decoder

    args = build_parser().parse_args(["--decoder", "text", "echo"])
    values = {"MINION_ENGINE": engine}
    assert engine_decoder(args, values) == variable
    assert values[variable] == "identity"
    hint = decoder_hint(engine, variable)
    assert f"--decoder json ({variable}=json)" in hint
    others = {"FILE_DECODER", "GOOGLE_DECODER", "PULSAR_DECODER", "MINION_REDIS_DECODER"}
    assert not any(name in hint for name in others - {variable})


def test_one_reader_per_file_and_the_lock_goes_with_it(tmp_path: Path) -> None:
    from minionize.errors import ConfigError

    params = tmp_path / "p.txt"
    params.write_text("a\n")
    first = open_engine(params)
    holder = rf"p.txt is being read by another minion \(pid {os.getpid()} on host "
    with pytest.raises(ConfigError, match=holder):
        open_engine(params)
    assert not (tmp_path / "p.txt.done").read_bytes()  # the second one wrote nothing
    first.close()
    assert not (tmp_path / "p.txt.lock").exists()
    again = open_engine(params)  # once it ended, the file is free
    assert [d.param for d in again.take(5, 0)] == ["a"]
    again.close()
