"""Adopting a queue directory written by execo's ParamSweeper, and refusing code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from minionize.engines.sweep.engine import SweepEngine
from minionize.engines.sweep.execo_import import PlainDataUnpickler, read_execo_directory
from minionize.errors import EngineError
from tests.conftest import drain

execo_sweep = pytest.importorskip("execo_engine.sweep", reason="execo is a test dependency")


def adopt(path: Path) -> SweepEngine:
    e = SweepEngine(str(path))
    e.open()
    return e


def test_a_range_sweep_is_adopted_in_order(tmp_path: Path) -> None:
    sweeper = execo_sweep.ParamSweeper(str(tmp_path / "sweeps"), sweeps=range(10), save_sweeps=True)
    for _ in range(3):
        sweeper.done(sweeper.get_next())
    in_progress = sweeper.get_next()  # a minion that died: its param comes back
    e = adopt(tmp_path / "sweeps")
    status = e.status()
    assert (status["done"], status["todo"], status["total"]) == (3, 7, 10)
    remaining = drain(e)
    assert in_progress in remaining and sorted(remaining) == remaining and len(remaining) == 7


def test_sweep_mappings_become_plain_json_mappings(tmp_path: Path) -> None:
    combos = execo_sweep.sweep({"a": [1, 2], "b": ["x", "y"], "c": [0.5]})
    sweeper = execo_sweep.ParamSweeper(str(tmp_path / "sweeps"), sweeps=combos, save_sweeps=True)
    sweeper.done(sweeper.get_next())
    e = adopt(tmp_path / "sweeps")
    params = drain(e)
    assert all(type(p) is dict for p in params) and len(params) == 3
    everything = [r["param"] for r in e.list("done")]  # the adopted one and the 3 just run
    assert sorted((p["a"], p["b"], p["c"]) for p in everything) == [
        (1, "x", 0.5), (1, "y", 0.5), (2, "x", 0.5), (2, "y", 0.5)
    ]


def test_adoption_happens_once(tmp_path: Path) -> None:
    sweeper = execo_sweep.ParamSweeper(str(tmp_path / "sweeps"), sweeps=range(4), save_sweeps=True)
    first = adopt(tmp_path / "sweeps")
    drain(first)
    sweeper.set_sweeps(range(100), save_sweeps=True)  # execo's files are no longer read
    again = adopt(tmp_path / "sweeps")
    assert again.status()["total"] == 4 and again.exhausted()


def test_a_truncated_done_file_is_tolerated(tmp_path: Path) -> None:
    sweeper = execo_sweep.ParamSweeper(str(tmp_path / "sweeps"), sweeps=range(5), save_sweeps=True)
    sweeper.done(sweeper.get_next())
    sweeper.done(sweeper.get_next())
    done = tmp_path / "sweeps" / "done"
    done.write_bytes(done.read_bytes()[:-3])
    assert adopt(tmp_path / "sweeps").status()["done"] == 1


class Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, ("touch pwned",))


class Custom:
    pass


@pytest.mark.parametrize("name", ["sweeps", "done", "inprogress"])
def test_a_pickle_of_an_arbitrary_class_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    queue = tmp_path / "sweeps"
    execo_sweep.ParamSweeper(str(queue), sweeps=range(3), save_sweeps=True)
    (queue / name).write_bytes(pickle.dumps({Exploit()}))
    with pytest.raises(EngineError) as caught:
        adopt(queue)
    message = str(caught.value)
    assert "refuses to load" in message and "system" in message and str(queue / name) in message
    assert not (tmp_path / "pwned").exists()


def test_a_custom_class_is_named_in_the_refusal(tmp_path: Path) -> None:
    (tmp_path / "sweeps").write_bytes(pickle.dumps({1, 2}))
    (tmp_path / "done").write_bytes(pickle.dumps(Custom()))
    with pytest.raises(EngineError, match=r"test_execo_import\.Custom"):
        read_execo_directory(str(tmp_path))


def test_plain_data_is_read_at_every_protocol(tmp_path: Path) -> None:
    value = {1, "a", (1, 2), frozenset({3}), execo_sweep.HashableDict(k=(1, 2.5, None, True))}
    import io

    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        loaded = PlainDataUnpickler(io.BytesIO(pickle.dumps(value, protocol))).load()
        assert len(loaded) == 5
        assert {"k": (1, 2.5, None, True)} in [x for x in loaded if isinstance(x, dict)]
