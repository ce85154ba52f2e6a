"""The file engine: params from a file (``FILE_PATH``) or standard input, one per line.

Blank lines are skipped. ``FILE_SEPARATOR=nul`` (``minionize -0``) splits the input on
NUL bytes instead, like ``xargs -0`` (newlines are then part of a param, and an empty
record is a param, as there). ``FILE_DECODER=identity`` makes each line a string,
``json`` a JSON value (a line that does not parse is dead-lettered with the reason).

Beside a real file, ``<FILE_PATH>.done`` is a journal of the lines that succeeded (one
JSON string per line, appended as each param is acked): a rerun skips them, like GNU
parallel ``--resume``; a line that appears twice in the input runs twice, and is skipped
as many times as the journal holds it. ``<FILE_PATH>.failed`` receives the dead letters
as JSON lines with their reason. A rerun retries dead letters: failure is not success.

A file has nobody else to hand a failed param to, so a failed attempt is retried by this
same minion. Several minions on one file would each run every line: run one minion with
``MINION_CONCURRENCY`` instead, or use the sweep queue.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, Optional

from ..errors import ConfigError, EngineError
from ._records import nul_records
from .base import Delivery, Engine, Param, decode_param

if TYPE_CHECKING:
    from ..config import Settings


class FileEngine(Engine):
    name = "file"

    def __init__(
        self, path: Optional[str] = None, decoder: str = "identity", separator: str = "newline"
    ) -> None:
        self.path = path
        self.decoder = decoder
        self.null = separator == "nul"
        self._lock = threading.Lock()
        self._retries: collections.deque[Delivery] = collections.deque()
        self._source: Optional[IO[Any]] = None
        self._lines: Optional[Iterator[str]] = None
        self._lineno = 0
        self._eof = False
        self._skip: collections.Counter[str] = collections.Counter()
        self._done_fd: Optional[int] = None
        self._failed_fd: Optional[int] = None

    @classmethod
    def from_settings(cls, settings: Settings) -> FileEngine:
        env = settings.env
        path = env.str("FILE_PATH")
        if path == "-":
            path = None
        decoder = env.choice("FILE_DECODER", "identity", ("identity", "json"))
        separator = env.choice("FILE_SEPARATOR", "newline", ("newline", "nul"))
        return cls(path, decoder, separator)

    # -- taking ----------------------------------------------------------------------
    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        out: list[Delivery] = []
        # Retries are a deque (atomic appends and pops): settling never waits for a slow
        # producer on standard input, which only the reading below may block on.
        with self._lock:
            while len(out) < max_count:
                try:
                    out.append(self._retries.popleft())
                    continue
                except IndexError:
                    pass
                line = self._next_line()
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
                line = self._next_line()
                if line is None:
                    break
                delivery = self._delivery(line)
                params.append(delivery.param if delivery.error is None else line)
        return params

    # -- settling --------------------------------------------------------------------
    def ack(self, delivery: Delivery) -> None:
        if self._done_fd is not None:
            record = json.dumps(delivery.handle, ensure_ascii=False) + "\n"
            os.write(self._done_fd, record.encode())

    def retry(self, delivery: Delivery, reason: str) -> None:
        self._retries.append(
            Delivery(delivery.param, delivery.id, delivery.attempt + 1, delivery.handle)
        )

    def release(self, delivery: Delivery) -> None:
        self._retries.appendleft(delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        record = {
            "line": delivery.handle,
            "param": delivery.param,
            "attempts": delivery.attempt,
            "reason": reason,
            "time": time.time(),
        }
        try:
            text = json.dumps(record, ensure_ascii=False)
        except (TypeError, ValueError):
            record["param"] = repr(delivery.param)
            text = json.dumps(record, ensure_ascii=False)
        # From standard input there is no .failed file: the loop's warning on stderr is
        # the dead letter's only trace.
        if self._failed_fd is not None:
            os.write(self._failed_fd, (text + "\n").encode())

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        if self.path is None:
            self._source = sys.stdin
            self._lines = nul_records(sys.stdin.buffer) if self.null else iter(sys.stdin)
            return
        try:
            # Kept open across takes; closed in close().
            if self.null:
                binary = open(self.path, "rb")  # noqa: SIM115
                self._source, self._lines = binary, nul_records(binary)
            else:
                text = open(self.path, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
                self._source, self._lines = text, iter(text)
        except OSError as exc:
            raise ConfigError(f"FILE_PATH={self.path!r} cannot be read: {exc.strerror}") from None
        self._skip = self._read_journal(self.path + ".done")
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        try:
            self._done_fd = os.open(self.path + ".done", flags, 0o644)
            self._failed_fd = os.open(self.path + ".failed", flags, 0o644)
        except OSError as exc:
            raise EngineError(
                f"cannot write the journal beside FILE_PATH={self.path!r}: {exc.strerror}"
            ) from None

    def close(self) -> None:
        for fd in (self._done_fd, self._failed_fd):
            if fd is not None:
                os.close(fd)
        self._done_fd = self._failed_fd = None
        if self._source is not None and self._source is not sys.stdin:
            self._source.close()

    def describe(self) -> str:
        return f"file {self.path}" if self.path else "standard input"

    # -- internals -------------------------------------------------------------------
    @staticmethod
    def _read_journal(path: str) -> collections.Counter[str]:
        done: collections.Counter[str] = collections.Counter()
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as journal:
                for record in journal:
                    try:
                        line = json.loads(record)
                    except ValueError:
                        continue  # a torn last record: that param simply runs again
                    if isinstance(line, str):
                        done[line] += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise EngineError(f"cannot read the journal {path!r}: {exc.strerror}") from None
        return done

    def _next_line(self) -> Optional[str]:
        """The next line to run (without its newline), or None at the end."""
        if self._lines is None:
            raise EngineError("the file engine was not opened")
        for raw in self._lines:
            self._lineno += 1
            line = raw if self.null else raw.rstrip("\r\n")
            if not self.null and not line.strip():
                continue
            if self._skip[line] > 0:
                self._skip[line] -= 1
                continue
            return line
        self._eof = True
        return None

    def _delivery(self, line: str) -> Delivery:
        param, error = decode_param(line, self.decoder, "FILE_DECODER")
        if error is not None:
            error = f"line {self._lineno}: {error}"
        return Delivery(param=param, id=str(self._lineno), attempt=1, handle=line, error=error)
