from __future__ import annotations

import subprocess
import sys

import minionize


def test_original_names_import() -> None:
    from minionize import DockerCallback, FuncCallback, ProcessCallback, minionizer

    assert callable(minionizer) and FuncCallback and ProcessCallback and DockerCallback


def test_every_export_resolves_and_all_is_complete() -> None:
    assert set(minionize.__all__) - {"__version__"} == set(minionize._EXPORTS)
    for name in minionize.__all__:
        assert getattr(minionize, name) is not None


def test_import_is_light() -> None:
    # `minionize --version` must start fast: the package imports nothing heavy.
    code = "import sys, minionize; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('google', 'redis', 'docker', 'pulsar', 'rich', 'dotenv', 'filelock')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
