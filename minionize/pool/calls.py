"""A call of the pool on disk: its function and items pickled into ``calls/`` of the run
directory (one pickle per chunk, side by side in one file), and the queue's params that
point at them, one per chunk (JSON: never a pickle)."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from .errors import PoolError
from .rundir import write_private


def chunk_size(count: int, processes: int, chunksize: Optional[int]) -> int:
    """``chunksize``, or by default about four chunks per worker, as multiprocessing does."""
    if chunksize is None:
        chunksize, extra = divmod(count, processes * 4)
        chunksize += 1 if extra else 0
    return max(1, chunksize)


def dump(dumps: Callable[[Any], bytes], value: Any, what: str) -> bytes:
    """``value`` pickled; PoolError naming ``what`` if it cannot be."""
    try:
        return dumps(value)
    except Exception as exc:
        raise PoolError(f"cannot send {what} to the workers: {type(exc).__name__}: {exc}") from exc


def write_call(
    rundir: str, call: int, func_data: bytes, items: list[Any], chunksize: int, star: bool,
    dumps: Callable[[Any], bytes],
) -> list[dict[str, Any]]:
    """Write the call's function and items; return the params of its chunks."""
    blobs: list[bytes] = []
    params: list[dict[str, Any]] = []
    offset = 0
    for chunk, start in enumerate(range(0, len(items), chunksize)):
        blob = dump(dumps, items[start:start + chunksize], f"item(s) {start}..{start + chunksize - 1}")
        params.append({"call": call, "chunk": chunk, "start": start, "offset": offset,
                       "size": len(blob), "star": star})
        blobs.append(blob)
        offset += len(blob)
    calls = os.path.join(rundir, "calls")
    write_private(os.path.join(calls, f"{call}.items"), b"".join(blobs))
    write_private(os.path.join(calls, f"{call}.func"), func_data)
    return params


def remove_call(rundir: str, call: int) -> None:
    """The call is over: remove its pickles (workers skip its leftover chunks)."""
    for suffix in ("func", "items"):
        try:
            os.unlink(os.path.join(rundir, "calls", f"{call}.{suffix}"))
        except FileNotFoundError:
            pass
