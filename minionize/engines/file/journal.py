"""The file engine's reading and its journals: lines of a file or a pipe
(:class:`LineReader`), and the records kept beside the file (``.done``, ``.failed``,
``.results``): how each is written (:class:`Journals`) and read back. See
:mod:`minionize.engines.file.engine`."""

from __future__ import annotations

import collections
import json
import os
import select
import threading
import time
from collections.abc import Iterator
from typing import IO, Any, Callable, Optional

from ...errors import EngineError
from ...params import Param, decode_param
from ..base import Delivery

_CHUNK = 1 << 16


class LineReader:
    """Lines (bytes, without the ``\\n``, or NUL-terminated records with ``separator=b"\\0"``)
    of a file descriptor, or of a text stream that has none; :meth:`next_line` waits for
    data at most until a deadline."""

    def __init__(self, fd: Optional[int], text: Optional[IO[str]] = None,
                 separator: bytes = b"\n") -> None:
        self.fd = fd
        self.separator = separator
        self.eof = False
        self._text = iter(text) if text is not None else None
        self._buffer = bytearray()
        self._pos = 0
        self._poll: Optional[Any] = None
        if fd is not None:
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)

    def next_line(self, deadline: Optional[float]) -> Optional[bytes]:
        """The next line; None at the end of the input (then :attr:`eof` is set) or when
        nothing came before ``deadline`` (a ``time.monotonic()`` time; None: wait)."""
        if self._text is not None:
            self._buffer += "".join(self._text).encode("utf-8", "surrogateescape")
            self._text = None
            self.eof = True
        while True:
            newline = self._buffer.find(self.separator, self._pos)
            if newline >= 0:
                line = bytes(self._buffer[self._pos:newline])
                self._pos = newline + 1
                return line
            if self.eof:
                if self._pos < len(self._buffer):  # a last line without its newline
                    line = bytes(self._buffer[self._pos:])
                    self._pos = len(self._buffer)
                    return line
                return None
            if not self._wait(deadline):
                return None
            del self._buffer[:self._pos]
            self._pos = 0
            assert self.fd is not None
            chunk = os.read(self.fd, _CHUNK)
            if chunk:
                self._buffer += chunk
            else:
                self.eof = True

    def _wait(self, deadline: Optional[float]) -> bool:
        """True when the descriptor can be read (data or its end) before ``deadline``."""
        assert self._poll is not None
        while True:
            if deadline is None:
                timeout_ms: Optional[int] = None
            else:
                timeout_ms = max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
            if self._poll.poll(timeout_ms):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False


#: Built once: json.dumps with options builds a new encoder per call.
_TEXT_JSON = json.JSONEncoder(ensure_ascii=False).encode


def record_bytes(record: Any) -> bytes:
    """A JSON line for a journal: a line's bytes that are not UTF-8 (read as lone
    surrogates, ``surrogateescape``) go back to the very bytes they came from."""
    try:
        return (_TEXT_JSON(record) + "\n").encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape (\\ud800): keep it escaped
        return (json.dumps(record) + "\n").encode("ascii")


def result_bytes(delivery: Delivery, result: Optional[str]) -> bytes:
    """A ``.results`` line: the delivery's id, line number and line text, then the
    result's JSON text as given (a raw newline in JSON text can only be blank space
    between tokens: it becomes a space, so that the record stays one line)."""
    head = record_bytes({"id": delivery.id, "line": delivery.number, "param": delivery.handle})
    text = (result or "null").replace("\n", " ")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the same value, escaped
        data = json.dumps(json.loads(text)).encode("ascii")
    return head[:-2] + b', "result": ' + data + b"}\n"


class Journals:
    """The files written beside a real file: ``.done``, ``.failed`` and ``.results``,
    opened by :meth:`open` (not for standard input, nor for a dry run: then every write
    is a no-op) and appended one whole record at a time."""

    def __init__(self) -> None:
        #: Appends to the journals: one record at a time, whole.
        self._lock = threading.Lock()
        self._done_fd: Optional[int] = None
        self._failed_fd: Optional[int] = None
        self._results_fd: Optional[int] = None
        self._path: Optional[str] = None
        #: Whether this run made ``.results`` (removed at close when it stayed empty,
        #: so that a run of a program leaves no empty file) and wrote to it.
        self._results_made = self._results_written = False

    def open(self, path: str) -> None:
        """Open the journals beside ``path`` for appending."""
        self._path = path
        try:
            self._done_fd = open_journal(path + ".done")
            self._failed_fd = open_journal(path + ".failed")
            self._results_made = not os.path.exists(path + ".results")
            self._results_fd = open_journal(path + ".results")
        except OSError as exc:
            raise EngineError(
                f"cannot write the journal beside FILE_PATH={path!r}: {exc.strerror}"
            ) from None

    def ack(self, delivery: Delivery, result: Optional[str]) -> None:
        with self._lock:
            # The result first: killed in between, the line is not done and runs again.
            if self._results_fd is not None and result is not None:
                write_all(self._results_fd, result_bytes(delivery, result))
                self._results_written = True
            if self._done_fd is not None:
                # With a result, the record names it (its id): a result lost later is
                # known as lost, and its line runs again.
                # A line done at its first attempt stays a bare string (the common case).
                stored = self._results_fd is not None and result is not None
                record: Any = delivery.handle
                if stored or delivery.attempt > 1:
                    record = {"line": delivery.handle}
                    if stored:
                        record["id"] = delivery.id
                    if delivery.attempt > 1:
                        record["attempts"] = delivery.attempt
                write_all(self._done_fd, record_bytes(record))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        record = {
            "id": delivery.id,
            "line": delivery.handle,
            "param": delivery.param,
            "attempts": delivery.attempt,
            "reason": reason,
            "time": time.time(),
        }
        try:
            data = record_bytes(record)
        except (TypeError, ValueError):
            record["param"] = repr(delivery.param)
            data = record_bytes(record)
        # From standard input there is no .failed file: the loop's warning on stderr is
        # the dead letter's only trace.
        if self._failed_fd is not None:
            with self._lock:
                write_all(self._failed_fd, data)

    def close(self) -> None:
        for fd in (self._done_fd, self._failed_fd, self._results_fd):
            if fd is not None:
                os.close(fd)
        if self._results_fd is not None and self._results_made and not self._results_written:
            try:
                os.unlink(self._path + ".results")  # type: ignore[operator]
            except OSError:
                pass
        self._done_fd = self._failed_fd = self._results_fd = None


def open_journal(path: str) -> int:
    """A journal opened for appending; a last record torn by a kill is ended with a
    newline first, so that the next record stands alone (the torn one is skipped)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            write_all(fd, b"\n")
    except OSError:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a large result may take several)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def separator(null: bool) -> bytes:
    """What ends a record: a NUL byte (``FILE_SEPARATOR=nul``) or a newline."""
    return b"\0" if null else b"\n"


def line_param(line: str, decoder: str) -> tuple[Param, Optional[str]]:
    """The param of a line, and why it cannot be run (None: it can): the line itself
    (``FILE_DECODER=identity``), or its JSON value (``json``)."""
    if decoder == "json":
        return decode_param(line, "json", "FILE_DECODER")
    return line, None


def line_text(raw: bytes, null: bool) -> Optional[str]:
    """A line's text (its line end removed; bytes that are not UTF-8 as lone
    surrogates), or None for a blank line, which is skipped (``null``: records end with
    a NUL byte, and are kept as they are)."""
    line = raw.decode("utf-8", "surrogateescape")
    if not null:
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip():
            return None
    return line


def numbered_lines(path: str, separator: bytes, null: bool) -> Iterator[tuple[int, str]]:
    """(line number, text) of every param line of ``path``, as a minion reads them (a
    line that is no param, such as an empty one, keeps its number but is not given)."""
    with open(path, "rb") as source:
        reader = LineReader(source.fileno(), separator=separator)
        number = 0
        while (raw := reader.next_line(None)) is not None:
            number += 1
            line = line_text(raw, null)
            if line is not None:
                yield number, line


class DoneLines:
    """The lines of a file that a rerun skips as done, and the results lost."""

    def __init__(self) -> None:
        #: (line number, text) of the done lines, in order.
        self.lines: list[tuple[int, str]] = []
        #: Lines (not done) whose result was stored and is now lost.
        self.lost = 0
        #: Whether ``.results`` is missing (or empty).
        self.missing = False


def done_lines(path: str, separator: bytes, null: bool) -> DoneLines:
    """The lines of ``path`` that a rerun skips as done (those its ``.done`` holds, as
    many times as it holds them, a stored result found), in order; and how many lines
    are not done only because their stored result is lost."""
    skip, lost = read_done(path)
    found = DoneLines()
    if sum(lost.values()):
        try:
            found.missing = os.stat(path + ".results").st_size == 0  # made by an open()
        except FileNotFoundError:
            found.missing = True
    for number, line in numbered_lines(path, separator, null):
        if skip[line] > 0:
            skip[line] -= 1
            found.lines.append((number, line))
        elif lost[line] > 0:
            lost[line] -= 1
            found.lost += 1
    return found


def journal_records(journal: str) -> Iterator[Any]:
    """The records of the journal file ``journal`` (``.done``, ``.failed``), decoded; a
    torn record (a kill mid-write) is skipped, a missing journal has none."""
    try:
        with open(journal, encoding="utf-8", errors="surrogateescape") as records:
            for raw in records:
                try:
                    yield json.loads(raw)
                except (ValueError, RecursionError):
                    continue  # a torn last record: that param simply runs again
    except FileNotFoundError:
        return
    except OSError as exc:
        raise EngineError(f"cannot read the journal {journal!r}: {exc.strerror}") from None


def read_done(path: str) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """``.done`` beside ``path`` as (the count of each line text done, the count of each
    line text whose record says a result was stored that ``.results`` lacks: those
    lines are not done, they run again). A torn record is skipped."""
    done: collections.Counter[str] = collections.Counter()
    lost: collections.Counter[str] = collections.Counter()
    stored: list[tuple[str, str]] = []
    for line in journal_records(path + ".done"):
        if isinstance(line, str):
            done[line] += 1
        elif isinstance(line, dict) and isinstance(line.get("line"), str):
            if isinstance(line.get("id"), str):
                stored.append((line["line"], line["id"]))
            elif "id" not in line:
                done[line["line"]] += 1
    if stored:
        kept: set[tuple[str, str]] = set()
        read_results(path + ".results", kept)
        for key in stored:
            (done if key in kept else lost)[key[0]] += 1
    return done, lost


def done_attempts(path: str) -> dict[str, list[int]]:
    """The attempts of each done record of ``.done`` beside ``path``, by line text, in
    the journal's order (1 where a record does not say: done at the first attempt)."""
    found: dict[str, list[int]] = collections.defaultdict(list)
    for line in journal_records(path + ".done"):
        if isinstance(line, str):
            found[line].append(1)
        elif isinstance(line, dict) and isinstance(line.get("line"), str):
            attempts = line.get("attempts", 1)
            found[line["line"]].append(attempts if isinstance(attempts, int) else 1)
    return found


def read_results(path: str, kept: Optional[set[tuple[str, str]]] = None
                 ) -> dict[tuple[int, str], tuple[int, str]]:
    """``.results`` as {(line number, text): (offset of its last record, id)}; records
    that do not parse (torn by a kill, damaged) are skipped. The results themselves
    stay in the file: :func:`result_rows` reads them one at a time. ``kept`` receives
    the (text, id) of every record that parses."""
    index: dict[tuple[int, str], tuple[int, str]] = {}
    try:
        with open(path, "rb") as records:
            offset = 0
            for raw in records:
                start, offset = offset, offset + len(raw)
                try:
                    record = json.loads(raw.decode("utf-8", "surrogateescape"))
                except (ValueError, RecursionError):
                    continue
                if (isinstance(record, dict) and type(record.get("line")) is int
                        and isinstance(record.get("param"), str)):
                    param_id = str(record.get("id", ""))
                    index[(record["line"], record["param"])] = (start, param_id)
                    if kept is not None:
                        kept.add((record["param"], param_id))
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise EngineError(f"cannot read the results {path!r}: {exc.strerror}") from None
    return index


def result_rows(path: str, done: list[tuple[int, str]], param_of: Callable[[str], Param],
                name: str) -> Iterator[dict[str, Any]]:
    """The rows of :meth:`FileEngine.results` for the ``done`` lines ((number, text), in
    order) of the file at ``path``, each result read from ``.results`` when its turn
    comes (however large the results, only their offsets are held); ``param_of`` makes
    a line's param, ``name`` the id of a line done without a record."""
    index = read_results(path + ".results")
    exact = {key for key in done if key in index}
    # A record whose line number no longer holds its text: for that text's lines.
    spare: dict[str, collections.deque[tuple[int, str]]] = collections.defaultdict(collections.deque)
    for stored in sorted(index):
        if stored not in exact:
            spare[stored[1]].append(stored)
    try:
        records: Optional[IO[bytes]] = open(path + ".results", "rb")  # noqa: SIM115
    except FileNotFoundError:
        records = None
    try:
        for number, line in done:
            key: Optional[tuple[int, str]] = (number, line)
            if key not in exact:
                key = spare[line].popleft() if spare.get(line) else None
            param = param_of(line)
            if key is None or records is None:  # done before results were kept
                yield {"id": f"{name}-{number}", "param": param, "result": None}
                continue
            offset, param_id = index[key]
            records.seek(offset)
            record = json.loads(records.readline().decode("utf-8", "surrogateescape"))
            yield {"id": param_id, "param": param, "result": record.get("result")}
    finally:
        if records is not None:
            records.close()
