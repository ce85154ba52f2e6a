from __future__ import annotations

import pytest

from minionize.callbacks.command import ParamError, build_argv, build_shell_line, check_template


def test_scalar_is_appended_as_one_argument() -> None:
    assert build_argv(["echo", "hello"], 3) == ["echo", "hello", "3"]
    assert build_argv(["echo"], "a b; $(rm -rf ~)") == ["echo", "a b; $(rm -rf ~)"]
    assert build_argv(["echo"], True) == ["echo", "true"]


def test_list_is_appended_as_several_arguments() -> None:
    assert build_argv(["cmd"], [1, "two", [3]]) == ["cmd", "1", "two", "[3]"]


def test_braces_are_replaced_like_xargs() -> None:
    assert build_argv(["cp", "{}", "{}.bak"], "f") == ["cp", "f", "f.bak"]


def test_mapping_needs_a_template() -> None:
    with pytest.raises(ParamError, match="--template"):
        build_argv(["a.out"], {"x": 1})
    words = check_template("a.out --x {x} {y}")
    assert build_argv([], {"x": 1, "y": "a b"}, words) == ["a.out", "--x", "1", "a b"]
    with pytest.raises(ParamError, match="'y'"):
        build_argv([], {"x": 1}, words)


def test_template_values_are_never_split_or_interpreted() -> None:
    words = check_template("run --name={name}")
    assert build_argv([], {"name": "$(id) ; ls"}, words) == ["run", "--name=$(id) ; ls"]


def test_shell_line_quotes_every_value_from_the_param() -> None:
    assert build_shell_line(["echo", "x", "|", "wc"], "$(id)") == "echo x | wc '$(id)'"
    assert build_shell_line([], {"x": "a;b"}, "echo {x}") == "echo 'a;b'"


def test_bad_template_is_refused_at_start() -> None:
    with pytest.raises(ValueError):
        check_template("a.out {x")
    with pytest.raises(ValueError):
        check_template("'unclosed")
