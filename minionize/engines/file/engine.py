"""The file engine: params from a file (``FILE_PATH``) or standard input, one per line.

Blank lines are skipped. ``FILE_SEPARATOR=nul`` (``minionize -0``) splits the input on
NUL bytes instead, like ``xargs -0`` (newlines are then part of a param, and an empty
record is a param, as there). ``FILE_DECODER=identity`` (the default) makes each line a string,
exactly as read (spaces kept, only the line end removed); ``json`` a JSON value (a line
that is not standard JSON, such as ``NaN``, or that holds a number a JSON number cannot
keep exactly, such as ``1e400``, is dead-lettered with the reason; other numbers keep
their value: ``3.10`` is the number 3.1). Lines are read as bytes: a line that is not
UTF-8 reaches the program as the very bytes of the file.

Beside a real file, ``<FILE_PATH>.done`` is a journal of the lines that succeeded (one
JSON string per line, appended as each param is acked, with the line's own bytes): a
rerun skips them, like GNU parallel ``--resume``; a line that appears twice in the input
runs twice, and is skipped as many times as the journal holds it. ``<FILE_PATH>.failed``
receives the dead letters as JSON lines with their reason. A rerun retries dead letters:
failure is not success. A dry run (``DRY=1``) writes none of these files.

Results (``keeps_results``, for a real file only): ``<FILE_PATH>.results`` gets a JSON
line at each ack that carries a result (a function's return value), written before the
line goes into ``.done`` (a param is never done without its result): the delivery's
``id``, the ``line`` number, the line's text as ``param`` (its own bytes, as in ``.done``)
and the ``result``, the JSON text of what the task returned. A run that stores no result
(a program) leaves no ``.results``. :meth:`results` lists the lines ``.done`` makes a
rerun skip, in line order, each with the last result stored for that line number and
that text; a line whose number changed (lines inserted above it) finds its result by
its text. The ``.done`` record of a line whose result was stored names that result
(``{"line": <text>, "id": <its id>}``): a result lost since (``.results`` deleted, cut
or damaged) is never listed as "no result": :meth:`results` is an error saying how
many are lost, and a rerun runs those lines again (they are not done without it). A
record torn by a kill is skipped (opening the file ends it with a newline, so the next
record stands alone; ``.done`` too). From standard input nothing is stored:
``keeps_results`` is False and :meth:`results` says so.

A delivery's id is ``<file name>-<run>-<line number>`` (``stdin`` for standard input;
``<run>`` is 8 hex digits drawn for each run), so the logs of ``MINION_LOG_DIR``
(``<id>.<attempt>.out``) of two inputs, or of two runs, never overwrite each other.

Standard input is read without blocking past ``take``'s timeout, so
``MINION_IDLE_TIMEOUT`` ends a minion whose producer is alive but silent.

A file has nobody else to hand a failed param to, so a failed attempt is retried by this
same minion. One minion reads a file at a time: it holds ``<FILE_PATH>.lock`` for its
run (see :mod:`.lock`), and a second one stops at start (exit 2) naming it, where
it would run every line again. Run one minion with ``MINION_CONCURRENCY`` instead, or
use the sweep queue, which minions share.
"""

from __future__ import annotations

import collections
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Optional

from ...errors import ConfigError, EngineError
from ...params import Param
from ..base import Delivery, Engine
from .admin import FileAdmin
from .journal import Journals, LineReader, line_param, line_text, read_done, separator
from .lock import ReaderLock

if TYPE_CHECKING:
    from ...config import Settings

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class FileEngine(Engine):
    """Params from a file or standard input; ``keeps_results`` only for a file (set per
    instance: standard input has nowhere to keep them)."""

    name = "file"
    #: ``minion-queue`` reads the journals beside the file without opening it as a
    #: minion does (no lock taken, nothing created): a minion may be reading it.
    admin_opens = False

    def __init__(self, path: Optional[str] = None, decoder: str = "identity",
                 dry: bool = False, separator: str = "newline") -> None:
        self.path = path
        self.decoder = decoder
        #: ``nul``: NUL-terminated records (``-0``), where an empty record is a param.
        self.null = separator == "nul"
        self.dry = dry
        self.keeps_results = path is not None
        self._lock = threading.Lock()
        self._journals = Journals()
        #: ``<FILE_PATH>.lock``, held while this minion reads a real file.
        self._file_lock: Optional[ReaderLock] = None
        self._retries: collections.deque[Delivery] = collections.deque()
        self._source: Optional[IO[bytes]] = None
        self._reader: Optional[LineReader] = None
        self._lineno = 0
        self._eof = False
        self._skip: collections.Counter[str] = collections.Counter()
        name = os.path.basename(path) if path else "stdin"
        self._name = _UNSAFE_NAME.sub("_", name)[:60] or "file"
        # Ids feed log names (<id>.<attempt>.out): the run part keeps two inputs, or two
        # runs of one input, from overwriting each other's logs.
        self._id_prefix = f"{self._name}-{secrets.token_hex(4)}-"
        #: minion-queue's verbs on the journals beside the file.
        self.admin = FileAdmin(path, decoder=decoder, null=self.null, name=self._name)

    @classmethod
    def from_settings(cls, settings: Settings) -> FileEngine:
        env = settings.env
        path = env.str("FILE_PATH")
        if path == "-":
            path = None
        decoder = env.choice("FILE_DECODER", "identity", ("identity", "json"))
        separator = env.choice("FILE_SEPARATOR", "newline", ("newline", "nul"))
        return cls(path, decoder, dry=settings.dry, separator=separator)

    # -- taking ----------------------------------------------------------------------
    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        out: list[Delivery] = []
        deadline = time.monotonic() + max(0.0, timeout)
        # Retries are a deque (atomic appends and pops): settling never waits for a slow
        # producer on standard input, which only the reading below may wait on, and never
        # past ``timeout`` (the idle timeout must hold on a silent pipe).
        with self._lock:
            while len(out) < max_count:
                if self._retries:  # only take pops: what is there stays there
                    out.append(self._retries.popleft())
                    continue
                line = self._next_line(deadline if not out else time.monotonic())
                if line is None:
                    break
                out.append(self._delivery(line))
        return out

    def exhausted(self) -> bool:
        return self._eof and not self._retries

    def peek(self, limit: int) -> list[Param]:
        params: list[Param] = []
        with self._lock:
            while len(params) < limit:
                line = self._next_line(None)
                if line is None:
                    break
                delivery = self._delivery(line)
                params.append(delivery.param if delivery.error is None else line)
        return params

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery, result: Optional[str] = None) -> None:
        self._journals.ack(delivery, result)

    def retry(self, delivery: Delivery, reason: str) -> None:
        self._retries.append(
            Delivery(delivery.param, delivery.id, delivery.attempt + 1, delivery.handle,
                     number=delivery.number)
        )

    def release(self, delivery: Delivery) -> None:
        self._retries.appendleft(delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._journals.dead_letter(delivery, reason)

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        if self.path is None:
            try:
                fd: Optional[int] = sys.stdin.fileno()
            except (AttributeError, ValueError, OSError):  # a stream with no descriptor
                fd = None
            self._reader = LineReader(fd, None if fd is not None else sys.stdin,
                                      separator=separator(self.null))
            return
        try:
            # Kept open across takes; closed in close().
            self._source = open(self.path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"FILE_PATH={self.path!r} cannot be read: {exc.strerror}") from None
        self._reader = LineReader(self._source.fileno(), separator=separator(self.null))
        if not self.dry:  # a dry run writes nothing, and takes no line from anyone
            self._file_lock = ReaderLock(self.path)
            self._file_lock.acquire()  # before .done is read: a holder may still write it
        self._skip = read_done(self.path)[0]
        if not self.dry:
            self._journals.open(self.path)

    def close(self) -> None:
        self._journals.close()
        if self._file_lock is not None:
            self._file_lock.release()
            self._file_lock = None
        if self._source is not None:
            self._source.close()

    def describe(self) -> str:
        return f"file {self.path}" if self.path else "standard input"

    # -- administration (minion-queue): FileAdmin, in admin.py ----------------------
    def administration(self) -> FileAdmin:
        return self.admin

    def requeue_dead_ids(self, ids: Sequence[str]) -> int:
        return self.admin.requeue_dead_ids(ids)

    # -- internals -------------------------------------------------------------------
    def _next_line(self, deadline: Optional[float]) -> Optional[str]:
        """The next line to run (without its line end), or None at the end or when
        nothing came before ``deadline``. Bytes that are not UTF-8 become lone
        surrogates (``surrogateescape``) and go back out as the same bytes."""
        if self._reader is None:
            raise EngineError("the file engine was not opened")
        while True:
            try:
                raw = self._reader.next_line(deadline)
            except OSError as exc:
                raise EngineError(f"cannot read {self.describe()}: {exc.strerror}") from None
            if raw is None:
                self._eof = self._reader.eof
                return None
            self._lineno += 1
            line = self._text(raw)
            if line is None:
                continue
            if self._skip[line] > 0:
                self._skip[line] -= 1
                continue
            return line

    def _text(self, raw: bytes) -> Optional[str]:
        return line_text(raw, self.null)

    def _delivery(self, line: str) -> Delivery:
        param, error = line_param(line, self.decoder)
        if error is not None:
            error = f"line {self._lineno}: {error}"
        return Delivery(param=param, id=f"{self._id_prefix}{self._lineno}", attempt=1,
                        number=self._lineno,
                        handle=line, error=error)
