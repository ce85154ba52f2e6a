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
or where bash would evaluate it as arithmetic (``((...))``, ``let``, a ``[[ ... ]]`` test
with ``-eq``/``-lt``...: bash runs a ``$(...)`` found in an array subscript of the value,
even from a quoted reference, and ``/bin/sh`` is bash on many clusters), the placeholder is
refused when the minion starts.

Should this scanner misjudge a quoting state (shell grammar has corners: ``case`` patterns
inside ``$(...)``, bash's ``$'...'``), the outcome is a value split into words or a literal
``${N}``, not a value run as a command, since values never enter the text. What it cannot
see is a bash integer variable (``declare -i n; n={x}``): the docs say not to declare one.
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


#: Words after which the next word is still in command position.
_RESERVED = frozenset({"if", "then", "else", "elif", "while", "until", "do", "!", "{", "time",
                       "for"})  # for: bash's for ((...))
#: Comparisons that make bash's ``[[ ... ]]`` evaluate both sides as arithmetic.
_ARITH_TESTS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
_QUOTED = "\0"  # marks a word that holds an expansion or a placeholder


@dataclass
class _Frame:
    """One open context of the scanner's stack; a top or cmd frame also reads the words
    of its commands, to find where bash evaluates a value as arithmetic."""

    kind: str
    depth: int = 0  # open ( or { inside this frame
    # For top and cmd frames (full quoting contexts): the unquoted word being read,
    # whether it is in command position, and the bash constructs that evaluate a value
    # as arithmetic (a `let` command, a `[[ ... ]]` test and its references).
    word: str = ""
    at_command: bool = True
    in_let: bool = False
    in_test: bool = False
    test_refs: int = 0
    test_arith: bool = False

    def check_test(self) -> None:
        """Refuse a placeholder in a ``[[ ... ]]`` test that compares as numbers."""
        if self.in_test and self.test_refs and self.test_arith:
            raise ShellTemplateError(
                "a placeholder cannot stand in a [[ ... ]] test with -eq, -lt... (bash would "
                "evaluate the value): compare with test/[ instead"
            )

    def end_word(self) -> None:
        """A word of a top or cmd context ended: note the bash constructs it starts."""
        word, self.word = self.word, ""
        if not word:
            return
        plain = _QUOTED not in word
        if self.in_test:
            if word == "]]":
                self.check_test()
                self.in_test, self.test_refs, self.test_arith = False, 0, False
            elif word in _ARITH_TESTS:
                self.test_arith = True
        elif self.at_command and plain and word == "[[":
            self.in_test = True
        elif self.at_command and plain and word == "let":
            self.in_let = True
        self.at_command = plain and word in _RESERVED

    def end_command(self) -> None:
        """A command ended: the next word is a command name."""
        self.at_command, self.in_let = True, False


class _Scanner:
    """POSIX shell quoting states, as far as placeholders need them.

    The stack holds the open contexts: ``top`` (the script), ``cmd`` (``$(...)``, a new
    quoting context, with its count of open parentheses), ``single``, ``double``,
    ``backquote``, ``param`` (``${...}``), ``arith`` (``$((...))`` and bash's ``((...))``),
    ``comment``. In ``top`` and ``cmd`` it also reads words, to find bash's arithmetic
    commands: bash evaluates a value there as an expression, and runs a ``$(...)`` found
    in an array subscript even from a quoted reference.
    """

    def __init__(self) -> None:
        self.stack: list[_Frame] = [_Frame("top")]
        self.escaped = False  # the previous character was an unquoted backslash
        self.heredoc = False  # a here-document started: its body is not shell syntax
        self.prev = " "  # the previous character (a placeholder counts as a letter)

    @property
    def state(self) -> str:
        return self.stack[-1].kind

    def _context(self) -> _Frame:
        """The innermost full quoting context (top or cmd)."""
        return next(f for f in reversed(self.stack) if f.kind in ("top", "cmd"))

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
                     "param": "inside ${...}",
                     "arith": "inside $((...)) or ((...)) (bash would evaluate the value)"}
            raise ShellTemplateError(f"a placeholder cannot stand {where[state]}")
        if state == "comment":
            return "top"
        if self.prev == "$" and state != "single":
            raise ShellTemplateError("a placeholder cannot follow a bare $")
        context = self._context()
        if context.in_let:
            raise ShellTemplateError(
                "a placeholder cannot stand in a let command (bash would evaluate the value)"
            )
        if context.in_test:
            context.test_refs += 1
        return state

    def after_placeholder(self) -> None:
        self.prev = "x"
        self._context().word += _QUOTED

    def end(self) -> None:
        if self.state in ("top", "cmd"):
            self.stack[-1].end_word()
        if self.state in ("single", "double"):
            quote = "'" if self.state == "single" else '"'
            raise ShellTemplateError(f"a {quote} quote is not closed")
        for frame in self.stack:
            frame.check_test()

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            i = self._step(text, i)

    def _push(self, kind: str) -> None:
        if kind in ("cmd", "param", "arith", "backquote"):
            self._context().word += _QUOTED
        self.stack.append(_Frame(kind))

    def _step(self, text: str, i: int) -> int:
        c = text[i]
        state = self.state
        if self.escaped:
            self.escaped = False
            self.prev = "x"
            if state in ("top", "cmd", "double"):
                self._context().word += c  # \let is still the let builtin
            return i + 1
        if state == "single":
            if c == "'":
                self.stack.pop()
            else:
                self._context().word += c  # 'let' is still the let builtin
        elif state == "comment":
            if c == "\n":
                self.stack.pop()
                self.stack[-1].end_command()
        elif state in ("double", "backquote"):
            closing = '"' if state == "double" else "`"
            if c == "\\":
                self.escaped = True
            elif c == closing:
                self.stack.pop()
            elif state == "double":
                if c != "$":
                    self._context().word += c
                return self._dollar_or_backquote(text, i)
        elif state in ("param", "arith"):
            frame = self.stack[-1]
            opener, closer = ("{", "}") if state == "param" else ("(", ")")
            if c == opener:
                frame.depth += 1
            elif c == closer:
                if frame.depth == 0:
                    self.stack.pop()
                    if state == "arith":
                        return i + 2  # the second ) of ))
                else:
                    frame.depth -= 1
        else:  # top or cmd: a full quoting context
            return self._unquoted(text, i, c)
        self.prev = c
        return i + 1

    def _unquoted(self, text: str, i: int, c: str) -> int:
        frame = self.stack[-1]
        nxt = text[i + 1: i + 3]
        if c in _WORD_BREAK:
            frame.end_word()
            if c == "(" and nxt[:1] == "(" and frame.at_command:
                self._push("arith")  # bash's ((...)) arithmetic command
                self.prev = "("
                return i + 2
            if c in ";&|\n(":
                frame.end_command()
            if frame.kind == "cmd" and c == "(":
                frame.depth += 1
            elif frame.kind == "cmd" and c == ")":
                if frame.depth == 0:
                    self.stack.pop()
                    self._context().word += _QUOTED
                else:
                    frame.depth -= 1
            elif c == ")":
                frame.end_command()
            elif c == "<" and nxt[:1] == "<" and nxt[1:2] != "<" and self.prev != "<":
                self.heredoc = True
        elif c == "\\":
            self.escaped = True
        elif c == "'":
            self._push("single")
        elif c == '"':
            self._push("double")
        elif c == "#" and self.prev in _WORD_BREAK:
            self._push("comment")
        elif c in "$`":
            return self._dollar_or_backquote(text, i)
        else:
            frame.word += c
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
        self._context().word += _QUOTED
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
