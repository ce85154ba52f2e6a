"""multiprocessing's Pool API on minion workers, where minionize says more than
CPython's own tests (``test_pool_cpython.py``): a failing initializer, the two names of
``maxtasksperchild``, ``context``, a terminated pool's pending results."""

from __future__ import annotations

import multiprocessing
import pickle
import time
from multiprocessing.pool import MaybeEncodingError
from pathlib import Path

import pytest

from minionize.pool import Pool, PoolEncodingError, PoolError, RemoteError


def refuse() -> None:
    raise RuntimeError("no database here")


def test_a_failing_initializer_is_a_worker_that_cannot_start_never_a_hang(tmp_path: Path) -> None:
    with Pool(2, refuse, workdir=str(tmp_path)) as pool:
        started = time.monotonic()
        with pytest.raises(PoolError, match=r"(?s)the pool's initializer raised.*no database here"):
            pool.map(abs, [1, 2])
        result = pool.apply_async(abs, (-1,))
        with pytest.raises(PoolError, match="cannot start"):
            result.get(30)
        assert time.monotonic() - started < 20
    pool.join()


def test_maxtasksperchild_is_max_tasks_per_worker(tmp_path: Path) -> None:
    with Pool(1, maxtasksperchild=1, workdir=str(tmp_path)) as pool:
        pids = pool.map(lambda x: __import__("os").getpid(), range(3), chunksize=1)
        assert len(set(pids)) == 3
    with pytest.raises(ValueError, match="one setting"):
        Pool(1, maxtasksperchild=1, max_tasks_per_worker=2)


def test_a_spawn_context_starts_fresh_interpreters(tmp_path: Path) -> None:
    with Pool(1, context=multiprocessing.get_context("spawn"), workdir=str(tmp_path)) as pool:
        assert pool._run.backend.start_method == "exec"  # type: ignore[attr-defined]
        assert pool.apply(int, ("ff",), {"base": 16}) == 255


def test_join_needs_close_and_a_terminated_pool_fails_its_pending_results(tmp_path: Path) -> None:
    pool = Pool(1, workdir=str(tmp_path))
    with pytest.raises(ValueError, match="Pool is still running"):
        pool.join()
    result = pool.apply_async(time.sleep, (30,))
    pool.terminate()
    with pytest.raises(PoolError, match="terminated"):
        result.get(10)
    pool.join()
    with pytest.raises(ValueError, match="Pool not running"), pool:
        pass


def test_a_result_that_cannot_be_pickled_is_a_maybe_encoding_error(tmp_path: Path) -> None:
    with Pool(1, workdir=str(tmp_path)) as pool:
        result = pool.apply_async(lambda: __import__("threading").Lock())
        with pytest.raises(MaybeEncodingError) as info:
            result.get(30)
    error = info.value
    assert isinstance(error, PoolEncodingError) and isinstance(error, RemoteError)
    assert "cannot be pickled" in str(error) and error.exc and "lock" in error.value
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_imap_next_takes_a_timeout(tmp_path: Path) -> None:
    with Pool(1, workdir=str(tmp_path)) as pool:
        results = pool.imap(time.sleep, [2, 0])
        with pytest.raises(multiprocessing.TimeoutError):
            results.next(timeout=0.1)
        assert results.next(timeout=30) is None
