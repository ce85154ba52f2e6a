"""Values out of band for ``--shell``: a placeholder becomes a reference to a positional
parameter of ``sh -c``, never spliced text.

Quoting a value and splicing it into shell text is only safe if the splice point is
known exactly (``'{x}'`` needs another quoting than ``"{x}"`` or ``{x}``), so minionize
never splices. The command runs as ``/bin/sh -c SCRIPT sh VALUE1 VALUE2 ...`` and each
placeholder of the script is replaced, once at start, by a reference to its value, written
for the quoting state in which the placeholder stands:

==========================  ==========================  ===============================
placeholder stands          written as                  e.g. ``echo {x}`` ...
==========================  ==========================  ===============================
outside quotes              ``"${N}"`` (one word)       ``echo "${1}"``
inside double quotes        ``${N}``                    ``echo "[${1}]"``
inside single quotes        ``'"${N}"'`` (close, ref,   ``echo '['"${1}"']'``
                            reopen)
inside ``$(...)``           as outside quotes           ``echo "$(basename "${1}")"``
==========================  ==========================  ===============================

The shell expands ``${N}`` to the value's bytes and never parses them again, so no byte
of a value is read as syntax. Where a reference would not keep the value one plain word
(after a backslash, inside backquotes, ``${...}``, ``$((...))`` or after a here-document),
the placeholder is refused when the minion starts. Should this scanner ever misjudge a
quoting state (shell grammar has corners, e.g. ``case`` patterns inside ``$(...)``), the
worst outcome is a value split into words or a literal ``${N}``: still never a command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

#: A piece of a command: shell text, or the number of the positional parameter a
#: placeholder refers to (``ALL``: every positional parameter, ``"$@"``).
Piece = Union[str, int]
ALL = 0

_WORD_BREAK = frozenset(" \t\n;&|()<>")


class ShellTemplateError(ValueError):
    """A placeholder stands where a reference cannot keep its value one plain word."""


def reference(index: int, state: str) -> str:
    """How positional parameter ``index`` is written in quoting ``state``."""
    ref = '"$@"' if index == ALL else f'"${{{index}}}"'
    if state == "double":
        return "$@" if index == ALL else f"${{{index}}}"
    if state == "single":
        return f"'{ref}'"
    return ref


def compile_script(pieces: Sequence[Piece]) -> str:
    """The ``sh -c`` script for ``pieces``: shell text kept as it is, each int replaced
    by a reference to that positional parameter (see the module docstring)."""
    scanner = _Scanner()
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            scanner.feed(piece)
            out.append(piece)
        else:
            out.append(reference(piece, scanner.placeholder_state()))
            scanner.after_placeholder()
    scanner.end()
    return "".join(out)


@dataclass
class _Frame:
    kind: str
    depth: int = 0  # open ( or { inside this frame


class _Scanner:
    """POSIX shell quoting states, as far as placeholders need them.

    The stack holds the open contexts: ``top`` (the script), ``cmd`` (``$(...)``, a new
    quoting context, with its count of open parentheses), ``single``, ``double``,
    ``backquote``, ``param`` (``${...}``), ``arith`` (``$((...))``), ``comment``.
    """

    def __init__(self) -> None:
        self.stack: list[_Frame] = [_Frame("top")]
        self.escaped = False  # the previous character was an unquoted backslash
        self.heredoc = False  # a here-document started: its body is not shell syntax
        self.prev = " "  # the previous character (a placeholder counts as a letter)

    @property
    def state(self) -> str:
        return self.stack[-1].kind

    def placeholder_state(self) -> str:
        state = self.state
        if self.escaped:
            raise ShellTemplateError(
                "a placeholder right after a backslash would lose its quoting: remove the "
                "backslash"
            )
        if self.heredoc:
            raise ShellTemplateError(
                "a placeholder after a here-document (<<) is not supported: pass the value "
                "as an argument instead"
            )
        if state in ("backquote", "param", "arith"):
            where = {"backquote": "inside backquotes (use $(...) instead)",
                     "param": "inside ${...}", "arith": "inside $((...))"}[state]
            raise ShellTemplateError(f"a placeholder cannot stand {where}")
        if state == "comment":
            return "top"
        if self.prev == "$" and state != "single":
            raise ShellTemplateError("a placeholder cannot follow a bare $")
        return state

    def after_placeholder(self) -> None:
        self.prev = "x"

    def end(self) -> None:
        if self.escaped and self.state not in ("single", "comment"):
            # A trailing backslash: harmless unless a reference follows, checked above.
            self.escaped = False
        if self.state in ("single", "double"):
            quote = "'" if self.state == "single" else '"'
            raise ShellTemplateError(f"a {quote} quote is not closed")

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            i = self._step(text, i)

    def _push(self, kind: str) -> None:
        self.stack.append(_Frame(kind))

    def _step(self, text: str, i: int) -> int:
        c = text[i]
        nxt = text[i + 1: i + 3]
        state = self.state
        if self.escaped:
            self.escaped = False
            self.prev = "x"
            return i + 1
        if state == "single":
            if c == "'":
                self.stack.pop()
        elif state == "comment":
            if c == "\n":
                self.stack.pop()
        elif state in ("double", "backquote"):
            closing = '"' if state == "double" else "`"
            if c == "\\":
                self.escaped = True
            elif c == closing:
                self.stack.pop()
            elif state == "double":
                return self._dollar_or_backquote(text, i)
        elif state in ("param", "arith"):
            frame = self.stack[-1]
            opener, closer = ("{", "}") if state == "param" else ("(", ")")
            if c == opener:
                frame.depth = frame.depth + 1
            elif c == closer:
                if frame.depth == 0:
                    self.stack.pop()
                    if state == "arith":
                        return i + 2  # the second ) of ))
                else:
                    frame.depth = frame.depth - 1
        else:  # top or cmd: a full quoting context
            return self._unquoted(text, i, c, nxt)
        self.prev = c
        return i + 1

    def _unquoted(self, text: str, i: int, c: str, nxt: str) -> int:
        frame = self.stack[-1]
        if c == "\\":
            self.escaped = True
        elif c == "'":
            self._push("single")
        elif c == '"':
            self._push("double")
        elif c == "#" and self.prev in _WORD_BREAK:
            self._push("comment")
        elif c == "<" and nxt[:1] == "<" and nxt[1:2] != "<" and self.prev != "<":
            self.heredoc = True
        elif c in "$`":
            return self._dollar_or_backquote(text, i)
        elif frame.kind == "cmd" and c == "(":
            frame.depth = frame.depth + 1
        elif frame.kind == "cmd" and c == ")":
            if frame.depth == 0:
                self.stack.pop()
            else:
                frame.depth = frame.depth - 1
        self.prev = c
        return i + 1

    def _dollar_or_backquote(self, text: str, i: int) -> int:
        c = text[i]
        self.prev = c
        if c == "`":
            self._push("backquote")
            return i + 1
        if c != "$":
            return i + 1
        if text.startswith("$((", i):
            self._push("arith")
            return i + 3
        if text.startswith("$(", i):
            self._push("cmd")
            return i + 2
        if text.startswith("${", i):
            self._push("param")
            return i + 2
        return i + 1
