"""GNU parallel's replacement strings, as pure functions of a value's text.

==========  ==================================  ================================
string      meaning                             ``a/b.c/d.tar.gz`` gives
==========  ==================================  ================================
``{}``      the value                           ``a/b.c/d.tar.gz``
``{.}``     without its last extension          ``a/b.c/d.tar``
``{/}``     its basename                        ``d.tar.gz``
``{//}``    its dirname (``.`` without a /)     ``a/b.c``
``{/.}``    basename without extension          ``d.tar``
``{#}``     the sequence number (see below)     ``1``
``{%}``     the slot number (1..concurrency)    ``1``
==========  ==================================  ================================

A mapping param's key takes the same suffixes: ``{x.}``, ``{x/}``, ``{x//}``, ``{x/.}``
(GNU parallel's ``{1.}`` ... for its positional columns). The rules are GNU parallel's own
(its Perl substitutions ``s:\\.[^/.]*$::``, ``s:^.*/::`` and Perl's ``dirname``), checked
side by side with it in the acceptance tests: ``{.}`` of ``.bashrc`` is empty, as there.
"""

from __future__ import annotations

import re

#: Modifiers of a value, longest suffix first (``x//`` before ``x/``).
MODIFIERS = ("/.", "//", "/", ".")
#: Replacement strings that are not a value: the sequence and slot numbers.
COUNTERS = ("#", "%")

_EXTENSION = re.compile(r"\.[^/.]*\Z")
_UP_TO_SLASH = re.compile(r"\A.*/", re.DOTALL)


def no_extension(text: str) -> str:
    """``{.}``: the text without its last extension (a dot in the basename)."""
    return _EXTENSION.sub("", text, count=1)


def basename(text: str) -> str:
    """``{/}``: what follows the last slash."""
    return _UP_TO_SLASH.sub("", text, count=1)


def dirname(text: str) -> str:
    """``{//}``: Perl's ``File::Basename::dirname`` (``.`` when there is no slash)."""
    stripped = text.rstrip("/")
    if not stripped:
        return "/" if text else "."
    cut = stripped.rfind("/")
    if cut < 0:
        return "."
    return stripped[:cut].rstrip("/") or "/"


def modify(text: str, modifier: str) -> str:
    """``text`` through one of :data:`MODIFIERS` (``""``: unchanged)."""
    if not modifier:
        return text
    if modifier == ".":
        return no_extension(text)
    if modifier == "/":
        return basename(text)
    if modifier == "//":
        return dirname(text)
    if modifier == "/.":
        return no_extension(basename(text))
    raise ValueError(f"unknown modifier {modifier!r}")


def split_name(name: str) -> tuple[str, str]:
    """A placeholder's name as (key, modifier): ``"x/."`` -> ``("x", "/.")``,
    ``"."`` -> ``("", ".")`` (the whole param), ``"#"`` -> ``("#", "")``."""
    if name in COUNTERS:
        return name, ""
    for modifier in MODIFIERS:
        if name.endswith(modifier):
            return name[: -len(modifier)], modifier
    return name, ""


#: In a command word (no template), the strings that make it an xargs -I style command.
#: ``{#}`` and ``{%}`` right after a ``$`` are shell (``${#}``), not replacement strings.
WORD_PLACEHOLDER = re.compile(r"\{\}|\{(?:\.|//|/\.|/)\}|(?<!\$)\{[#%]\}")
