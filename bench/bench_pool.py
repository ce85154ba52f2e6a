"""minionize.pool.Pool against multiprocessing.Pool, measured in one run.

    python bench/bench_pool.py [--processes 2] [--items 10000] [--maps 10] [--repeat 3]

* ``map`` of ``--items`` tiny items (``abs``), default chunksize, on a started pool (the
  best of ``--maps`` maps in a row: one map takes a few ms, which the other work of a
  busy machine makes vary several times over);
* the same, pool start and stop included (what ``with Pool(n) as p: p.map(...)`` costs);
* the CPU time of a warm ``map``, the caller's and every worker process's (``/proc``);
* the latency of a one-item ``map`` on a started pool (median of 20 calls);
* a CPU-bound function (a few ms per item) over ``--cpu-items`` items.

Prints each figure for both and minionize's ratio (for times: multiprocessing / minionize,
so that above 1 is better, as for rates).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

WORK = 100_000


def burn(param: int) -> int:
    total = 0
    for i in range(WORK):
        total += i * param % 7
    return total


def _cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` so far (Linux; 0 when unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _family(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers, and theirs: a minion's function processes)."""
    found = [pid]
    for process in found:
        try:
            for task in os.listdir(f"/proc/{process}/task"):
                with open(f"/proc/{process}/task/{task}/children") as handle:
                    found += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return found


def cpu_per_map(pool: Any, items: list[int], maps: int) -> float:
    """CPU milliseconds per warm map, the caller and every worker process together (the
    steadier figure on a busy machine: on 2 cores, it bounds the rate)."""
    family = _family(os.getpid())
    before = {pid: _cpu(pid) for pid in family}
    for _ in range(maps):
        pool.map(abs, items)
    return 1000 * sum(_cpu(pid) - before[pid] for pid in family) / maps


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(make: Callable[[], Any], items: list[int], cpu_items: list[int],
            maps: int = 10) -> dict[str, float]:
    out: dict[str, float] = {}
    out["cold map (start + map + stop), s"] = timed(lambda: _cold(make, items))
    pool = make()
    try:
        pool.map(abs, [1])  # warm up
        out["warm map, s"] = min(timed(lambda: pool.map(abs, items)) for _ in range(max(1, maps)))
        out["CPU per warm map, all processes, ms"] = cpu_per_map(pool, items, 10 * max(1, maps))
        out["one-item map latency, ms"] = 1000 * statistics.median(
            timed(lambda: pool.map(abs, [1])) for _ in range(20))
        out["cpu-bound map, items/s"] = len(cpu_items) / timed(lambda: pool.map(burn, cpu_items))
    finally:
        pool.terminate()
    return out


def _cold(make: Callable[[], Any], items: list[int]) -> None:
    pool = make()
    try:
        pool.map(abs, items)
    finally:
        pool.terminate()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--cpu-items", type=int, default=200)
    parser.add_argument("--maps", type=int, default=10, help="warm maps per run (the best is kept)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each, interleaved; the best of each figure is kept")
    args = parser.parse_args()
    from minionize.pool import Pool

    n = args.processes
    items = list(range(-args.items // 2, args.items // 2))
    cpu_items = list(range(args.cpu_items))
    with tempfile.TemporaryDirectory() as workdir:
        makers: dict[str, Callable[[], Any]] = {
            "multiprocessing": lambda: multiprocessing.get_context("fork").Pool(n),
            "minionize": lambda: Pool(n, workdir=workdir),
        }
        best: dict[str, dict[str, float]] = {}
        for _ in range(max(1, args.repeat)):
            for name, make in makers.items():
                figures = measure(make, items, cpu_items, args.maps)
                kept = best.setdefault(name, figures)
                for key, value in figures.items():
                    better = max if key.endswith("/s") else min
                    kept[key] = better(kept[key], value)
    mp, mine = best["multiprocessing"], best["minionize"]
    print(f"{n} processes, {args.items} tiny items, {args.cpu_items} CPU-bound items, "
          f"best of {max(1, args.repeat)} interleaved runs")
    print(f"  {'':34} {'multiprocessing':>16} {'minionize':>12} {'ratio':>7}")
    for key in mp:
        ratio = mine[key] / mp[key] if key.endswith("/s") else mp[key] / mine[key]
        print(f"  {key:34} {mp[key]:16.4g} {mine[key]:12.4g} {ratio:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
