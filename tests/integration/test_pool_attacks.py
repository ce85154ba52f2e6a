"""minionize.pool.Pool under attack (issue 20): results that cannot be unpickled, endless
inputs, relative workdirs, SIGTERM and SIGKILL of the caller, unpicklable arguments, and
tracebacks that keep their file and source line."""

from __future__ import annotations

import itertools
import json
import linecache
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from minionize.pool import Pool, PoolError, RemoteError
from tests.services import alive, wait_for

ROOT = Path(__file__).resolve().parents[2]
#: The environment of a script run by a test: this tree importable, the rest as ours.
ENV = {**os.environ,
       "PYTHONPATH": os.pathsep.join([str(ROOT), *os.environ.get("PYTHONPATH", "").split(os.pathsep)])}


def _fail_on_load(text: str) -> None:
    raise ValueError(f"refusing to load {text}")


class LoadsBadly:
    """Pickles fine; unpickling it raises ValueError."""

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (_fail_on_load, ("this result",))


def loads_badly(x: int) -> Any:
    return LoadsBadly() if x == 3 else x


def failing_in_a_module(x: int) -> int:
    if x == 2:
        raise ValueError("from an importable module", x)  # the line a traceback shows
    return x


def test_a_result_that_cannot_be_unpickled_is_a_remote_error_of_its_item(tmp_path: Path) -> None:
    with Pool(2, workdir=str(tmp_path)) as pool:
        with pytest.raises(RemoteError, match=r"the result of item 3 \(LoadsBadly\) could not be "
                                              r"unpickled: ValueError: refusing to load this result"):
            pool.map(loads_badly, range(6), chunksize=2)
        assert pool.map(abs, [-1, -2]) == [1, 2]


def test_an_error_of_one_call_never_reaches_another_thread(tmp_path: Path) -> None:
    with Pool(2, workdir=str(tmp_path)) as pool:
        for _ in range(3):
            got: dict[str, object] = {}

            def bad(got: dict[str, object] = got) -> None:
                try:
                    got["bad"] = pool.map(loads_badly, range(40), chunksize=1)
                except Exception as exc:
                    got["bad"] = exc

            def good(got: dict[str, object] = got) -> None:
                try:
                    got["good"] = pool.map(abs, range(-200, 0), chunksize=1)
                except Exception as exc:
                    got["good"] = exc

            threads = [threading.Thread(target=bad), threading.Thread(target=good)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert got["good"] == list(range(200, 0, -1))
            assert isinstance(got["bad"], RemoteError)


class Endless:
    """itertools.count(), which fails loudly instead of filling the memory when read too far."""

    def __init__(self, limit: int = 5000) -> None:
        self.read = 0
        self.limit = limit
        self._count = itertools.count()

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        self.read += 1
        if self.read > self.limit:
            raise RuntimeError("the whole input was read")
        return next(self._count)


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_consumes_an_endless_input_as_it_goes(tmp_path: Path, method: str) -> None:
    endless = Endless()
    with Pool(2, workdir=str(tmp_path)) as pool:
        results = getattr(pool, method)(abs, endless)
        first = list(itertools.islice(results, 30))
        assert sorted(first) == first if method == "imap" else len(set(first)) == 30
        if method == "imap":
            assert first == list(range(30))
        assert endless.read < 30 + 100  # a bounded read-ahead
        results.close()


def broken_input(count: int) -> Iterator[int]:
    yield from range(count)
    raise KeyError("the input broke")


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_an_exception_of_the_input_comes_after_the_results_before_it(tmp_path: Path, method: str) -> None:
    with Pool(2, workdir=str(tmp_path)) as pool:
        results = getattr(pool, method)(abs, broken_input(7), chunksize=2)
        got = [next(results) for _ in range(6)]  # item 6's chunk, cut by the error, is dropped
        assert sorted(got) == list(range(6))  # as multiprocessing drops it
        with pytest.raises(KeyError, match="the input broke"):
            next(results)
        assert pool.map(abs, [-3]) == [3]


def test_a_relative_workdir_survives_a_chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    with Pool(1, workdir="runs") as pool:
        os.chdir(tmp_path / "elsewhere")
        assert pool.map(abs, [-1, -2]) == [1, 2]
    assert os.path.isabs(pool.rundir)
    assert list((tmp_path / "runs").iterdir()) == []


def _start_script(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=ENV)


def test_a_caller_stopped_by_sigterm_leaves_no_run_directory(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    caller = _start_script(tmp_path, f"""\
        import time
        from minionize.pool import Pool
        with Pool(2, workdir={str(runs)!r}) as pool:
            print(pool.map(abs, [-1]), *(w.pid for w in pool.workers), flush=True)
            time.sleep(60)
    """)
    assert caller.stdout is not None
    line = caller.stdout.readline().split()
    assert line[0] == "[1]"
    assert len(list(runs.iterdir())) == 1
    caller.send_signal(signal.SIGTERM)
    assert caller.wait(30) == -signal.SIGTERM  # still killed by SIGTERM, as without a pool
    assert list(runs.iterdir()) == []
    wait_for(lambda: not [pid for pid in map(int, line[1:]) if alive(pid)], 10, "workers stopped")


def test_a_caller_with_its_own_sigterm_handler_keeps_it(tmp_path: Path) -> None:
    caller = _start_script(tmp_path, """\
        import signal
        from minionize.pool import Pool
        def mine(signum, frame):
            pass
        signal.signal(signal.SIGTERM, mine)
        with Pool(1, workdir="runs") as pool:
            print(signal.getsignal(signal.SIGTERM) is mine, pool.map(abs, [-1]))
        print(signal.getsignal(signal.SIGTERM) is mine)
        with Pool(1, workdir="runs") as pool:
            pass
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with Pool(1, workdir="runs") as pool:
            print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    """)
    out, _ = caller.communicate(timeout=60)
    assert caller.returncode == 0
    assert out.split("\n") == ["True [1]", "True", "False", "True", ""]


def test_a_new_pool_removes_what_a_killed_caller_left(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    caller = _start_script(tmp_path, f"""\
        import time
        from minionize.pool import Pool
        pool = Pool(1, workdir={str(runs)!r})
        print(pool.map(abs, [-1]), pool.rundir, flush=True)
        time.sleep(60)
    """)
    assert caller.stdout is not None
    left = caller.stdout.readline().split()[1]
    caller.kill()
    caller.wait(10)
    assert os.path.isdir(left)  # SIGKILL: nothing could clean up
    with Pool(1, workdir=str(runs), keep_workdir=True) as kept:
        pass
    other_host = runs / "minionize-pool-elsewhere"
    other_host.mkdir(mode=0o700)
    (other_host / "owner.json").write_text(json.dumps(
        {"host": socket.gethostname() + "-not", "pid": 1, "start": 0}))
    with Pool(1, workdir=str(runs)) as living, Pool(1, workdir=str(runs)) as pool:
        assert not os.path.exists(left)  # its owner is gone
        assert os.path.isdir(living.rundir)  # its owner is here
        assert os.path.isdir(kept.rundir)  # kept on purpose
        assert other_host.is_dir()  # another host's: nothing known here
        assert pool.map(abs, [-4]) == [4]


def test_the_readme_squares_example_prints_what_it_shows_and_leaves_nothing(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    source = re.search(r"```python\n(# squares\.py\n.*?)```", readme, re.S)
    shown = re.search(r"```\n\$ python squares\.py\n(.*?)```", readme, re.S)
    assert source and shown
    (tmp_path / "squares.py").write_text(source.group(1))
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = subprocess.run([sys.executable, "squares.py"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**ENV, "TMPDIR": str(temp)})
    assert out.returncode == 0, out.stderr
    assert out.stdout == shown.group(1)
    assert list(temp.iterdir()) == []


class RefusesPickling:
    def __reduce__(self) -> Any:
        raise pickle.PicklingError("not this one")


def test_an_unpicklable_argument_raises_the_pickling_error_itself(tmp_path: Path) -> None:
    with Pool(1, workdir=str(tmp_path)) as pool:
        with pytest.raises(TypeError, match="cannot pickle") as info:
            pool.map(abs, [1, threading.Lock()])
        assert str(info.value).startswith("cannot send item(s) 1..1 to the workers: TypeError: ")
        assert isinstance(info.value.__cause__, TypeError)
        with pytest.raises(pickle.PicklingError, match="not this one"):
            pool.map(abs, [RefusesPickling()])
        lock = threading.Lock()
        with pytest.raises(TypeError, match="cannot pickle"):
            pool.map(lambda x: lock, [1])
        with pytest.raises(TypeError, match="cannot pickle"):
            list(pool.imap(abs, [threading.Lock()]))
        assert pool.map(abs, [-1]) == [1]


def test_an_importable_functions_traceback_shows_its_file_and_line(tmp_path: Path) -> None:
    with Pool(1, workdir=str(tmp_path), start="exec") as pool, pytest.raises(ValueError) as info:
        pool.map(failing_in_a_module, range(4))
    cause = str(info.value.__cause__)
    assert f'File "{__file__}"' in cause
    assert 'raise ValueError("from an importable module", x)  # the line a traceback shows' in cause


def test_a_function_with_no_file_keeps_its_name_and_source_lines_in_tracebacks(tmp_path: Path) -> None:
    source = "def cell(x):\n    if x == 1:\n        raise ValueError('from a cell', x)\n    return x\n"
    name = "<notebook-cell-7>"
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    space: dict[str, Any] = {}
    exec(compile(source, name, "exec"), space)
    with Pool(1, workdir=str(tmp_path), start="exec") as pool, pytest.raises(ValueError) as info:
        pool.map(space["cell"], range(3))
    cause = str(info.value.__cause__)
    assert f'File "{name}", line 3, in cell' in cause
    assert "raise ValueError('from a cell', x)" in cause


def test_a_main_functions_traceback_shows_its_script_and_line(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""\
        from minionize.pool import Pool

        def unlucky(x):
            if x == 2:
                raise ValueError("unlucky", x)
            return x

        if __name__ == "__main__":
            with Pool(1, start="exec") as pool:
                try:
                    pool.map(unlucky, range(4))
                except ValueError as exc:
                    print(exc.__cause__)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr
    assert f'File "{script}", line 5, in unlucky' in out.stdout
    assert 'raise ValueError("unlucky", x)' in out.stdout
    assert "<dynamic-code>" not in out.stdout


def test_pool_errors_stay_pool_errors(tmp_path: Path) -> None:
    with Pool(1, workdir=str(tmp_path)) as pool, pytest.raises(PoolError):
        pool.map(abs, [threading.Lock()])
