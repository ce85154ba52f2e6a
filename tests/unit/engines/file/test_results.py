"""The file engine keeps what a function task returned beside the file
(``<FILE_PATH>.results``), and lists it in line order for the lines ``.done`` holds."""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Callable

import pytest

from minionize import FuncCallback
from minionize.config import Settings
from minionize.engines.file.engine import FileEngine
from minionize.errors import ConfigError, EngineError, UnsupportedOperation
from minionize.minion.run import Minion
from tests.services import wait_for


def run(path: Path, func: Callable[[Any], Any], **env: str) -> int:
    """A minion calling ``func`` (in threads) on each line of ``path``; its exit code."""
    settings = Settings.from_env({"FILE_PATH": str(path), **env}, max_attempts=1)
    engine = FileEngine.from_settings(settings)
    return Minion(FuncCallback(func, mode="thread"), engine=engine, settings=settings).run()


def results(path: Path, decoder: str = "identity") -> list[dict[str, Any]]:
    """What ``minion-queue results --engine file`` lists (an engine it did not open)."""
    return list(FileEngine(str(path), decoder).results())


def test_results_come_in_line_order_when_tasks_finish_out_of_order(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"n": 1}\n\n{"n": 2}\n{"n": 3}\n')
    stored = tmp_path / "p.jsonl.results"

    def work(param: dict[str, int]) -> Any:
        if param["n"] == 1:  # finishes last: once the others are stored
            wait_for(lambda: stored.read_text().count("\n") == 2, 10, "lines 3 and 4 to be done")
        return {"n": param["n"], "square": param["n"] ** 2}

    assert run(path, work, FILE_DECODER="json", MINION_CONCURRENCY="3") == 0
    finished = [json.loads(line)["line"] for line in stored.read_text().splitlines()]
    assert finished[-1] == 1  # stored out of order
    rows = results(path, "json")
    assert [row["param"] for row in rows] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [row["result"] for row in rows] == [{"n": n, "square": n * n} for n in (1, 2, 3)]
    assert [row["id"].rsplit("-", 1)[1] for row in rows] == ["1", "3", "4"]  # blank line 2


def test_a_rerun_skips_done_lines_and_keeps_their_results(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a\nbad\nc\nnone\n")
    assert run(path, lambda p: 1 / 0 if p == "bad" else None if p == "none" else f"{p}:1") == 1
    first = {row["param"]: row["id"] for row in results(path)}
    assert list(first) == ["a", "c", "none"]

    assert run(path, lambda p: f"{p}:2") == 0  # only the dead letter runs again
    rows = results(path)
    assert [(row["param"], row["result"]) for row in rows] == [
        ("a", "a:1"), ("bad", "bad:2"), ("c", "c:1"), ("none", None)]
    ids = {row["param"]: row["id"] for row in rows}
    assert {p: ids[p] for p in first} == first  # each with the id it ran under
    assert ids["bad"].split("-")[1] != first["a"].split("-")[1]  # another run


def test_a_line_that_is_not_utf8_comes_back_as_the_engine_gives_it(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"ok\n\xff\xfebad\n")
    assert run(path, lambda p: [p, len(p)]) == 0
    rows = results(path)
    assert [os.fsencode(row["param"]) for row in rows] == [b"ok", b"\xff\xfebad"]
    assert [row["result"] for row in rows] == [["ok", 2], ["\udcff\udcfebad", 5]]
    assert b'"param": "\xff\xfebad"' in (tmp_path / "p.txt.results").read_bytes()  # its bytes


def test_a_record_torn_by_a_kill_is_skipped_and_does_not_swallow_the_next(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a\nb\n")
    assert run(path, lambda p: f"{p}!") == 0
    done, stored = tmp_path / "p.txt.done", tmp_path / "p.txt.results"
    done.write_text('"a"\n')  # killed while storing b's result: b is not done
    last = stored.read_bytes().splitlines(keepends=True)[-1]
    stored.write_bytes(stored.read_bytes()[: -len(last) // 2])
    assert [(row["param"], row["result"]) for row in results(path)] == [("a", "a!")]

    assert run(path, lambda p: f"{p}?") == 0  # b runs again
    assert [(row["param"], row["result"]) for row in results(path)] == [("a", "a!"), ("b", "b?")]


def test_lines_done_before_results_were_kept_or_moved_by_an_insertion(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a\nb\n")
    assert run(path, lambda p: p.upper()) == 0
    path.write_text("new\na\nb\nold\n")  # a line inserted above, one done without a record
    with open(tmp_path / "p.txt.done", "a") as journal:
        journal.write('"old"\n')
    assert run(path, lambda p: p.upper()) == 0
    rows = results(path)
    assert [(row["param"], row["result"]) for row in rows] == [
        ("new", "NEW"), ("a", "A"), ("b", "B"), ("old", None)]
    assert rows[3]["id"] == "p.txt-4"


def test_standard_input_keeps_no_results_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FileEngine(None)
    assert not engine.keeps_results
    with pytest.raises(UnsupportedOperation, match="standard input.*FILE_PATH"):
        engine.results()
    # Nothing is stored, so a value JSON cannot hold is no failure there.
    monkeypatch.setattr(sys, "stdin", io.StringIO("a\nb\n"))
    settings = Settings.from_env({}, max_attempts=1)
    minion = Minion(FuncCallback(lambda p: {p}, mode="thread"), engine=FileEngine(None),
                    settings=settings)
    assert minion.run() == 0


def test_minion_queue_results_reads_the_file_named_by_file_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minionize.cli.queue import main

    path = tmp_path / "p.txt"
    path.write_text("x\ny\n")
    assert run(path, lambda p: {"of": p}) == 0
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FILE_PATH", str(path))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["results", "--engine", "file", "--json"]) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(row["param"], row["result"]) for row in rows] == [("x", {"of": "x"}), ("y", {"of": "y"})]


def test_a_run_that_returns_nothing_leaves_no_results_file(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a\nb\n")
    assert run(path, lambda param: None) == 0
    assert (tmp_path / "p.txt.done").read_text().count("\n") == 2
    assert not (tmp_path / "p.txt.results").exists()
    assert [(row["param"], row["result"]) for row in results(path)] == [("a", None), ("b", None)]
    with pytest.raises(ConfigError, match="cannot be read"):  # no such file: nothing made
        run(path.with_name("q.txt"), lambda param: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt", "p.txt.done", "p.txt.failed"]


def test_results_deleted_are_an_error_naming_the_file_and_a_rerun_computes_them_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a\nb\nc\n")
    assert run(path, lambda p: f"{p}!") == 0
    stored = tmp_path / "p.txt.results"
    stored.unlink()
    with pytest.raises(EngineError, match=r"p\.txt\.results is missing: the results of 3 done "
                                          r"lines are lost.*run the minion .* again"):
        results(path)
    ran: list[str] = []
    assert run(path, lambda p: ran.append(p) or f"{p}?") == 0
    assert sorted(ran) == ["a", "b", "c"]  # recomputed, not skipped as done
    assert [(row["param"], row["result"]) for row in results(path)] == [
        ("a", "a?"), ("b", "b?"), ("c", "c?")]


def test_results_cut_or_damaged_name_how_many_are_lost_and_only_those_run_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a\nb\nc\nd\n")
    assert run(path, lambda p: f"{p}!") == 0
    stored = tmp_path / "p.txt.results"
    records = stored.read_bytes().splitlines(keepends=True)
    b = next(r for r in records if b'"param": "b"' in r)
    c = next(r for r in records if b'"param": "c"' in r)
    stored.write_bytes(b"".join(r for r in records if r is not b).replace(c, b"\xff" + c[1:]))
    with pytest.raises(EngineError, match=r"p\.txt\.results lacks the results of 2 done lines"):
        results(path)
    ran: list[str] = []
    assert run(path, lambda p: ran.append(p) or f"{p}?") == 0
    assert sorted(ran) == ["b", "c"]
    assert [(row["param"], row["result"]) for row in results(path)] == [
        ("a", "a!"), ("b", "b?"), ("c", "c?"), ("d", "d!")]
