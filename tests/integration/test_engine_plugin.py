"""Engines are found by name through the entry-point group ``minionize.engines``.

A tiny out-of-tree engine is made visible to real ``minionize`` processes the way an
installed distribution is: a ``*.dist-info`` directory holding ``METADATA`` and
``entry_points.txt``, on the subprocess's PYTHONPATH (no pip install needed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
"""tinyqueue: a minionize engine that is not part of minionize."""
from __future__ import annotations

import os
import threading

from minionize.engines.base import Delivery, Engine


class TinyEngine(Engine):
    name = "tiny"

    def __init__(self, params, log):
        self.todo = [Delivery(p, f"p{i}") for i, p in enumerate(params)]
        self.log = log
        self.held = 0
        self.lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings):
        params = settings.env.required("TINY_PARAMS", "comma-separated params").split(",")
        return cls(params, settings.env.required("TINY_LOG", "a file"))

    def take(self, max_count, timeout):
        with self.lock:
            batch, self.todo = self.todo[:max_count], self.todo[max_count:]
            self.held += len(batch)
            return batch

    def exhausted(self):
        with self.lock:
            return not self.todo and not self.held

    def _note(self, what, delivery):
        with self.lock:
            with open(self.log, "a") as out:
                out.write(f"{what} {delivery.param} {delivery.attempt}\\n")
            self.held -= 1

    def ack(self, delivery):
        self._note("ack", delivery)

    def retry(self, delivery, reason):
        self._note("retry", delivery)
        with self.lock:
            self.todo.append(Delivery(delivery.param, delivery.id, delivery.attempt + 1))

    def release(self, delivery):
        self._note("release", delivery)

    def dead_letter(self, delivery, reason):
        self._note("dead", delivery)

    def describe(self):
        return "tiny in-memory engine"
'''


def minionize_command() -> list[str]:
    exe = shutil.which("minionize")
    return [exe] if exe else [sys.executable, "-m", "minionize"]


def run_minionize(
    tmp_path: Path, pythonpath: Path, env: dict[str, str], *argv: str
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full["PYTHONPATH"] = os.pathsep.join(
        [str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    full.update(env)
    return subprocess.run(
        [*minionize_command(), *argv], cwd=tmp_path, env=full, capture_output=True,
        text=True, timeout=60,
    )


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """A directory that looks like site-packages holding the tinyqueue distribution."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tinyqueue.py").write_text(PLUGIN)
    info = site / "tinyqueue-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyqueue\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[minionize.engines]\ntiny = tinyqueue:TinyEngine\n")
    return site


def test_plugin_engine_is_used_by_name(tmp_path: Path, plugin_dir: Path) -> None:
    log = tmp_path / "settled"
    out = tmp_path / "out"
    result = run_minionize(
        tmp_path, plugin_dir,
        {"MINION_ENGINE": "tiny", "TINY_PARAMS": "a,b,fail", "TINY_LOG": str(log),
         "MINION_MAX_ATTEMPTS": "2"},
        "sh", "-c", f'echo "$1" >> {out}; test "$1" != fail', "task",
    )

    assert result.returncode == 1, result.stderr  # "fail" was dead-lettered
    assert sorted(out.read_text().split()) == ["a", "b", "fail", "fail"]
    assert sorted(log.read_text().splitlines()) == [
        "ack a 1", "ack b 1", "dead fail 2", "retry fail 1"]


def test_unknown_engine_lists_the_plugins(tmp_path: Path, plugin_dir: Path) -> None:
    result = run_minionize(tmp_path, plugin_dir, {"MINION_ENGINE": "nope"}, "true")

    assert result.returncode == 2
    assert "MINION_ENGINE='nope'" in result.stderr and "tiny" in result.stderr


@pytest.mark.parametrize(
    ("engine", "module", "env"),
    [("redis", "redis", {}), ("pulsar", "pulsar", {"PULSAR_TOPIC": "params"})],
)
def test_missing_extra_says_what_to_install(
    tmp_path: Path, engine: str, module: str, env: dict[str, str]
) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / f"{module}.py").write_text(
        textwrap.dedent(f"""\
            raise ImportError("No module named {module!r} (shadowed by the test)")
        """)
    )
    result = run_minionize(tmp_path, shadow, {"MINION_ENGINE": engine, **env}, "true")

    assert result.returncode == 2, result.stderr
    assert f"pip install 'minionize[{engine}]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback
