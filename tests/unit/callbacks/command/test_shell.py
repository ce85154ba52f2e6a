"""The quoting-state scanner behind --shell (minionize.callbacks.command.shell)."""

from __future__ import annotations

import subprocess

import pytest

from minionize.callbacks.command.shell import ALL, ShellTemplateError, compile_script


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
    (["[[ -f ", 1, " ]] && echo"], '[[ -f "${1}" ]] && echo'),  # no arithmetic: fine
    (["[[ 1 -eq 1 ]] && echo ", 1], '[[ 1 -eq 1 ]] && echo "${1}"'),  # after the ]]
    (["echo let ", 1], 'echo let "${1}"'),  # let as an argument is a word
    (["( (echo ", 1, ") )"], '( (echo "${1}") )'),  # a subshell in a subshell
])
def test_references_follow_the_quoting_state(pieces: list[str | int], script: str) -> None:
    assert compile_script(pieces) == script


@pytest.mark.parametrize("pieces", [
    ["echo \\", 1], ['echo "\\', 1, '"'], ["echo `echo ", 1, "`"], ["echo ${x:-", 1, "}"],
    ["echo $(( ", 1, " ))"], ["cat <<EOF\n", 1, "\nEOF"], ["echo $", 1], ['echo "$', 1, '"'],
    ["echo 'a"], ['echo "a'],
    # bash evaluates these as arithmetic, running $(...) found in an array subscript
    ["(( ", 1, " > 0 ))"], ["((", 1, "))"], ["for ((i=0; i<", 1, "; i++)); do :; done"],
    ["let x=", 1], ["true; let 'x=", 1, "'"], ["\\let ", 1], ["'let' ", 1], ['l"e"t ', 1],
    ["[[ ", 1, " -eq 0 ]]"],
    ['[[ 0 -lt "', 1, '" ]] && echo'], ["if [[ a == b || ", 1, " -ge 2 ]]; then :; fi"],
])
def test_unsafe_or_broken_positions_are_refused(pieces: list[str | int]) -> None:
    with pytest.raises(ShellTemplateError):
        compile_script(pieces)


def test_bash_arithmetic_really_runs_a_quoted_reference(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Why the positions above are refused: bash itself evaluates the value.
    subprocess.run(["bash", "-c", '[[ "${1}" -eq 0 ]]', "sh", "a[$(touch PWNED)]"],
                   cwd=tmp_path, capture_output=True)
    assert (tmp_path / "PWNED").exists()


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


#: Fragments of shell syntax that random templates are made of.
FRAGMENTS = ["'", '"', " ", "$(", ")", "(", "printf %s ", ";", "\\", "`", "${", "}", "#", "\n",
             "$((", "))", "[[ ", " ]]", " -eq ", "let ", "<<E", "E", "a", "|", "&&", "$",
             "((", "case x in x) ", " esac", "$'", " == ", "'let' ", "\\let ", "for "]


def test_random_templates_never_run_a_value(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Whatever the template, once it compiles no value runs, in dash or in bash (about
    3,500 random templates were checked by hand; this keeps a fixed sample in CI)."""
    import random

    rng = random.Random(10)
    checked = 0
    while checked < 60:
        pieces: list[str | int] = [
            rng.choice(FRAGMENTS) if rng.random() < 0.75 else 1 for _ in range(rng.randint(2, 8))
        ]
        if 1 not in pieces:
            continue
        try:
            script = compile_script(pieces)
        except ShellTemplateError:
            continue
        checked += 1
        for shell in ("/bin/sh", "bash"):
            for value in ("$(touch PWNED)", "a[$(touch PWNED)]", "';touch PWNED;'"):
                try:
                    subprocess.run([shell, "-c", script, "sh", value], cwd=tmp_path,
                                   capture_output=True, timeout=5, stdin=subprocess.DEVNULL)
                except subprocess.TimeoutExpired:
                    pass
                assert not (tmp_path / "PWNED").exists(), (shell, pieces, script, value)
