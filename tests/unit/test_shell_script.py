"""The quoting-state scanner behind --shell (minionize.callbacks.shell)."""

from __future__ import annotations

import subprocess

import pytest

from minionize.callbacks.shell import ALL, ShellTemplateError, compile_script


@pytest.mark.parametrize(("pieces", "script"), [
    (["echo ", 1], 'echo "${1}"'),  # outside quotes: one word
    (['echo "a', 1, 'b"'], 'echo "a${1}b"'),  # in double quotes
    (["echo 'a", 1, "b'"], """echo 'a'"${1}"'b'"""),  # in single quotes: close, ref, reopen
    (["echo a", 1, "b"], 'echo a"${1}"b'),  # inside a word
    (["echo $(basename ", 1, ")"], 'echo $(basename "${1}")'),
    (['echo "$(basename ', 1, ')"'], 'echo "$(basename "${1}")"'),  # $(...) opens a new context
    (['echo "$(echo ")" ', 1, ')"'], 'echo "$(echo ")" "${1}")"'),  # ) quoted in $(...)
    (["echo $( (cd /; pwd) ) ", 1], 'echo $( (cd /; pwd) ) "${1}"'),  # nested parentheses
    (["echo \\' ", 1], """echo \\' "${1}\""""),  # an escaped quote opens nothing
    (['echo "a\\"b ', 1, '"'], 'echo "a\\"b ${1}"'),  # an escaped " does not close
    (["echo 'a\\' ", 1], """echo 'a\\' "${1}\""""),  # no escape inside single quotes
    (["# it's\necho ", 1], """# it's\necho "${1}\""""),  # a quote in a comment opens nothing
    (["echo a#b'c' ", 1], """echo a#b'c' "${1}\""""),  # # inside a word is not a comment
    (["echo ${HOME} ", 1], 'echo ${HOME} "${1}"'),
    (["cat <<< ", 1], 'cat <<< "${1}"'),  # a here-string is a word
    (["echo ", ALL], 'echo "$@"'),
    (['echo "', ALL, '"'], 'echo "$@"'),
    (["echo ", 1, " ", 2, " ", 1], 'echo "${1}" "${2}" "${1}"'),
])
def test_references_follow_the_quoting_state(pieces: list[str | int], script: str) -> None:
    assert compile_script(pieces) == script


@pytest.mark.parametrize("pieces", [
    ["echo \\", 1], ['echo "\\', 1, '"'], ["echo `echo ", 1, "`"], ["echo ${x:-", 1, "}"],
    ["echo $(( ", 1, " ))"], ["cat <<EOF\n", 1, "\nEOF"], ["echo $", 1], ['echo "$', 1, '"'],
    ["echo 'a"], ['echo "a'],
])
def test_unsafe_or_broken_positions_are_refused(pieces: list[str | int]) -> None:
    with pytest.raises(ShellTemplateError):
        compile_script(pieces)


@pytest.mark.parametrize("shell", ["/bin/sh", "bash"])  # /bin/sh is bash on some clusters
@pytest.mark.parametrize("value", ["$(touch PWNED)", "`touch PWNED`", "it's", 'a"b', "\\",
                                   "$1", "*", "a\nb", "' \" '", ""])
def test_the_shell_gives_every_reference_the_value_exactly(  # type: ignore[no-untyped-def]
    shell: str, value: str, tmp_path
) -> None:
    script = compile_script(["printf '[%s]' ", 1, " '", 1, "' \"", 1, '" x', 1, "x"])
    out = subprocess.run([shell, "-c", script, "sh", value], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert out == f"[{value}][{value}][{value}][x{value}x]"
    assert not (tmp_path / "PWNED").exists()
