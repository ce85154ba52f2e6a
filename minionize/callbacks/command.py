"""How a param becomes a command line: shared by the process and docker callbacks.

Rules, in order:

1. ``--template 'a.out --x {x} {y}'``: the template is split into words like a shell
   would (``shlex``), then each word is formatted with the param (a mapping gives
   ``{name}``; any param gives ``{}``). A value is never split or interpreted, so a
   param like ``$(rm -rf ~)`` stays one argument of plain text.
2. A command word containing ``{}`` has it replaced by the param (like ``xargs -I{}``).
3. Otherwise a scalar param is appended as one argument, a list as several; a mapping
   needs a template.
"""

from __future__ import annotations

import json
import shlex
import string
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from ..engines.base import Param


class ParamError(ValueError):
    """This param cannot fill this command (retrying cannot help)."""


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


def check_template(template: str) -> list[str]:
    """Split and check a template once, at start (raises ValueError with the reason)."""
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise ValueError(f"cannot split {template!r}: {exc}") from None
    if not words:
        raise ValueError("the template is empty")
    formatter = string.Formatter()
    for word in words:
        try:
            list(formatter.parse(word))
        except ValueError as exc:
            raise ValueError(f"bad placeholder in {word!r}: {exc}") from None
    return words


class _ParamFields(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> Any:
        raise ParamError(f"the param has no key {key!r} used by the template")


def _format_word(word: str, param: Param) -> str:
    if "{" not in word:
        return word
    fields: dict[str, Any] = _ParamFields(param if isinstance(param, Mapping) else {})
    text = param_text(param)
    try:
        # ``{}`` is positional: the whole param.
        return string.Formatter().vformat(word, (_Text(text),), fields)
    except (IndexError, KeyError) as exc:
        raise ParamError(f"cannot fill {word!r} from param {text}: {exc}") from None


class _Text(str):
    """The whole param, so that ``{}`` and ``{0}`` give its text."""


def build_argv(
    command: Sequence[str], param: Param, template_words: Optional[Sequence[str]] = None
) -> list[str]:
    """The argv that runs ``param``. Raises :class:`ParamError` when it cannot."""
    if template_words:
        return [_format_word(word, param) for word in template_words]
    if any("{}" in word for word in command):
        text = param_text(param)
        return [word.replace("{}", text) for word in command]
    argv = list(command)
    if isinstance(param, Mapping):
        raise ParamError(
            "a mapping param needs --template (e.g. --template 'a.out --x {x} {y}')"
        )
    if isinstance(param, (list, tuple)):
        argv.extend(param_text(value) for value in param)
    else:
        argv.append(param_text(param))
    return argv


def shell_line(argv: Sequence[str]) -> str:
    """A shell-quoted rendering of argv (for --shell and for DRY output)."""
    return " ".join(shlex.quote(word) for word in argv)


class _QuotedFields(dict):  # type: ignore[type-arg]
    def __init__(self, param: Param) -> None:
        super().__init__(param if isinstance(param, Mapping) else {})

    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise ParamError(f"the param has no key {key!r} used by the template")
        return shlex.quote(param_text(super().__getitem__(key)))


def build_shell_line(command: Sequence[str], param: Param, template: Optional[str] = None) -> str:
    """The ``sh -c`` line for ``--shell``: the command is shell text (pipes, globs...),
    but every value taken from the param is quoted, so it is still plain text."""
    quoted = shlex.quote(param_text(param))
    if template:
        try:
            return string.Formatter().vformat(template, (quoted,), _QuotedFields(param))
        except (IndexError, KeyError, ValueError) as exc:
            raise ParamError(f"cannot fill the template from param {param_text(param)}: {exc}") from None
    line = " ".join(command)
    if "{}" in line:
        return line.replace("{}", quoted)
    if isinstance(param, Mapping):
        raise ParamError("a mapping param needs --template (e.g. --template 'a.out --x {x} {y}')")
    if isinstance(param, (list, tuple)):
        return " ".join([line, *(shlex.quote(param_text(value)) for value in param)])
    return f"{line} {quoted}"
