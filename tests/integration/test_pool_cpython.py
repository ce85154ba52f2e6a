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
import os
import shutil
import sys
import tempfile
import unittest
from typing import Any
from unittest import mock

import pytest

import minionize
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


# -- test_multiprocessing_main_handling: scripts run by `python`, whose `from
# multiprocessing import Pool` gets minionize's (a sitecustomize on PYTHONPATH swaps it).
main_handling = pytest.importorskip("test.test_multiprocessing_main_handling")
script_helper = pytest.importorskip("test.support.script_helper")

SWAP = "import multiprocessing\nfrom minionize.pool import Pool\nmultiprocessing.Pool = Pool\n"


class _SwappedInScripts:
    """The scripts' interpreter imports a ``sitecustomize`` that swaps ``Pool``."""

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        here = tempfile.mkdtemp(prefix="swap-pool-")
        self.addCleanup(shutil.rmtree, here)  # type: ignore[attr-defined]
        with open(os.path.join(here, "sitecustomize.py"), "w") as handle:
            handle.write(SWAP)
        package = os.path.dirname(os.path.dirname(os.path.abspath(minionize.__file__)))
        path = os.pathsep.join(p for p in (here, package, os.environ.get("PYTHONPATH")) if p)
        # script_helper runs `python -E` (no PYTHONPATH) unless the interpreter needs its
        # environment: it does here, for the swap.
        for patcher in (mock.patch.dict(os.environ, {"PYTHONPATH": path}),
                        mock.patch.object(script_helper, "interpreter_requires_environment", lambda: True)):
            patcher.start()
            self.addCleanup(patcher.stop)  # type: ignore[attr-defined]


def _script_case(name: str, base: type) -> type:
    case = type(name, (_SwappedInScripts, base), {"__module__": __name__})
    case.__qualname__ = name
    return case


TestCPythonMainHandlingFork = _script_case("TestCPythonMainHandlingFork", main_handling.ForkCmdLineTest)
TestCPythonMainHandlingSpawn = _script_case("TestCPythonMainHandlingSpawn", main_handling.SpawnCmdLineTest)
TestCPythonMainHandlingForkServer = _script_case("TestCPythonMainHandlingForkServer",
                                                 main_handling.ForkServerCmdLineTest)
