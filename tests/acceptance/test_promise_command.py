"""The promise about the command line, as a user types it (issue 10, items 2, 5 and 7).

* No shell ever reads a param: wherever a placeholder stands in a ``--shell`` command
  (bare, in single or double quotes, inside a word, in ``$(...)``), the program receives
  exactly the param's text and nothing in it runs.
* A mistake on the command line stops the minion with exit 2 and consumes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import sh

#: Params that a shell would read as syntax if they were spliced into the command line.
ATTACKS = [
    "$(touch PWNED)", "`touch PWNED`", "; touch PWNED", "&& touch PWNED", "| touch PWNED",
    "it's", "a\"b", "\\", "x\\", "$x", "${x}", "$1", "*", "?", "[a]", "~", "a\nb",
    "'; touch PWNED; '", "\"; touch PWNED; \"", "'\"$(touch PWNED)\"'", "{}", "{x}",
    "  two  spaces  ", "", "-n", "#", "\ttab",
]


def test_the_issue_reproduction_runs_nothing(user_env: dict[str, str]) -> None:
    result = sh("""printf '%s\\n' '$(touch PWNED)' | MINION_ENGINE=file minionize --shell 'echo "[{}]"'""",
                user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[$(touch PWNED)]\n"
    assert not Path("PWNED").exists()


@pytest.mark.parametrize("template", [
    """echo '{x}'""",
    """echo "{x}\"""",
])
def test_the_issue_template_reproductions_run_nothing(user_env: dict[str, str], template: str) -> None:
    Path("p.jsonl").write_text('{"x": "$(touch PWNED)"}\n{"x": "it\'s"}\n')
    result = sh(f"MINION_ENGINE=file FILE_PATH=p.jsonl FILE_DECODER=json minionize --shell "
                f"--template {json.dumps(template)}", user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "$(touch PWNED)\nit's\n"
    assert not Path("PWNED").exists()


def _expect(shape: str) -> str:
    return "".join(shape.replace("V", value) for value in ATTACKS)


@pytest.mark.parametrize(("template", "shape"), [
    ("""printf '[%s]\\n' {x}""", "[V]\n"),
    ("""printf '[%s]\\n' '{x}'""", "[V]\n"),
    ("""printf '[%s]\\n' "{x}\"""", "[V]\n"),
    ("""printf '[%s]\\n' pre{x}post""", "[preVpost]\n"),
    ("""printf '[%s]\\n' 'pre {x} post'""", "[pre V post]\n"),
    ("""printf '[%s]\\n' "pre {x} post\"""", "[pre V post]\n"),
    ("""printf '[%s]\\n' 'a'{x}"b"{x}""", "[aVbV]\n"),
    ("""printf '[%s]\\n' "$(printf %s {x})\"""", "[V]\n"),
    ("""printf '[%s]\\n' $(printf %s '{x}' | wc -c) >/dev/null; printf '[%s]\\n' {x}""",
     "[V]\n"),
    ("""# it's a comment, with a quote\nprintf '[%s]\\n' {x}""", "[V]\n"),
])
def test_a_param_is_only_text_wherever_the_placeholder_stands(
    user_env: dict[str, str], template: str, shape: str
) -> None:
    Path("p.jsonl").write_text("".join(json.dumps({"x": v}) + "\n" for v in ATTACKS))
    result = sh(f"MINION_ENGINE=file FILE_PATH=p.jsonl FILE_DECODER=json minionize --shell "
                f"--template {_quote(template)}", user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == _expect(shape)
    assert not Path("PWNED").exists()


@pytest.mark.parametrize(("command", "shape"), [
    ("""printf '[%s]\\n' {}""", "[V]\n"),
    ("""printf '[%s]\\n' '{}'""", "[V]\n"),
    ("""printf '[%s]\\n' "<{}>\"""", "[<V>]\n"),
    ("""printf '[%s]\\n'""", "[V]\n"),
    ("""cd . && printf '[%s]\\n'""", "[V]\n"),
])
def test_a_param_is_only_text_without_a_template(
    user_env: dict[str, str], command: str, shape: str
) -> None:
    Path("p.jsonl").write_text("".join(json.dumps(v) + "\n" for v in ATTACKS))
    result = sh(f"MINION_ENGINE=file FILE_PATH=p.jsonl FILE_DECODER=json minionize --shell "
                f"{_quote(command)}", user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == _expect(shape)
    assert not Path("PWNED").exists()


def test_a_list_param_gives_one_argument_per_value(user_env: dict[str, str]) -> None:
    Path("p.jsonl").write_text(json.dumps(["$(touch PWNED)", "it's", "a b"]) + "\n")
    result = sh("MINION_ENGINE=file FILE_PATH=p.jsonl FILE_DECODER=json minionize --shell "
                "\"printf '[%s]\\n'\"", user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[$(touch PWNED)]\n[it's]\n[a b]\n"
    assert not Path("PWNED").exists()


def test_dry_run_shows_what_really_runs(user_env: dict[str, str]) -> None:
    result = sh("""printf '%s\\n' "it's" | MINION_ENGINE=file minionize -n --shell 'echo "[{}]"'""",
                user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == """/bin/sh -c 'echo "[${1}]"' sh 'it'"'"'s'\n"""
    # What -n shows, pasted into a shell, does what the minion does.
    pasted = sh(result.stdout, user_env)
    assert pasted.stdout == "[it's]\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


# -- item 7: messages a user can trust ---------------------------------------------------
def test_the_help_example_for_json_mappings_is_true(user_env: dict[str, str]) -> None:
    help_text = sh("minionize --help", user_env).stdout
    lines = help_text.splitlines()
    at = next(i for i, line in enumerate(lines) if "JSON mapping" in line)
    command = lines[at + 1].strip().replace("a.out", "echo")
    assert command.startswith("minionize --file params.jsonl --decoder json ")
    Path("params.jsonl").write_text('{"x": 1, "y": "a b"}\n{"x": 2, "y": "c"}\n')
    result = sh(command, user_env)
    assert result.returncode == 0, (command, result.stderr)
    assert result.stdout == "--x 1 --y a b\n--x 2 --y c\n"


def test_a_string_param_for_a_named_template_says_how_to_decode(user_env: dict[str, str]) -> None:
    result = sh("""echo '{"x": 1}' | minionize --engine file --template 'echo {x}'""", user_env)
    assert result.returncode != 0
    assert "the param is a string" in result.stderr and "FILE_DECODER=json" in result.stderr


@pytest.mark.parametrize(("typo", "known"), [
    ("MINION_CONCURENCY=4", "MINION_CONCURRENCY"),
    ("MINION_MAX_ATTEMPT=1", "MINION_MAX_ATTEMPTS"),
    ("MINION_ENGIN=file", "MINION_ENGINE"),
])
def test_a_misspelt_variable_is_named_once(user_env: dict[str, str], typo: str, known: str) -> None:
    result = sh(f"{typo} MINION_ENGINE=file minionize true < /dev/null", user_env)
    assert result.returncode == 0, result.stderr
    name = typo.split("=")[0]
    lines = [line for line in result.stderr.splitlines() if name in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("minionize: warning: ") and f"did you mean {known}?" in lines[0]


def test_heartbeat_zero_is_refused(user_env: dict[str, str]) -> None:
    result = sh("MINION_HEARTBEAT=0 MINION_REPORTER=json MINION_ENGINE=file minionize true "
                "< /dev/null", user_env)
    assert result.returncode == 2
    assert result.stderr.startswith("minionize: error: MINION_HEARTBEAT='0'")
    assert not Path("minion-report").exists()


# -- item 5: a mistake on the command line does not burn the queue --------------------------
def _consumed() -> str:
    return "".join(Path(name).read_text() for name in ("p.jsonl.done", "p.jsonl.failed")
                   if Path(name).exists())


@pytest.mark.parametrize("template", [
    "echo {a.b}", "echo {a[0]}", "echo {a!r}", "echo {a:>9}", "echo {a", "echo a}",
])
@pytest.mark.parametrize("shell", ["", "--shell"])
def test_a_malformed_template_stops_at_start_and_consumes_nothing(
    user_env: dict[str, str], template: str, shell: str
) -> None:
    Path("p.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    result = sh(f"MINION_ENGINE=file FILE_PATH=p.jsonl FILE_DECODER=json minionize {shell} "
                f"--template {_quote(template)}", user_env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("minionize: error: ")
    assert result.stdout == "" and _consumed() == ""


@pytest.mark.parametrize("command", [
    "--template 'echo {a} {b}'", "echo", "--shell --template 'echo {a} {b}'",
])
def test_a_command_no_param_can_fill_stops_with_exit_2_and_consumes_nothing(
    user_env: dict[str, str], command: str
) -> None:
    Path("p.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    result = sh(f"MINION_ENGINE=file FILE_PATH=p.jsonl FILE_DECODER=json minionize {command}",
                user_env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("minionize: error: ")
    assert _consumed() == ""
