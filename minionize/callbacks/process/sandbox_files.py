"""The file operations of sandboxes (:mod:`minionize.callbacks.process.sandbox`): their names, staging a
file into one, checking the outputs a task left (collecting them is
:mod:`minionize.callbacks.process.collect`)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from typing import Optional

from ...errors import ConfigError
from ..task_io import safe_name


def make_sandbox(root: str, param_id: str, attempt: int) -> str:
    """A fresh directory ``root/<param id>.<attempt>.<random>``: named like the
    attempt's logs, and unique to it (two queues over the same params, sharing ``root``,
    never meet)."""
    return tempfile.mkdtemp(prefix=f"{safe_name(param_id)}.{attempt}.", dir=root)


def check_relative(path: str, what: str, error: type[Exception] = ConfigError) -> None:
    """An output is a path inside the sandbox: relative, with no ``..``."""
    if os.path.isabs(path) or ".." in path.replace("\\", "/").split("/"):
        raise error(f"{what}: an output is a path inside the sandbox (relative, without ..)")


def duplicate_names(paths: Sequence[str]) -> Optional[str]:
    """A base name two of ``paths`` share, or None."""
    seen: set[str] = set()
    for path in paths:
        name = os.path.basename(path)
        if name in seen:
            return name
        seen.add(name)
    return None


def stage(source: str, dest: str, how: str) -> None:
    """Put ``source`` (absolute) at ``dest``: a symlink, a copy (a directory copied whole)
    or a hard link."""
    if how == "symlink":
        os.symlink(source, dest)
    elif how == "hardlink":
        os.link(source, dest)
    elif os.path.isdir(source):
        shutil.copytree(source, dest, symlinks=True)
    else:
        shutil.copy2(source, dest)


def last_component(text: str) -> str:
    """The part of a pattern after its last ``/`` outside a placeholder (``{/}``,
    ``{//}`` hold one): what an output is collected by."""
    depth, start, i = 0, 0, 0
    while i < len(text):
        char = text[i]
        if char in "{}" and text[i:i + 2] in ("{{", "}}"):
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(depth - 1, 0)
        elif char == "/" and depth == 0:
            start = i + 1
        i += 1
    return text[start:]


def check_outputs(sandbox: str, outputs: Sequence[str], staged: Sequence[str] = ()) -> str:
    """What is wrong with the outputs (``"output 'x' is missing"``), or ``""``: each is
    a regular file the task made, reached through directories of the sandbox (no
    symbolic link on its way, not a staged input nor inside one)."""
    problems = []
    for rel in outputs:
        parts = [part for part in rel.split("/") if part not in ("", ".")]
        if parts and parts[0] in staged:
            what = "a staged input" if len(parts) == 1 else f"inside the staged input {parts[0]!r}"
            problems.append(f"output {rel!r} is {what}, not a file the task made")
            continue
        problems.extend(_check_path(sandbox, rel, parts))
    return "; ".join(problems)


def _check_path(sandbox: str, rel: str, parts: Sequence[str]) -> list[str]:
    path = sandbox
    for number, part in enumerate(parts, 1):
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return [f"output {rel!r} is missing"]
        if stat.S_ISLNK(mode):
            where = "" if number == len(parts) else f": {'/'.join(parts[:number])!r}"
            return [f"output {rel!r} is a symbolic link{where}, not a regular file in the sandbox"]
        if number < len(parts) and not stat.S_ISDIR(mode):
            return [f"output {rel!r} is missing"]
    if not stat.S_ISREG(mode):
        return [f"output {rel!r} is not a file, not a regular file"]
    return []
