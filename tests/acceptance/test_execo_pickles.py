"""Reading execo pickles stays bounded in time, memory and depth (issue 11 item 6).

Each hostile file is read by ``minionize`` itself, as a user would meet it
(``MINION_ENGINE=execo minionize true`` in the directory), in a child process capped at
1 GiB of address space and a 30 s timeout, so a regression fails instead of freezing.
"""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minionize.engines.sweep.execo_import import read_execo_directory
from minionize.errors import EngineError
from tests.services import script


def binget(i: int) -> bytes:
    return b"h" + bytes([i])  # BINGET


def binput(i: int) -> bytes:
    return b"q" + bytes([i])  # BINPUT


def tuple_bomb(levels: int = 30) -> bytes:
    """set([t]) where t0 = (1,) and t_i = (t_i-1, t_i-1): 272 bytes, 2**levels tuples
    to hash when the set is built."""
    body = b"K\x01\x85" + binput(0) + b"0"
    for i in range(1, levels + 1):
        body += binget(i - 1) + binget(i - 1) + b"\x86" + binput(i) + b"0"  # POP
    return b"\x80\x02" + body + b"c__builtin__\nset\n(" + binget(levels) + b"l\x85R."


def list_bomb(levels: int = 30) -> bytes:
    """[[l, l], [l, l]] ... 30 levels of one memoized list: 2**30 values once expanded."""
    body = b"]" + binput(0) + b"0"
    for i in range(1, levels + 1):
        body += b"(" + binget(i - 1) + binget(i - 1) + b"l" + binput(i) + b"0"
    return b"\x80\x02" + body + b"(" + binget(levels) + b"l."


def deep_tuple(depth: int = 50_000) -> bytes:
    return b"\x80\x02K\x01" + b"\x85" * depth + b"."


def bytes_bomb() -> bytes:
    """bytes(8 GiB) through an allowed callable."""
    return b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x7f\x85R."


def cyclic() -> bytes:
    loop: list[object] = []
    loop.append(loop)
    return pickle.dumps([loop])


HOSTILE = {
    "cyclic": cyclic(),
    "tuple-bomb": tuple_bomb(),
    "list-bomb": list_bomb(),
    "deep-tuple": deep_tuple(),
    "bytes-bomb": bytes_bomb(),
    "deep-list": b"\x80\x02" + b"(" * 50_000 + b"K\x01" + b"l" * 50_000 + b".",
}


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_pickle_is_refused_in_one_line_within_seconds(
    name: str, tmp_path: Path, user_env: dict[str, str]
) -> None:
    queue = tmp_path / "sweeps"
    queue.mkdir()
    assert len(HOSTILE[name]) < 200_000
    (queue / "sweeps").write_bytes(HOSTILE[name])
    started = time.monotonic()
    out = subprocess.run([script("minionize"), "true"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=30, preexec_fn=_cap_memory,
                         env={**user_env, "MINION_ENGINE": "execo"})
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(out.stderr.splitlines()) == 1 and str(Path("sweeps") / "sweeps") in out.stderr
    assert elapsed < 5, elapsed


def test_many_small_bombs_share_one_allowance(tmp_path: Path, user_env: dict[str, str]) -> None:
    # Each of these 60 records describes 2**19 - 1 values, under the allowance of one pickle;
    # together they would build 31 million values.
    queue = tmp_path / "sweeps"
    queue.mkdir()
    (queue / "sweeps").write_bytes(pickle.dumps({1, 2}))
    (queue / "done").write_bytes(list_bomb(18) * 60)
    started = time.monotonic()
    out = subprocess.run([script("minionize"), "true"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, preexec_fn=_cap_memory,
                         env={**user_env, "MINION_ENGINE": "execo"})
    assert out.returncode == 2 and "sweeps/done holds values that reuse" in out.stderr, out.stderr
    assert len(out.stderr.splitlines()) == 1 and time.monotonic() - started < 5


def test_a_list_of_lists_is_adopted_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "sweeps").write_bytes(pickle.dumps([[1, 2], [3]]))
    (tmp_path / "done").write_bytes(pickle.dumps([3]))
    assert read_execo_directory(str(tmp_path)) == ([[1, 2]], [[3]])


def test_a_param_json_cannot_hold_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "sweeps").write_bytes(pickle.dumps({1, float("nan")}))
    with pytest.raises(EngineError, match=r"sweeps.*NaN"):
        read_execo_directory(str(tmp_path))


def test_a_big_honest_sweep_is_read_quickly(tmp_path: Path) -> None:
    params = {(i, f"name-{i % 10}", i / 7) for i in range(100_000)}
    (tmp_path / "sweeps").write_bytes(pickle.dumps(params))
    started = time.monotonic()
    todo, done = read_execo_directory(str(tmp_path))
    assert len(todo) == 100_000 and done == [] and time.monotonic() - started < 10


if __name__ == "__main__":  # write the hostile files, to try them by hand
    for key, data in HOSTILE.items():
        Path(sys.argv[1], key).write_bytes(data)
    print(os.listdir(sys.argv[1]))


@pytest.mark.parametrize("make", [b"(c__builtin__\ndict\no", b"(i__builtin__\ndict\n"])
def test_a_bomb_of_objects_filled_after_they_were_memoized_is_refused(
    tmp_path: Path, make: bytes
) -> None:
    # d0 = dict() (OBJ or INST) memoized empty, then filled; d_i = {a: d_i-1, b: d_i-1}:
    # what is added after the memo took an object counts wherever the memo hands it out.
    body = make + binput(0) + b"X\x01\x00\x00\x00aK\x01s0"
    for i in range(1, 31):
        body += (make + binput(i) + b"(X\x01\x00\x00\x00a" + binget(i - 1)
                 + b"X\x01\x00\x00\x00b" + binget(i - 1) + b"u0")
    data = b"\x80\x02" + body + b"c__builtin__\nset\n(" + binget(30) + b"l\x85R."
    (tmp_path / "sweeps").write_bytes(data)
    started = time.monotonic()
    with pytest.raises(EngineError, match="memo bomb"):
        read_execo_directory(str(tmp_path))
    assert time.monotonic() - started < 5
