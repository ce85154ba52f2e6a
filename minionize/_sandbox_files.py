"""The file operations of sandboxes (:mod:`minionize.sandbox`): their names, staging a
file into one, checking the outputs a task left, and collecting them all or nothing."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from typing import Optional

from .callbacks._task_io import safe_name
from .errors import ConfigError

#: Marks the temporary names of collected files (``.<name>.<random>.part``).
PART_SUFFIX = ".part"


def sandbox_name(param_id: str, attempt: int) -> str:
    """``<param id>.<attempt>``, as the logs are named (the id made file-name safe)."""
    return f"{safe_name(param_id)}.{attempt}"


def sandboxes_of(names: Sequence[str], param_id: str) -> list[tuple[str, int]]:
    """Of the directory entries ``names``, the sandboxes of ``param_id``, with their
    attempt numbers."""
    prefix = safe_name(param_id) + "."
    return [
        (name, int(name[len(prefix):])) for name in names
        if name.startswith(prefix) and name[len(prefix):].isdigit() and name[len(prefix):].isascii()
    ]


def remove_sandboxes(root: str, param_id: str, up_to: int) -> list[str]:
    """Remove the sandboxes of ``param_id`` in ``root`` of attempts up to ``up_to``;
    return the paths of those of later attempts."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    later = []
    for name, number in sandboxes_of(names, param_id):
        path = os.path.join(root, name)
        if number <= up_to:
            shutil.rmtree(path, ignore_errors=True)
        else:
            later.append(path)
    return later


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


def check_outputs(sandbox: str, outputs: Sequence[str]) -> str:
    """What is wrong with the outputs (``"output 'x' is missing"``), or ``""``."""
    problems = []
    for rel in outputs:
        try:
            mode = os.lstat(os.path.join(sandbox, rel)).st_mode
        except OSError:
            problems.append(f"output {rel!r} is missing")
            continue
        if not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a file"
            problems.append(f"output {rel!r} is {kind}, not a regular file")
    return "; ".join(problems)


def collect(files: Sequence[tuple[str, str]], target: str) -> None:
    """Move each ``(path, name)`` to ``target/name``, all or nothing (see the module).
    Raises OSError; then the files are back where they were and nothing is in target."""
    os.makedirs(target, exist_ok=True)
    moved: list[tuple[str, str]] = []  # (part, source): put back on failure
    made: list[str] = []  # every part name made: none is left on failure
    parts: list[tuple[str, str]] = []  # (part, final)
    try:
        for source, name in files:
            final = os.path.join(target, name)
            if os.path.isdir(final):
                raise IsADirectoryError(errno.EISDIR, "a directory has its name", final)
            part = _part_name(target, name)
            made.append(part)
            try:
                os.rename(source, part)
                moved.append((part, source))
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_synced(source, part)
            parts.append((part, final))
        for part, final in parts:
            os.replace(part, final)
    except BaseException:
        for part, source in moved:
            try:
                os.rename(part, source)
            except OSError:
                pass
        for part in made:
            try:
                os.unlink(part)
            except OSError:
                pass
        raise


def _part_name(target: str, name: str) -> str:
    handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=PART_SUFFIX, dir=target)
    os.close(handle)
    return path


def _copy_synced(source: str, dest: str) -> None:
    """Copy ``source`` over ``dest`` and flush it to disk before it gets its name."""
    shutil.copyfile(source, dest)
    shutil.copymode(source, dest)
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

