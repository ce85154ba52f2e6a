"""Params typed by a user: ranges, values, lines, JSON lines, products."""

from __future__ import annotations

import io
import itertools
import json
import time
from pathlib import Path

import pytest

from minionize.cli.params_input import (
    params_from_items,
    parse_range,
    parse_value,
    product,
    read_json_lines,
    read_lines,
)
from minionize.errors import ConfigError


def test_ranges_are_inclusive() -> None:
    assert list(parse_range("0..9") or []) == list(range(10))
    assert list(parse_range("-2..2") or []) == [-2, -1, 0, 1, 2]
    # A range is START..END exactly: with a space it is a value, kept as typed.
    assert parse_range(" -2 .. 2 ") is None and parse_range("0 ..9") is None
    assert list(parse_range("3..1") or []) == [3, 2, 1]
    assert list(parse_range("5..5") or []) == [5]
    assert parse_range("0..x") is None and parse_range("1.5..3") is None and parse_range("7") is None


def test_values_are_json_when_they_parse_else_strings() -> None:
    assert parse_value("1") == 1 and parse_value("1.5") == 1.5
    assert parse_value('{"x": [1, 2]}') == {"x": [1, 2]}
    assert parse_value('"quoted"') == '"quoted"' and parse_value("null") is None
    assert parse_value("hello world") == "hello world"
    assert parse_value("{not json") == "{not json"


def test_lines_skip_blanks_and_keep_inner_spaces() -> None:
    stream = io.StringIO("1\n\n  \nfoo bar\n[1, 2]\r\nlast")
    assert list(read_lines(stream)) == [1, "foo bar", [1, 2], "last"]


def test_json_lines_name_the_bad_line() -> None:
    assert list(read_json_lines(io.StringIO('1\n\n"a"\n{"x": 2}\n'))) == [1, "a", {"x": 2}]
    with pytest.raises(ConfigError, match=r"params\.jsonl line 2 is not JSON"):
        list(read_json_lines(io.StringIO("1\nfoo\n"), "params.jsonl"))


def test_product_is_the_cartesian_product_first_name_slowest() -> None:
    assert list(product(["a=1,2,3", "b=x,y"])) == [
        {"a": a, "b": b} for a in (1, 2, 3) for b in ("x", "y")
    ]
    assert list(product(["flag=true,false", "n=0.5"])) == [
        {"flag": True, "n": 0.5}, {"flag": False, "n": 0.5}
    ]


@pytest.mark.parametrize("spec", [["a"], ["=1,2"], ["a=1", "a=2"]])
def test_bad_products_are_config_errors(spec: list[str]) -> None:
    with pytest.raises(ConfigError, match="product"):
        list(product(spec))


def test_items_mix_ranges_values_and_stdin() -> None:
    stdin = io.StringIO("a\n2\n")
    assert list(params_from_items(["0..2", "x", "-", "{\"k\": 1}"], stdin)) == [
        0, 1, 2, "x", "a", 2, {"k": 1}
    ]
    with pytest.raises(ConfigError, match="standard input"):
        list(params_from_items(["-"], None))


def test_a_huge_range_streams() -> None:
    started = time.monotonic()
    first = list(itertools.islice(params_from_items(["0..999999999999"]), 3))
    assert first == [0, 1, 2] and time.monotonic() - started < 0.5


# -- issue 10 item 3: a param arrives exactly as typed; two texts are two params -------
@pytest.mark.parametrize("text", ["3.10", "1e3", "1E3", "1e400", "1.50", " 5", "5 ", "-0",
                                  "NaN", "Infinity", "-Infinity", "0.10", "1.0e0", '"a"'])
def test_a_value_whose_number_would_change_stays_its_text(text: str) -> None:
    assert parse_value(text) == text


@pytest.mark.parametrize("text, value", [("5", 5), ("-3", -3), ("0.5", 0.5), ("3.1", 3.1),
                                         ("1e+16", 1e16), ("true", True), ("null", None),
                                         ("12345678901234567890", 12345678901234567890)])
def test_a_value_stays_a_number_where_that_is_exact(text: str, value: object) -> None:
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_numbers_inside_lists_and_mappings_follow_the_same_rule() -> None:
    assert parse_value('{"x": 3.10, "y": 2, "z": NaN}') == {"x": "3.10", "y": 2, "z": "NaN"}
    assert parse_value("[1e3, 0.5]") == ["1e3", 0.5]


def test_different_texts_are_different_params_on_every_typed_path() -> None:
    from minionize.params import canonical_json

    texts = ["3.9", "3.10", "3.1", "1e3", "1000.0", " 5", "5 ", "5", "NaN", "Infinity", "1e400"]
    stdin = io.StringIO("".join(t + "\n" for t in texts))
    for params in (list(params_from_items(texts)), list(params_from_items(["-"], stdin)),
                   [p["a"] for p in product(["a=" + ",".join(texts)])]):
        encoded = [canonical_json(p) for p in params]  # raises on NaN / Infinity
        assert len(set(encoded)) == len(texts)
        assert [p if isinstance(p, str) else json.dumps(p) for p in params] == texts


def test_lines_keep_their_spaces_and_only_the_line_end_goes() -> None:
    assert list(read_lines(io.StringIO(" 5\n5 \r\n\n"))) == [" 5", "5 "]


@pytest.mark.parametrize("line", ["NaN", "[Infinity]", "-Infinity", "1e400", '{"x": 1e-400}',
                                  "0.10000000000000000000001"])
def test_json_lines_refuse_a_number_whose_value_would_change(line: str) -> None:
    with pytest.raises(ConfigError, match=r"p\.jsonl line 2: .*(NaN|Infinity|cannot hold)"):
        list(read_json_lines(io.StringIO("1\n" + line + "\n"), "p.jsonl"))


def test_json_lines_keep_numbers_that_keep_their_value() -> None:
    assert list(read_json_lines(io.StringIO("3.10\n1e3\n0.1\n"))) == [3.1, 1000.0, 0.1]


def test_from_files_gives_the_part_in_braces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from minionize.cli.params_input import params_from_files

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    for part in ("10", "2", "01", "a b", "true", "3.10"):
        (tmp_path / "in" / f"inputfile_{part}.txt").write_text("")
    (tmp_path / "in" / "secondinputfile_4.txt").write_text("")
    (tmp_path / "in" / "inputfile_5.txt.bak").write_text("")
    assert params_from_files("in/inputfile_{}.txt") == ["2", "10", "01", "3.10", "a b", "true"]
    with pytest.raises(ConfigError, match="write {} once"):
        params_from_files("in/inputfile_.txt")
    with pytest.raises(ConfigError, match="no file matches it"):
        params_from_files("in/nothing_{}.txt")


def test_from_files_gives_each_name_as_the_string_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20 item 21: ``f_[1, 2].txt`` was the list [1, 2] (one param with
    ``f_[1,2].txt``, and no file f_[1,2].txt for it to find): a file name is text."""
    from minionize.cli.params_input import params_from_files

    monkeypatch.chdir(tmp_path)
    parts = ["[1, 2]", "[1,2]", '{"a": 1}', '{"a":1}', "7", '"7"', "null", "-3", "0.5", "1e3"]
    for part in parts:
        Path(f"f_{part}.txt").write_text(part)
    params = params_from_files("f_{}.txt")
    assert params == ["-3", "0.5", "7", '"7"', "1e3", "[1, 2]", "[1,2]", "null", '{"a": 1}',
                      '{"a":1}']
    assert all(Path(f"f_{param}.txt").read_text() == param for param in params)
