"""CPython's own tests of ``multiprocessing.Pool``, run on ``minionize.pool.Pool``.

The interpreter's ``test._test_multiprocessing`` is loaded at test time (pyenv's Python
ships it; on Debian, ``libpython3.X-testsuite``): never a copy of it. Its pool test
classes are made into test cases here as its own ``install_tests_in_module_dict`` makes
them for the ``processes`` type (the class, ``ProcessesMixin``, ``unittest.TestCase``),
with ``Pool`` swapped: ``cls.Pool`` (what ``_TestPool`` calls) and
``multiprocessing.Pool`` (what the worker-error, lifetime and initializer tests call),
for the time of each class. No test body is changed.

The tests that cannot apply to minion workers are listed in ``NOT_APPLICABLE`` with the
reason, and skipped.
"""

from __future__ import annotations

import multiprocessing
import sys
import unittest
from typing import Any

import pytest

from minionize.pool import Pool

cpython = pytest.importorskip("test._test_multiprocessing",
                              reason="the interpreter's test package is not installed")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="minionize's pool runs on Linux")

#: CPython's test -> why it cannot apply to minion workers.
NOT_APPLICABLE = {
    "test_pool_worker_lifetime": (
        "maxtasksperchild recycles the worker minion's function process, not the minion (the "
        "process that holds the leases and that p._pool lists): the minions' pids do not change"),
    "test_unpickleable_result": (
        "its 'unpicklable' result is a lambda, which minionize sends back by value (cloudpickle): "
        "it is no error here; a result that cannot be pickled at all is a MaybeEncodingError"),
}


class _Swapped:
    """``Pool`` swapped for minionize's, ``multiprocessing.Pool`` too while the class runs."""

    Pool = staticmethod(Pool)
    _saved: Any = None

    @classmethod
    def setUpClass(cls) -> None:
        cls._saved = multiprocessing.Pool
        multiprocessing.Pool = Pool  # type: ignore[assignment]
        super().setUpClass()  # type: ignore[misc]

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()  # type: ignore[misc]
        finally:
            multiprocessing.Pool = cls._saved

    def setUp(self) -> None:
        name = self._testMethodName  # type: ignore[attr-defined]
        if name in NOT_APPLICABLE:
            raise unittest.SkipTest(NOT_APPLICABLE[name])
        super().setUp()  # type: ignore[misc]


def _case(name: str, base: type, *mixins: type) -> type:
    case = type(name, (_Swapped, base, *mixins, unittest.TestCase), {"__module__": __name__})
    case.__qualname__ = name
    return case


TestCPythonPool = _case("TestCPythonPool", cpython._TestPool, cpython.ProcessesMixin)
TestCPythonPoolWorkerErrors = _case("TestCPythonPoolWorkerErrors", cpython._TestPoolWorkerErrors,
                                    cpython.ProcessesMixin)
TestCPythonPoolWorkerLifetime = _case("TestCPythonPoolWorkerLifetime", cpython._TestPoolWorkerLifetime,
                                      cpython.ProcessesMixin)


class TestCPythonPoolInitializer(_Swapped, cpython.TestInitializers):  # type: ignore[misc, name-defined]
    """The pool initializer test (the manager's is not a pool's)."""

    test_manager_initializer = None
