"""The commands' parsers and their options as tables.

Every option of ``minionize`` overrides one variable. A group of options is written as a
table (:func:`table`), much as ``--help`` shows it: a line of flags, metavar, kind and
``-> VARIABLE``, then the help, indented. The same rows (:class:`Option`) drive both the
parser (:func:`add_group`) and the setting of the variables (:func:`apply`), so that an
option and its variable are written once and cannot drift apart.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, MutableMapping
from typing import Any, NamedTuple, Optional


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


def new_parser(
    prog: str, description: str, epilog: Optional[str] = None, *, raw: bool = True
) -> argparse.ArgumentParser:
    """A command's parser; ``raw``: the description and epilog are laid out as written."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter,
    )


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
