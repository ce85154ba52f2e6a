"""NUL-separated records (``xargs -0``, ``find -print0``), read as they arrive."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

CHUNK = 65536


def nul_records(stream: IO[bytes]) -> Iterator[str]:
    """Each record of ``stream`` without its NUL terminator (a last record needs none),
    decoded as UTF-8 (undecodable bytes kept as surrogates, as for lines). Reads with
    ``read1`` so that a record is yielded as soon as it arrived on a pipe."""
    read = getattr(stream, "read1", stream.read)
    pending = b""
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        pending += chunk
        *records, pending = pending.split(b"\0")
        for record in records:
            yield record.decode("utf-8", "surrogateescape")
    if pending:
        yield pending.decode("utf-8", "surrogateescape")
