"""GNU parallel's replacement strings: the pure rules, and how commands use them."""

from __future__ import annotations

import threading

import pytest

from minionize.callbacks.command.builder import CommandBuilder
from minionize.callbacks.command.replacements import basename, dirname, modify, no_extension, split_name
from minionize.engines.base import Delivery
from minionize.errors import ConfigError

# What GNU parallel 20221122 prints for `echo '{}, {.}, {/}, {//}, {/.}'` on each input.
PARALLEL_SAYS = [
    ("a/b.c/d.tar.gz", "a/b.c/d.tar", "d.tar.gz", "a/b.c", "d.tar"),
    ("file", "file", "file", ".", "file"),
    (".bashrc", "", ".bashrc", ".", ""),
    ("/x/y", "/x/y", "y", "/x", "y"),
    ("sub.dir/file", "sub.dir/file", "file", "sub.dir", "file"),
]


@pytest.mark.parametrize(("value", "dot", "slash", "slash2", "slashdot"), PARALLEL_SAYS)
def test_modifiers_match_gnu_parallel(value: str, dot: str, slash: str, slash2: str,
                                      slashdot: str) -> None:
    assert no_extension(value) == dot
    assert basename(value) == slash
    assert dirname(value) == slash2
    assert modify(value, "/.") == slashdot
    assert modify(value, "") == value


def test_dirname_corners_follow_perl() -> None:
    assert dirname("/y") == "/"
    assert dirname("a/") == "."
    assert dirname("/") == "/"
    assert dirname("") == "."
    assert dirname("a//b") == "a"


def test_split_name() -> None:
    assert split_name("x/.") == ("x", "/.")
    assert split_name("x//") == ("x", "//")
    assert split_name("x/") == ("x", "/")
    assert split_name("x.") == ("x", ".")
    assert split_name(".") == ("", ".")
    assert split_name("#") == ("#", "")
    assert split_name("x") == ("x", "")


def build(command: object = (), template: str | None = None, shell: bool = False) -> CommandBuilder:
    return CommandBuilder(command, template, shell)  # type: ignore[arg-type]


def test_command_words_take_every_replacement_string() -> None:
    builder = build(["convert", "{}", "{.}.png", "{/}", "{//}", "{/.}"])
    assert builder.argv("in/pic.jpg") == ["convert", "in/pic.jpg", "in/pic.png", "pic.jpg",
                                          "in", "pic"]


def test_a_replacement_string_means_the_param_is_not_appended() -> None:
    assert build(["echo", "{.}"]).argv("a.txt") == ["echo", "a"]
    assert build(["echo", "{%}", "x"]).argv("a") == ["echo", "1", "x"]


def test_template_takes_modifiers_on_whole_param_and_keys() -> None:
    builder = build(template="run {.} {x.} {x/} {x//} {x/.} {y}")
    param = {"x": "data/in.csv", "y": 2}
    assert builder.argv(param)[2:] == ["data/in", "in.csv", "data", "in", "2"]
    assert build(template="echo {/}").argv("a/b") == ["echo", "b"]


def test_a_dotted_key_is_still_refused() -> None:
    with pytest.raises(ConfigError, match="attribute and index access"):
        build(template="echo {a.b}")


def test_sequence_number_is_the_numeric_id_else_a_counter() -> None:
    builder = build(["echo", "{#}", "{#}"])
    builder.begin(Delivery("a", "7", 1))
    assert builder.argv("a") == ["echo", "7", "7"]
    assert builder.last_command() == ("7", ["echo", "7", "7"])
    builder.begin(Delivery("b", "3f9a0c", 1))  # a hash id (sweep): the minion's counter
    assert builder.argv("b") == ["echo", "1", "1"]
    assert builder.argv("c") == ["echo", "2", "2"]  # no begin (DRY): counted too


def test_slot_is_one_per_worker_thread() -> None:
    builder = build(["echo", "{%}"])
    seen: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        first = builder.argv("a")[1]
        assert builder.argv("b")[1] == first  # a worker keeps its slot
        with lock:
            seen.append(first)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == ["1", "2", "3"]


def test_shell_mode_passes_modified_values_out_of_band() -> None:
    builder = build(["echo", "{.}", "{/}", "{#}"], shell=True)
    builder.begin(Delivery("x", "4", 1))
    argv = builder.argv("$(touch PWNED)/a.b")
    assert argv[:3] == ["/bin/sh", "-c", 'echo "${1}" "${2}" "${3}"']
    assert argv[4:] == ["$(touch PWNED)/a", "a.b", "4"]


def test_shell_dollar_hash_is_left_to_the_shell() -> None:
    builder = build(["echo", "${#}"], shell=True)
    assert builder.argv("a")[2] == 'echo ${#} "$@"'


def test_a_param_that_cannot_fill_the_command_leaves_no_stale_command() -> None:
    from minionize.callbacks.command.builder import ParamError

    builder = build(template="echo {x}")
    builder.begin(Delivery({"x": 1}, "1", 1))
    builder.argv({"x": 1})
    builder.begin(Delivery({"y": 2}, "2", 1))
    with pytest.raises(ParamError):
        builder.argv({"y": 2})
    assert builder.last_command()[1] is None  # the joblog does not log "echo 1" for it
