from __future__ import annotations

import subprocess

import pytest

from minionize.callbacks.command.builder import ParamError
from minionize.callbacks.process.callback import ProcessCallback
from minionize.errors import CommandLineError, ConfigError


def cmd(param: object, command: object = (), template: str | None = None,
        shell: bool = False) -> object:
    return ProcessCallback(command, template=template, shell=shell).to_cmd(param)  # type: ignore[arg-type]


def test_scalar_is_appended_as_one_argument() -> None:
    assert cmd(3, ["echo", "hello"]) == ["echo", "hello", "3"]
    assert cmd("a b; $(rm -rf ~)", ["echo"]) == ["echo", "a b; $(rm -rf ~)"]
    assert cmd(True, ["echo"]) == ["echo", "true"]


def test_list_is_appended_as_several_arguments() -> None:
    assert cmd([1, "two", [3]], ["cmd"]) == ["cmd", "1", "two", "[3]"]


def test_braces_are_replaced_like_xargs() -> None:
    assert cmd("f", ["cp", "{}", "{}.bak"]) == ["cp", "f", "f.bak"]
    # Only {} is a placeholder without a template: awk's braces stay as they are.
    assert cmd("f", ["awk", "{print}"]) == ["awk", "{print}", "f"]


def test_template_fills_mapping_params() -> None:
    assert cmd({"x": 1, "y": "a b"}, template="a.out --x {x} {y}") == ["a.out", "--x", "1", "a b"]
    assert cmd({"x": 1}, template="echo {} {0} {{x}}") == ["echo", '{"x":1}', '{"x":1}', "{x}"]


def test_template_values_are_never_split_or_interpreted() -> None:
    assert cmd({"name": "$(id) ; ls"}, template="run --name={name}") == ["run", "--name=$(id) ; ls"]


# -- item 2: --shell passes values out of band ---------------------------------------------
def test_shell_values_are_positional_parameters_never_shell_text() -> None:
    assert cmd("$(id)", ["echo", "x", "|", "wc"], shell=True) == [
        "/bin/sh", "-c", 'echo x | wc "$@"', "sh", "$(id)"]
    assert cmd({"x": "a;b"}, template="echo {x}", shell=True) == [
        "/bin/sh", "-c", 'echo "${1}"', "sh", "a;b"]
    assert cmd("it's", ['echo "[{}]"'], shell=True) == [
        "/bin/sh", "-c", 'echo "[${1}]"', "sh", "it's"]
    assert cmd({"x": "v"}, template="echo '<{x}>' {x}", shell=True) == [
        "/bin/sh", "-c", """echo '<'"${1}"'>' "${1}\"""", "sh", "v"]
    assert cmd([1, 2], ["echo"], shell=True) == ["/bin/sh", "-c", 'echo "$@"', "sh", "1", "2"]


@pytest.mark.parametrize("value", [
    "$(touch PWNED)", "`touch PWNED`", "it's", 'a"b', "\\", "$HOME", "*", "a\nb", ";", "",
    "'\"$(touch PWNED)\"'",
])
@pytest.mark.parametrize(("template", "shape"), [
    ("printf %s {x}", "V"), ("printf %s '{x}'", "V"), ('printf %s "{x}"', "V"),
    ("printf %s +{x}+", "+V+"), ("printf %s '<'{x}\"{x}\"'{x}'", "<VVV"),
    ('printf %s "$(printf %s {x})"', "V"), ("printf %s \"'\"{x}\"'\"", "'V'"),
])
def test_shell_gives_the_program_exactly_the_value(  # type: ignore[no-untyped-def]
    template: str, shape: str, value: str, tmp_path
) -> None:
    argv = cmd({"x": value}, template=template, shell=True)
    out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=True).stdout  # type: ignore[call-overload]
    assert out == shape.replace("V", value)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("template", [
    "echo \\{x}",  # after a backslash
    'echo "\\{x}"',
    "echo `echo {x}`",  # in backquotes
    "echo ${{HOME:-{x}}}",  # in ${...}
    "echo $(( {x} + 1 ))",  # arithmetic: bash would evaluate the value
    "cat <<EOF\n{x}\nEOF",  # a here-document body
    "echo ${x}",  # a bare $ before a placeholder
    "echo '{x}",  # an unclosed quote
])
def test_shell_placeholders_where_a_reference_cannot_stay_text_are_refused(template: str) -> None:
    with pytest.raises(ConfigError, match="MINION_TEMPLATE"):
        ProcessCallback(template=template, shell=True)


def test_dry_run_describes_the_real_command() -> None:
    callback = ProcessCallback(['echo "[{}]"'], shell=True)
    assert callback.describe("it's") == """/bin/sh -c 'echo "[${1}]"' sh 'it'"'"'s'"""


# -- item 5: a mistake on the command line is not a bad param ----------------------------
@pytest.mark.parametrize("template", [
    "a.out {a.b}", "a.out {a[0]}", "a.out {x!r}", "a.out {x:>5}", "a.out {x", "a.out x}",
    "a.out {1}", "'unclosed", "",
])
@pytest.mark.parametrize("shell", [False, True])
def test_malformed_template_is_refused_when_the_callback_is_built(template: str, shell: bool) -> None:
    if shell and template == "'unclosed":
        template = "echo 'unclosed"
    with pytest.raises(ConfigError, match="MINION_TEMPLATE") as info:
        ProcessCallback(template=template or " ", shell=shell)
    assert not isinstance(info.value, CommandLineError)


@pytest.mark.parametrize("shell", [False, True])
def test_missing_key_is_the_command_lines_fault_until_a_param_filled_it(shell: bool) -> None:
    callback = ProcessCallback(template="echo {a} {b}", shell=shell)
    with pytest.raises(CommandLineError, match="no key 'b'"):
        callback.to_cmd({"a": 1})
    callback.to_cmd({"a": 1, "b": 2})
    with pytest.raises(ParamError, match="no key 'b'"):
        callback.to_cmd({"a": 1})


@pytest.mark.parametrize("shell", [False, True])
def test_mapping_without_template_is_the_command_lines_fault_first(shell: bool) -> None:
    callback = ProcessCallback(["a.out"], shell=shell)
    with pytest.raises(CommandLineError, match="--template"):
        callback.to_cmd({"x": 1})
    callback.to_cmd(1)
    with pytest.raises(ParamError, match="--template"):
        callback.to_cmd({"x": 1})


def test_run_raises_command_line_error_for_the_loop() -> None:
    # The interface with the minion loop: run raises it (no Result), the loop gives the
    # param back and exits 2.
    from minionize.callbacks.base import Task
    from minionize.engines.base import Delivery

    callback = ProcessCallback(template="true {a}")
    with pytest.raises(CommandLineError):
        callback.run(Task(Delivery(id="1", param={"b": 1}, attempt=1)))


def test_a_param_error_is_dead_lettered_at_once() -> None:
    from minionize.callbacks.base import Outcome, Task
    from minionize.engines.base import Delivery

    callback = ProcessCallback(template="true {a}")
    callback.to_cmd({"a": 1})
    result = callback.run(Task(Delivery(id="1", param={"b": 1}, attempt=1)))
    assert result.outcome is Outcome.REJECTED and "no key 'a'" in result.reason


# -- item 7: a string param meets a template with names ------------------------------------
def test_a_string_param_says_it_is_a_string_and_how_to_decode() -> None:
    callback = ProcessCallback(template="a.out --x {x} --y {y}")
    with pytest.raises(CommandLineError) as info:
        callback.to_cmd('{"x": 1, "y": 2}')
    assert "the param is a string" in str(info.value)
    assert "FILE_DECODER=json" in str(info.value)
    assert "\n" not in str(info.value)


def test_long_params_are_abbreviated_in_messages() -> None:
    callback = ProcessCallback(template="a.out {x}")
    with pytest.raises(CommandLineError) as info:
        callback.to_cmd({"y": "z" * 100_000})
    assert len(str(info.value)) < 600
