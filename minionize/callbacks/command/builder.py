"""How a param becomes a command line: shared by the process and docker callbacks.

Rules, in order:

1. ``--template 'a.out --x {x} {y}'``: ``{name}`` is the value of key ``name`` of a
   mapping param, ``{}`` the whole param; ``{{`` and ``}}`` are literal braces. Without
   ``--shell`` the template is split into words like a shell would (``shlex``) before
   anything is filled, so a value is one argument of plain text, never split.
2. A command word containing ``{}`` has it replaced by the param (like ``xargs -I{}``).
3. Otherwise a scalar param is appended as one argument, a list as several; a mapping
   needs a template.

With ``--shell`` the command is shell text, and values never enter it: they are passed
out of band, as positional parameters of ``sh -c`` (see :mod:`minionize.callbacks.command.shell`).

The command is parsed and checked once, when the callback is built: a malformed
placeholder (``{a.b}``, ``{x!r}``, ``{x:>5}``, an unbalanced brace) is a
:class:`~minionize.errors.ConfigError` before any param is taken. A param that cannot fill
the command (a missing key, a mapping without a template, a string where a mapping is
needed) raises :class:`~minionize.errors.CommandLineError` as long as no param of this run
has filled it (the command line is wrong: the minion stops, nothing is consumed), and
:class:`ParamError` once one has (this param is odd: it is dead-lettered at once).
"""

from __future__ import annotations

import itertools
import json
import shlex
import string
import threading
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, Optional, Union

from ...engines.base import Delivery
from ...errors import CommandLineError, ConfigError
from ...params import Param
from .replacements import COUNTERS, WORD_PLACEHOLDER, modify, split_name
from .shell import ALL, ShellTemplateError, compile_script

#: Longest excerpt of a param in a message (the queue keeps it whole).
SHORT_PARAM = 80
DECODER_HINT = (
    "to read JSON mappings, set the engine's decoder to json (FILE_DECODER=json, "
    "GOOGLE_DECODER=json, PULSAR_DECODER=json, MINION_REDIS_DECODER=json)"
)


class ParamError(ValueError):
    """This param cannot fill this command (retrying cannot help)."""


class _Unfilled(ValueError):
    """A placeholder this param has no value for (the reason); the caller says whose."""


class _Field:
    """A placeholder: ``name`` is a key of a mapping param, ``""`` the whole param, ``#``
    the sequence number, ``%`` the slot number; ``modifier`` one of
    :data:`~minionize.callbacks.command.replacements.MODIFIERS` or ``""``."""

    __slots__ = ("modifier", "name")

    def __init__(self, name: str, modifier: str = "") -> None:
        self.name = name
        self.modifier = modifier

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.modifier

    def __repr__(self) -> str:
        return f"{{{self.name}{self.modifier}}}"


_APPEND = _Field("*append*")  # the param appended (a scalar as one value, a list as many)
Part = Union[str, _Field]


def param_text(value: Any) -> str:
    """The text of one value as an argument: strings as they are, numbers as written,
    true/false/null and containers as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def short(text: str, limit: int = SHORT_PARAM) -> str:
    """``text`` for a message: at most ``limit`` characters, marked when cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def parse_template(text: str) -> list[Part]:
    """Literal text and placeholders of a template; raises ValueError with the reason."""
    parts: list[Part] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"{exc} (write {{{{ and }}}} for a literal brace)") from None
    for literal, name, spec, conversion in parsed:
        if literal:
            parts.append(literal)
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if conversion or spec:
            raise ValueError(
                f"{shown}: conversions and format specs are not supported, the value's text "
                f"is passed as it is: write {{{name}}}"
            )
        key, modifier = split_name(name)
        if "." in key or "[" in key:
            raise ValueError(
                f"{shown}: attribute and index access are not supported: use a key of the "
                "mapping param, e.g. {x} (or {x.} for its value without extension)"
            )
        if key.isdecimal() and key != "0":
            raise ValueError(f"{shown}: use {{}} for the whole param, {{name}} for a key")
        parts.append(_Field("" if key == "0" else key, modifier))
    return parts


def _split_braces(word: str) -> list[Part]:
    """A command word where only GNU parallel's replacement strings (``{}``, ``{.}``,
    ``{/}``, ``{//}``, ``{/.}``, ``{#}``, ``{%}``) are placeholders (like ``xargs -I{}``)."""
    parts: list[Part] = []
    at = 0
    for match in WORD_PLACEHOLDER.finditer(word):
        if match.start() > at:
            parts.append(word[at:match.start()])
        parts.append(_Field(*split_name(match.group()[1:-1])))
        at = match.end()
    if at < len(word):
        parts.append(word[at:])
    return parts


class CommandBuilder:
    """The command of every param of a run, parsed and checked once (see the module)."""

    def __init__(
        self, command: Sequence[str] = (), template: Optional[str] = None, shell: bool = False,
        decoder_hint: str = DECODER_HINT,
    ) -> None:
        self.command = list(command)
        self.template = template
        self.shell = shell
        #: True once a param has filled the command: from then on a param that cannot
        #: fill it is the param's fault, not the command line's.
        self.filled_once = False
        #: How to get mappings, said when a string param meets {name}: the command line
        #: gives the one of the engine in use (its decoder variable and flag).
        self.decoder_hint = decoder_hint
        #: Per slot thread: its slot ({%}), the sequence number of the delivery it is
        #: about to run ({#}), and the last argv it built (for the joblog).
        self._local = threading.local()
        self._slots = itertools.count(1)
        self._sequence = itertools.count(1)
        self.source = (
            f"--template/MINION_TEMPLATE {template!r}" if template
            else f"the command {' '.join(self.command)!r}"
        )
        try:
            if shell:
                self._init_shell()
            else:
                self._init_argv()
        except ValueError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None

    def _init_argv(self) -> None:
        self.words: list[list[Part]]
        if self.template:
            try:
                words = shlex.split(self.template)
            except ValueError as exc:
                raise ValueError(f"cannot split it into words: {exc}") from None
            if not words:
                raise ValueError("the template is empty")
            self.words = [parse_template(word) for word in words]
        elif any(WORD_PLACEHOLDER.search(word) for word in self.command):
            self.words = [_split_braces(word) for word in self.command]
        else:
            appended: list[Part] = [_APPEND]
            words_only: list[list[Part]] = [[word] for word in self.command]
            self.words = [*words_only, appended]

    def _init_shell(self) -> None:
        if self.template:
            parts = parse_template(self.template)
            if not self.template.strip():
                raise ValueError("the template is empty")
        else:
            line = " ".join(self.command)
            parts = _split_braces(line) if WORD_PLACEHOLDER.search(line) else [line, " ", _APPEND]
        #: The value of positional parameter N is the param's field self.fields[N - 1].
        self.fields: list[_Field] = []
        pieces: list[Union[str, int]] = []
        for part in parts:
            if isinstance(part, str):
                pieces.append(part)
            elif part is _APPEND:
                self.fields.append(part)  # alone: "$@" is every positional parameter
                pieces.append(ALL)
            else:
                keys = [field.key for field in self.fields]
                if part.key not in keys:
                    self.fields.append(part)
                    keys.append(part.key)
                pieces.append(keys.index(part.key) + 1)
        try:
            self.script = compile_script(pieces)
        except ShellTemplateError as exc:
            raise ValueError(str(exc)) from None

    # -- per param -----------------------------------------------------------------------
    def begin(self, delivery: Delivery) -> None:
        """The calling slot thread is about to build the command of ``delivery``: its
        ``{#}`` is the delivery's position in its input when the engine knows it (the file
        engine's line number, as GNU parallel counts), else its id when that is a number,
        else the next number of this minion's counter."""
        ident = str(delivery.id)
        if delivery.number is not None:
            self._local.seq = str(delivery.number)
        else:
            self._local.seq = ident if ident.isdecimal() else None
        self._local.argv = None  # until this delivery's command is built

    def last_command(self) -> tuple[Optional[str], Optional[list[str]]]:
        """The ``{#}`` and the argv of the command this thread built last."""
        return getattr(self._local, "last_seq", None), getattr(self._local, "argv", None)

    def _next_seq(self) -> str:
        """``{#}`` of the command being built now (from :meth:`begin`, else counted)."""
        seq: Optional[str] = getattr(self._local, "seq", None)
        self._local.seq = None
        return seq if seq is not None else str(next(self._sequence))

    def slot(self) -> str:
        """``{%}``: the calling thread's slot, 1..concurrency, given on its first use."""
        slot: Optional[str] = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = str(next(self._slots))
        return slot

    def argv(self, param: Param) -> list[str]:
        """The argv that runs ``param`` (``/bin/sh -c SCRIPT sh VALUES...`` with
        ``--shell``). Raises :class:`CommandLineError` or :class:`ParamError`."""
        self._local.last_seq = self._next_seq()
        try:
            return self._argv(param)
        except _Unfilled as exc:
            self._fail(param, str(exc), self.source, self.filled_once)

    def fill(self, pattern: Pattern, param: Param) -> str:
        """``pattern`` filled with ``param``, with the same values as the command just
        built by :meth:`argv` for it (the same ``{#}`` and ``{%}``). Raises
        :class:`CommandLineError` while no param has filled the pattern (it is wrong),
        :class:`ParamError` once one has (this param is odd)."""
        try:
            text = self._join(pattern.parts, param)
        except _Unfilled as exc:
            self._fail(param, str(exc), pattern.source, pattern.filled_once)
        pattern.filled_once = True
        return text

    def _join(self, parts: Sequence[Part], param: Param) -> str:
        return "".join(
            part if isinstance(part, str) else "".join(self._values(part, param)) for part in parts
        )

    def _argv(self, param: Param) -> list[str]:
        if self.shell:
            values: list[str] = []
            for field in self.fields:
                values.extend(self._values(field, param))
            argv = ["/bin/sh", "-c", self.script, "sh", *values]
        else:
            argv = [self._join(word, param) for word in self.words]
            if self.words and self.words[-1] == [_APPEND]:
                argv = argv[:-1] + self._values(_APPEND, param)
        self.filled_once = True
        self._local.argv = argv
        return argv

    def has_placeholder(self) -> bool:
        """Whether the command holds a placeholder (``{}``, ``{x}``, ``{#}``...): a
        template without one runs without the param."""
        if self.shell:
            return any(field is not _APPEND for field in self.fields)
        return any(isinstance(part, _Field) and part is not _APPEND
                   for word in self.words for part in word)

    def program(self) -> Optional[str]:
        """The program every param runs, when it is known before any param."""
        if self.shell or not self.words or not self.words[0]:
            return None
        first = self.words[0]
        return first[0] if len(first) == 1 and isinstance(first[0], str) else None

    def _values(self, field: _Field, param: Param) -> list[str]:
        if field is _APPEND:
            if isinstance(param, Mapping):
                raise _Unfilled("a mapping param needs --template "
                                "(e.g. --template 'a.out --x {x} {y}')")
            if isinstance(param, (list, tuple)):
                return [param_text(value) for value in param]
            return [param_text(param)]
        if field.name in COUNTERS:
            return [self._local.last_seq if field.name == "#" else self.slot()]
        if not field.name:
            return [modify(param_text(param), field.modifier)]
        if not isinstance(param, Mapping):
            if isinstance(param, str):
                json_text = " (JSON text, read as text)" if param.lstrip()[:1] == "{" else ""
                raise _Unfilled(f"the param is a string{json_text}, not a mapping with key "
                                f"{field.name!r}: {self.decoder_hint}")
            raise _Unfilled(f"the param is not a mapping with key {field.name!r}")
        if field.name not in param:
            raise _Unfilled(f"the param has no key {field.name!r}")
        return [modify(param_text(param[field.name]), field.modifier)]

    @staticmethod
    def _fail(param: Param, reason: str, source: str, filled_once: bool) -> NoReturn:
        text = short(param_text(param) if not isinstance(param, str) else json.dumps(param))
        message = f"{source} cannot run param {text}: {reason}"
        if filled_once:
            raise ParamError(message)
        raise CommandLineError(
            f"{message}; no param of this run has filled this command yet, so the command "
            "line must be wrong: nothing was consumed"
        )


class Pattern:
    """A file name with the command's placeholders (``{}``, ``{name}``, ``{.}``, ``{/}``,
    ``{#}``, ...), such as ``--input 'in/file_{}.txt'``: parsed once (a malformed one is
    a :class:`ConfigError` naming ``source``), filled per param by
    :meth:`CommandBuilder.fill`. Braces are doubled for a literal one, as in a template."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = f"{source} {text!r}"
        try:
            self.parts = parse_template(text)
        except ValueError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None
        #: True once a param has filled it (then a param that cannot is the param's fault).
        self.filled_once = False

    def fields(self) -> list[str]:
        """The placeholders it holds, as written: ``["{}", "{x.}"]``."""
        return [repr(part) for part in self.parts if isinstance(part, _Field)]


def shell_line(argv: Sequence[str]) -> str:
    """A shell-quoted rendering of argv (for DRY output)."""
    return " ".join(shlex.quote(word) for word in argv)
