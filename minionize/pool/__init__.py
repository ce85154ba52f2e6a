"""``minionize.pool``: a drop-in for ``multiprocessing.Pool`` whose workers are minions.

>>> from minionize.pool import Pool
>>> with Pool(4) as pool:                             # doctest: +SKIP
...     pool.map(sum, [[1, 2], [2, 3], [4, 5]])
[3, 5, 9]
>>> from minionize.pool import Executor
>>> with Executor(4) as executor:                     # doctest: +SKIP
...     executor.submit(pow, 2, 8).result()
256

Needs ``pip install 'minionize[pool]'`` (cloudpickle). See ``docs/pool.md``.
"""

from __future__ import annotations

from .backends import PoolWorker
from .errors import (
    BrokenPoolError,
    PoolEncodingError,
    PoolError,
    PoolPicklingError,
    PoolTypeError,
    RemoteError,
    RemoteTraceback,
    TaskLost,
)
from .executor import Executor
from .pool import Pool
from .results import ApplyResult, AsyncResult, IMapIterator, MapResult

__all__ = [
    "ApplyResult", "AsyncResult", "BrokenPoolError", "Executor", "IMapIterator", "MapResult", "Pool",
    "PoolEncodingError", "PoolError", "PoolPicklingError", "PoolTypeError", "PoolWorker", "RemoteError",
    "RemoteTraceback", "TaskLost",
]
