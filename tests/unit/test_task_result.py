"""What a function task returns is stored as JSON only when it reads back as the same
value: a dict key that is not a string, or nesting deeper than a reader can follow, is
an unstorable result (a failed attempt saying why), never a value silently changed."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from minionize.task_result import MAX_DEPTH, UnstorableResult, decode_result, encode_result


@pytest.mark.parametrize("value", [{1: "one"}, {True: "yes"}, {None: 0}, {1.5: "x"},
                                   {"ok": [{"a": 1}, {2: "deep"}]}])
def test_a_dict_key_that_is_not_a_string_is_unstorable(value: Any) -> None:
    with pytest.raises(UnstorableResult, match="key .* is not a string"):
        encode_result(value)


def test_string_keys_and_every_json_value_are_kept_exactly() -> None:
    value = {"a": [1, 2.5, "x", True, False, None, {"b": {}}], "": []}
    assert decode_result(encode_result(value)) == value


def test_a_tuple_becomes_a_list() -> None:
    assert decode_result(encode_result({"t": (1, (2, 3))})) == {"t": [1, [2, 3]]}


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_deeper_than_a_reader_can_follow_is_unstorable() -> None:
    with pytest.raises(UnstorableResult, match=f"nested 980 deep, more than the {MAX_DEPTH}"):
        encode_result(nested(980))


def test_what_is_stored_reads_back_deep_in_a_reader_s_stack() -> None:
    text = encode_result(nested(MAX_DEPTH))
    assert sys.getrecursionlimit() // 2 >= MAX_DEPTH  # the margin a reader keeps

    def deep(frames: int) -> Any:  # a reader called far down a stack
        return deep(frames - 1) if frames else decode_result(text)

    assert deep(sys.getrecursionlimit() - MAX_DEPTH - 100) == nested(MAX_DEPTH)


def test_a_circular_value_is_unstorable_and_says_so() -> None:
    loop: list[Any] = []
    loop.append(loop)
    loop.append(loop)
    with pytest.raises(UnstorableResult, match="[Cc]ircular"):
        encode_result(loop)


def test_nesting_far_past_any_stack_is_unstorable_too() -> None:
    with pytest.raises(UnstorableResult, match="nested 100000 deep"):
        encode_result({"deep": nested(99999)})
