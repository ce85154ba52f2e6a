"""CPython's own tests of ``concurrent.futures`` executors, run on
``minionize.pool.Executor``.

The interpreter's ``test.test_concurrent_futures`` is loaded at test time: its own when
it has one, else Debian's ``libpython3.X-testsuite`` copy
(``/usr/lib/python3.X/test/test_concurrent_futures.py``, which ``tests/run.sh``
installs), under its own name, so that its functions travel by reference and the
scripts it runs import it: never a copy of it. Its executor test classes are made into
test cases as its own ``create_executor_tests`` makes them (the class, an executor
mixin, ``BaseTestCase``), with minionize's ``Executor`` as ``executor_type`` and no
``mp_context`` (``get_context()``, which a few tests call for a manager, is ``fork``).
No test body is changed. The scripts some tests run (``python -c``) import
``Executor`` from ``concurrent.futures``: a ``sitecustomize`` on their ``PYTHONPATH``
puts minionize's there.

The tests that cannot apply to minion workers are listed in ``NOT_APPLICABLE`` with the
reason, and skipped.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import shutil
import sys
import tempfile
import types
import unittest
from typing import Any, Optional
from unittest import mock

import pytest

import minionize
from minionize.pool import Executor

NAME = "test.test_concurrent_futures"
DEBIAN = f"/usr/lib/python{sys.version_info[0]}.{sys.version_info[1]}/test/test_concurrent_futures.py"


def load() -> Optional[types.ModuleType]:
    """The interpreter's ``test.test_concurrent_futures``, else Debian's, or None."""
    if NAME in sys.modules:
        return sys.modules[NAME]
    try:
        if importlib.util.find_spec(NAME) is not None:
            return importlib.import_module(NAME)
    except ImportError:
        return None
    if not os.path.isfile(DEBIAN):
        return None
    spec = importlib.util.spec_from_file_location(NAME, DEBIAN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[NAME]
        raise
    return module


cf = load()
if cf is None or not hasattr(cf, "ExecutorTest"):
    pytest.skip("the interpreter's test.test_concurrent_futures (3.11's layout) is not installed "
                "(Debian: libpython3.11-testsuite)", allow_module_level=True)
assert cf is not None
script_helper = pytest.importorskip("test.support.script_helper")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="minionize's pool runs on Linux")

PRIVATE = "it reads ProcessPoolExecutor's private attributes (_processes, _mp_context)"

#: CPython's test -> why it cannot apply to minion workers.
NOT_APPLICABLE = {
    "test_killed_child": (
        "a killed worker breaks a ProcessPoolExecutor; a minion worker's call goes back to the "
        "queue, runs on another worker, and is a TaskLost on its own future after max_attempts "
        "(and the test kills a process from ProcessPoolExecutor's private _processes)"),
    "test_saturation": PRIVATE,
    "test_idle_process_reuse_one": PRIVATE,
    "test_idle_process_reuse_multiple": PRIVATE,
    "test_max_tasks_per_child": (
        "it expects a fork context to refuse max_tasks_per_child: minion workers recycle the "
        "function process they fork, which a fork context does not hinder (and it reads _processes)"),
    "test_max_tasks_per_child_defaults_to_spawn_context": PRIVATE,
}


class _MinionizeMixin(cf.ExecutorMixin):  # type: ignore[misc, name-defined]
    """minionize's ``Executor`` as ``executor_type``, no ``mp_context``."""

    executor_type = Executor

    def get_context(self) -> Any:
        return multiprocessing.get_context("fork")

    def setUp(self) -> None:
        name = self._testMethodName
        if name in NOT_APPLICABLE:
            raise unittest.SkipTest(NOT_APPLICABLE[name])
        super().setUp()
        here = tempfile.mkdtemp(prefix="swap-executor-")
        self.addCleanup(shutil.rmtree, here)
        with open(os.path.join(here, "sitecustomize.py"), "w") as handle:
            handle.write(SWAP.format(name=NAME, path=cf.__file__))
        package = os.path.dirname(os.path.dirname(os.path.abspath(minionize.__file__)))
        path = os.pathsep.join(p for p in (here, package, os.environ.get("PYTHONPATH")) if p)
        # script_helper runs `python -I` (no PYTHONPATH) unless the interpreter needs its
        # environment: it does here, for the swap.
        for patcher in (mock.patch.dict(os.environ, {"PYTHONPATH": path}),
                        mock.patch.object(script_helper, "interpreter_requires_environment", lambda: True)):
            patcher.start()
            self.addCleanup(patcher.stop)


#: The scripts' ``sitecustomize``: minionize's Executor in ``concurrent.futures``, and
#: the test module importable under its name.
SWAP = """\
import concurrent.futures, importlib.util, sys
from minionize.pool import Executor
concurrent.futures.Executor = Executor
if importlib.util.find_spec("{name}") is None:
    spec = importlib.util.spec_from_file_location("{name}", {path!r})
    module = importlib.util.module_from_spec(spec)
    sys.modules["{name}"] = module
    spec.loader.exec_module(module)
"""


def _case(name: str, tests: type) -> type:
    case = type(name, (tests, _MinionizeMixin, cf.BaseTestCase), {"__module__": __name__})
    case.__qualname__ = name
    return case


TestCPythonExecutor = _case("TestCPythonExecutor", cf.ProcessPoolExecutorTest)
TestCPythonWait = _case("TestCPythonWait", cf.WaitTests)
TestCPythonAsCompleted = _case("TestCPythonAsCompleted", cf.AsCompletedTests)
TestCPythonExecutorShutdown = _case("TestCPythonExecutorShutdown", cf.ExecutorShutdownTest)
TestCPythonInitializer = _case("TestCPythonInitializer", cf.InitializerMixin)
TestCPythonFailingInitializer = _case("TestCPythonFailingInitializer", cf.FailingInitializerMixin)
