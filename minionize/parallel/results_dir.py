"""``--results DIR``: each param's stdout, stderr and exit status, in files a script walks.

    DIR/<id>/param          the param, as JSON (written by its first attempt)
    DIR/<id>/<N>.out        standard output of attempt N
    DIR/<id>/<N>.err        standard error of attempt N
    DIR/<id>/<N>.exit       exit code of attempt N (-9: killed by signal 9), written last

``<id>`` is the param's id in its queue: ``<file name>-<run>-<line>`` with the file
engine (``<run>`` is drawn for each run, so a rerun never overwrites an earlier run's
results), a hash of the param with the sweep queue, the message id with the others; an
id that is not a safe file name is cleaned and given a hash, so two params never share a
directory. No file or directory below ``DIR`` is written through a symbolic link (one
planted by another user of ``DIR``: that attempt fails, saying so). A param has at most
1 + 3 x attempts files. Attempts never overwrite each other, except an attempt given
back at a graceful stop: it is not counted, so the attempt that reruns it has the same N
and replaces its files (its ``.exit`` says ``none``).

GNU parallel writes ``DIR/1/<value>/stdout``: a value is not a safe file name (a slash, a
length limit, two equal lines), so minionize uses the id, and keeps the value in ``param``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import stat
from typing import Optional

from ..callbacks.task_io import UnsafeFile, open_regular
from ..engines.base import Delivery
from ..errors import ConfigError
from ..minion.hooks import Hook
from ..reporters.base import TaskReport

log = logging.getLogger("minionize")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def entry_name(param_id: str) -> str:
    """The directory name of a param: its id when that is a safe name, else the id
    cleaned and suffixed with a hash of the real id."""
    cleaned = _UNSAFE.sub("_", param_id)[:100]
    if cleaned == param_id and param_id not in (".", ".."):
        return param_id
    digest = hashlib.blake2b(param_id.encode("utf-8", "surrogateescape"), digest_size=5)
    return f"{cleaned}-{digest.hexdigest()}"


class ResultsDir(Hook):
    """Chooses the output files of each attempt and writes their ``.exit`` files."""

    name = "results"

    def __init__(self, root: str) -> None:
        self.root = root
        #: Attempts given files and not yet finished (their .exit is still to write).
        self._open: set[tuple[str, int]] = set()

    def setup(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"MINION_RESULTS={self.root!r} cannot be created: {exc.strerror}") from None

    def entry(self, param_id: str) -> str:
        return os.path.join(self.root, entry_name(str(param_id)))

    def paths(self, delivery: Delivery) -> tuple[str, str]:
        """Where attempt ``delivery.attempt`` writes its stdout and stderr (the param's
        directory and its ``param`` file are made on the way). None of them is ever
        written through a symbolic link: a planted one is an :class:`UnsafeFile` (this
        attempt fails, saying why)."""
        entry = self.entry(delivery.id)
        param_file = os.path.join(entry, "param")
        try:
            fd = open_regular(param_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                              root=self.root, make_dirs=True)
        except FileExistsError:  # an earlier attempt's; a regular file, if anything
            mode = os.lstat(param_file).st_mode
            if not stat.S_ISREG(mode):
                what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise UnsafeFile(errno.EINVAL, f"{param_file} is {what}: minionize never "
                                 "writes through one (remove it)") from None
        else:
            try:
                text = json.dumps(delivery.param, ensure_ascii=False)
            except (TypeError, ValueError):
                text = json.dumps(repr(delivery.param))
            with open(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
                handle.write(text + "\n")
        base = os.path.join(entry, str(delivery.attempt))
        self._open.add((str(delivery.id), delivery.attempt))
        return base + ".out", base + ".err"

    def task_settled(self, report: TaskReport) -> None:
        try:
            self._open.remove((str(report.param_id), report.attempt))
        except KeyError:
            return  # this attempt was given no files (it never ran)
        code: Optional[int] = report.exit_code
        path = os.path.join(self.entry(report.param_id), f"{report.attempt}.exit")
        try:
            with open(open_regular(path, root=self.root), "w") as handle:
                handle.write(f"{'none' if code is None else code}\n")
        except OSError as exc:
            log.warning("could not write %s: %s", path, exc)
