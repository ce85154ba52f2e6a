"""Collecting a sandbox's outputs (:mod:`minionize.callbacks.process.sandbox`): all or nothing, never over
a file another param collected, never anything outside the sandbox.

Everything minionize keeps in a collect directory ``DIR`` is under ``DIR/.minionize``:

* ``owners/<name>``: which param collected ``DIR/<name>`` (``{"id": ..., "param": ...}``),
  made once with ``link`` (atomic, also over NFS): a second param collecting that name
  sees it, on any minion or host, and its attempt fails (:class:`CollectClash`).
* ``p<random>/``: a collection being prepared: its outputs under short names (``0``,
  ``1``, ...: any output name fits), ``owner`` (its owner tag: host, pid and start) and ``manifest`` (the
  names, in order). A killed minion's is removed by the next collection on its host.
* ``c<random>/``: the same once committed: **the rename of ``p...`` to ``c...`` is the
  commit**. Its files are then renamed to their names; what a killed minion left is
  finished by the next collection (or minion start) in ``DIR``, before anything else.

An output is reached from the sandbox one directory at a time, with ``O_NOFOLLOW``: a
symbolic link on its way (a staged directory input, a link the task made) is refused.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Sequence

from ...owners import is_gone, owner_tag

#: The directory of minionize's records in a collect directory.
STATE_DIR = ".minionize"
#: Private test hook: the collecting process SIGKILLs itself right after this step
#: (1 first output staged, 2 all staged with their manifest, 3 committed, 4 first
#: output renamed, 5 all renamed). tests/integration/test_sandbox_attacks.py uses it.
KILL_AT = "_MINIONIZE_COLLECT_KILL_AT"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class CollectClash(Exception):
    """Another param already collected a file under this name: this param cannot."""


def _step(number: int) -> None:
    if os.environ.get(KILL_AT) == str(number):
        os.kill(os.getpid(), signal.SIGKILL)


def open_parent(sandbox: str, rel: str) -> tuple[int, str]:
    """A descriptor of the directory holding ``rel`` inside ``sandbox``, reached one
    component at a time without following a symbolic link, and the final name.
    Raises OSError (``ELOOP``/``ENOTDIR`` for a link on the way)."""
    parts = [part for part in rel.split("/") if part not in ("", ".")]
    fd = os.open(sandbox, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]


def recover(root: str) -> None:
    """Finish the committed collections left in ``root`` (by a killed minion), and
    remove the uncommitted ones of this host whose process is gone."""
    state = os.path.join(root, STATE_DIR)
    try:
        names = os.listdir(state)
    except OSError:
        return
    for name in sorted(names):
        path = os.path.join(state, name)
        if name.startswith("c") and len(name) > 1:
            _roll_forward(root, path)
        elif name.startswith("p") and len(name) > 1 and _owner_gone(path):
            shutil.rmtree(path, ignore_errors=True)


def _owner_gone(path: str) -> bool:
    try:
        with open(os.path.join(path, "owner")) as handle:
            tag = handle.read().strip()
    except OSError:
        return False  # being made right now, or not ours to judge
    return is_gone(tag)


def claim(root: str, name: str, owner_id: str, owner_text: str) -> None:
    """Record that param ``owner_id`` collects ``root/name``; CollectClash when another
    param did."""
    state = os.path.join(root, STATE_DIR)
    path = os.path.join(state, "owners", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _ in range(2):
        other = _read_owner(path)
        if other is not None:
            if other.get("id") == owner_id:
                return
            raise CollectClash(
                f"output {name!r} was already collected by param {other.get('param')}: "
                f"params {owner_text} and {other.get('param')} give one name; put what "
                f"tells them apart in the output's name, or use --collect-layout per-param"
            )
        handle, temp = tempfile.mkstemp(prefix="o", dir=state)
        try:
            with os.fdopen(handle, "w") as out:
                json.dump({"id": owner_id, "param": owner_text}, out)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(temp, path)
                return
            except FileExistsError:
                continue  # another param, just now: read whose
        finally:
            os.unlink(temp)
    raise CollectClash(f"output {name!r}: its owner record {path!r} cannot be read")


def _read_owner(path: str) -> dict[str, str] | None:
    try:
        with open(path) as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    return record if isinstance(record, dict) else {"param": "(unknown)"}


def collect(sandbox: str, outputs: Sequence[tuple[str, str]], root: str) -> None:
    """Move each output ``(path relative to the sandbox, name relative to root)`` of
    ``sandbox`` to ``root/name``, all or nothing (see the module). Raises OSError; then
    the outputs are back in the sandbox and nothing changed in ``root``."""
    state = os.path.join(root, STATE_DIR)
    os.makedirs(state, exist_ok=True)
    recover(root)
    for _, name in outputs:
        if os.path.isdir(os.path.join(root, name)):
            raise IsADirectoryError(errno.EISDIR, "a directory has its name",
                                    os.path.join(root, name))
    work = tempfile.mkdtemp(prefix="p", dir=state)
    moved: list[tuple[str, str]] = []  # (staged, source): put back on failure
    try:
        with open(os.path.join(work, "owner"), "w") as handle:
            handle.write(f"{owner_tag()}\n")
        for index, (rel, _) in enumerate(outputs):
            staged = os.path.join(work, str(index))
            _stage_output(sandbox, rel, staged, moved)
            if not stat.S_ISREG(os.lstat(staged).st_mode):
                raise OSError(errno.EINVAL, "not a regular file once moved", rel)
            if index == 0:
                _step(1)
        _write_synced(os.path.join(work, "manifest"), json.dumps([n for _, n in outputs]))
        _step(2)
        committed = os.path.join(state, "c" + os.path.basename(work)[1:])
        os.rename(work, committed)
    except BaseException:
        for staged, source in moved:
            try:
                os.rename(staged, source)
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)
        raise
    _step(3)
    _roll_forward(root, committed)


def _stage_output(sandbox: str, rel: str, staged: str, moved: list[tuple[str, str]]) -> None:
    """Move (or copy, across filesystems) one output to its staged name."""
    fd, name = open_parent(sandbox, rel)
    try:
        try:
            os.rename(name, staged, src_dir_fd=fd)
            moved.append((staged, os.path.join(sandbox, rel)))
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(source, "rb") as src, open(staged, "xb") as dst:
        shutil.copyfileobj(src, dst)
        os.fchmod(dst.fileno(), stat.S_IMODE(os.fstat(src.fileno()).st_mode))
        dst.flush()
        os.fsync(dst.fileno())


def _write_synced(path: str, text: str) -> None:
    with open(path, "x") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _roll_forward(root: str, committed: str) -> None:
    """Rename a committed collection's files to their names (each once, whoever does
    it: a file already gone was renamed by another), then remove it."""
    try:
        with open(os.path.join(committed, "manifest")) as handle:
            names = json.load(handle)
    except FileNotFoundError:
        return  # finished by another
    for index, name in enumerate(names):
        final = os.path.join(root, name)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            os.replace(os.path.join(committed, str(index)), final)
        except FileNotFoundError:
            pass
        if index == 0:
            _step(4)
    _step(5)
    shutil.rmtree(committed, ignore_errors=True)
