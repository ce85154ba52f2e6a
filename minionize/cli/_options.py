"""The commands' parsers and their options as tables.

Every option of ``minionize`` overrides one variable. A group of options is written as a
table (:func:`table`), much as ``--help`` shows it: a line of flags, metavar, kind and
``-> VARIABLE``, then the help, indented. The same rows (:class:`Option`) drive both the
parser (:func:`add_group`) and the setting of the variables (:func:`apply`), so that an
option and its variable are written once and cannot drift apart.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import shlex
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any, NamedTuple, NoReturn, Optional


class Option(NamedTuple):
    """One option: its ``flags`` (separated by spaces), ``metavar`` and ``help`` for
    argparse, and the ``variable`` it sets (None: the command sets it itself)."""

    flags: str
    metavar: Optional[str]
    variable: Optional[str]
    help: str
    #: ``value``: the text given; ``switch``: a flag without value, which sets ``on``;
    #: ``list``: repeatable, the variable holds one value per line.
    kind: str = "value"
    on: str = "1"
    choices: Optional[tuple[str, ...]] = None

    @property
    def dest(self) -> str:
        """The attribute argparse gives it: its first long flag."""
        long = next(flag for flag in self.flags.split() if flag.startswith("--"))
        return long[2:].replace("-", "_")


def table(text: str) -> tuple[Option, ...]:
    """The options of a table: for each option, a line ``FLAGS [METAVAR] [{A,B}] [KIND]
    [-> VARIABLE[=ON]]`` (KIND: ``switch`` or ``list``; a ``switch`` sets ``ON``, 1 by
    default), then its help on the indented lines below it, joined by spaces."""
    rows: list[tuple[str, list[str]]] = []
    for line in text.strip("\n").splitlines():
        if line[:1].isspace():
            rows[-1][1].append(line.strip())
        else:
            rows.append((line, []))
    options = []
    for head, help_lines in rows:
        words, _, target = head.partition(" -> ")
        flags = [word for word in words.split() if word.startswith("-")]
        metavar, kind, choices = None, "value", None
        for word in words.split()[len(flags):]:
            if word in ("switch", "list"):
                kind = word
            elif word.startswith("{"):
                choices = tuple(word.strip("{}").split(","))
            else:
                metavar = word
        if not flags or not help_lines:
            raise ValueError(f"an option needs flags and a help line: {head!r}")
        variable, _, on = target.partition("=")
        options.append(Option(" ".join(flags), metavar, variable or None, " ".join(help_lines),
                              kind, on or "1", choices))
    return tuple(options)


class Parser(argparse.ArgumentParser):
    """A parser whose mistakes are one line: the error, the closest flag to one it does
    not know (``did you mean --concurrency?``), and where the options are listed."""

    def error(self, message: str) -> NoReturn:
        choice = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)$", message)
        if message.startswith("unrecognized arguments:"):
            message += suggest(message.split(":", 1)[1].split(), long_flags(self))
        elif choice:
            choices = [word.strip("'") for word in choice.group(2).split(", ")]
            close = difflib.get_close_matches(choice.group(1), choices, n=1)
            message += f": did you mean {close[0]}?" if close else ""
        top = self.prog.split()[0]
        self.exit(2, f"{self.prog}: error: {message} ({top} --help lists the options)\n")


def long_flags(parser: argparse.ArgumentParser) -> list[str]:
    """Every long flag of ``parser`` and of its subcommands."""
    flags: list[str] = []
    for action in parser._actions:
        flags += [flag for flag in action.option_strings if flag.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                flags += long_flags(sub)
    return list(dict.fromkeys(flags))


def suggest(words: Iterable[str], flags: Sequence[str]) -> str:
    """``: did you mean --x?`` for the first of ``words`` close to one of ``flags``."""
    for word in words:
        if word.startswith("--"):
            close = difflib.get_close_matches(word.split("=", 1)[0], flags, n=1)
            if close:
                return f": did you mean {close[0]}?"
    return ""


def new_parser(
    prog: str, description: str, epilog: Optional[str] = None, *, raw: bool = True
) -> argparse.ArgumentParser:
    """A command's parser, with ``--version``; ``raw``: the description and epilog are
    laid out as written."""
    from .._version import __version__

    parser = Parser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    return parser


def add_group(parser: argparse.ArgumentParser, title: str, options: Iterable[Option]) -> Any:
    """Add the group ``title`` of ``options`` to ``parser``; returns the group."""
    group = parser.add_argument_group(title)
    for option in options:
        kwargs: dict[str, Any] = {"help": option.help}
        if option.kind == "switch":
            kwargs.update(action="store_true", default=None)
        else:
            kwargs["metavar"] = option.metavar
            if option.kind == "list":
                kwargs["action"] = "append"
        if option.choices is not None:
            kwargs["choices"] = option.choices
        group.add_argument(*option.flags.split(), **kwargs)
    return group


def apply(args: argparse.Namespace, values: MutableMapping[str, str], options: Iterable[Option]) -> None:
    """Set in ``values`` the variable of each of ``options`` given on the command line."""
    for option in options:
        value = getattr(args, option.dest, None)
        if option.variable is None or value is None:
            continue
        if option.kind == "switch":
            if value:
                values[option.variable] = option.on
        elif option.kind == "list":
            if value:
                values[option.variable] = "\n".join(value)
        else:
            values[option.variable] = str(value)


def given_flags(args: argparse.Namespace, options: Iterable[Option]) -> dict[str, str]:
    """The variable of each of ``options`` given on the command line, and the option's
    flags as an error shows them (``-j/--concurrency``); a later option setting the same
    variable wins, as in :func:`apply`."""
    given = {}
    for option in options:
        value = getattr(args, option.dest, None)
        if option.variable is not None and value not in (None, False, []):
            given[option.variable] = "/".join(option.flags.split())
    return given


_ASSIGNED = r"""=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")(:?)"""


def name_flags(message: str, given: Mapping[str, str]) -> str:
    """``message`` with each ``VARIABLE='value'`` of a variable set by a flag written as
    the flag the user typed: ``MINION_CONCURRENCY='0' must be...`` becomes
    ``-j/--concurrency 0: must be...``, and so does such a variable that begins the
    message. A variable from the environment keeps its name."""
    for variable, flags in given.items():
        def as_flag(match: re.Match[str], flags: str = flags) -> str:
            return f"{flags} {shlex.quote(ast.literal_eval(match.group(1)))}:"

        message = re.sub(rf"\b{re.escape(variable)}{_ASSIGNED}", as_flag, message)
        if re.match(rf"{re.escape(variable)}\b(?!=)", message):  # the subject
            message = flags + message[len(variable):]
    return message


def duration(text: str) -> float:
    """An argparse ``type``: a duration as GNU parallel writes it (30, 1.5s, 2h30m)."""
    from ..durations import DURATION_HINT, parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: {DURATION_HINT}")
    return seconds
