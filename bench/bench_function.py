"""Function throughput: a CPU-bound Python function x N through a minion (FuncCallback,
worker processes, sweep queue) against multiprocessing.Pool at the same concurrency,
measured in one run.

    python bench/bench_function.py [--tasks 200] [--concurrency 2] [--work 100000] [--repeat 7]

Each task runs a pure-Python loop of ``--work`` iterations (a few ms). Prints tasks/s
for the serial loop, ``multiprocessing.Pool(c).map`` and the minion, and the ratio.
Target: minionize >= 0.95 x multiprocessing.Pool.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from typing import Optional

WORK = 100_000


def burn(param: int) -> int:
    """CPU-bound: a pure-Python loop (holds the GIL all along)."""
    total = 0
    for i in range(WORK):
        total += i * param % 7
    return total


def serial(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        burn(i)
    return n / (time.perf_counter() - start)


def mp_pool(n: int, concurrency: int, chunksize: Optional[int] = None) -> float:
    """multiprocessing.Pool's map (its default chunks: n / (4 x concurrency) tasks each),
    or imap_unordered one task at a time (as a minion takes them)."""
    start, before = time.perf_counter(), cpu(resource.RUSAGE_SELF) + cpu(resource.RUSAGE_CHILDREN)
    with multiprocessing.get_context("fork").Pool(concurrency) as pool:
        if chunksize is None:
            pool.map(burn, range(n))
        else:
            for _ in pool.imap_unordered(burn, range(n), chunksize):
                pass
    rate = n / (time.perf_counter() - start)
    pool.join()  # reaped: their CPU time is counted
    if chunksize is None:
        OVERHEAD["mp total"] = (cpu(resource.RUSAGE_SELF) + cpu(resource.RUSAGE_CHILDREN) - before) / n
    return rate


#: The minion's own CPU seconds per task, and its workers', in the last minion run.
OVERHEAD: dict[str, float] = {}



def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def minion(n: int, concurrency: int, engine_name: str) -> float:
    from minionize import FuncCallback
    from minionize.config import Settings
    from minionize.engines.base import Engine
    from minionize.minion.run import Minion
    from minionize.testing import MemoryEngine

    with tempfile.TemporaryDirectory() as tmp:
        engine: Engine
        if engine_name == "sweep":
            from minionize.engines.sweep.engine import SweepEngine

            engine = SweepEngine(os.path.join(tmp, "sweeps"))
            engine.fill(range(n))
        else:
            engine = MemoryEngine(range(n))
        settings = Settings.from_env({}, concurrency=concurrency)
        start, own, workers = time.perf_counter(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
        code = Minion(FuncCallback(burn), engine, settings=settings).run()
        rate = n / (time.perf_counter() - start)
        OVERHEAD["minion"] = (cpu(resource.RUSAGE_SELF) - own) / n
        OVERHEAD["workers"] = (cpu(resource.RUSAGE_CHILDREN) - workers) / n
    if code != 0:
        raise SystemExit(f"the minion failed (exit code {code})")
    return rate


def main() -> int:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--work", type=int, default=WORK)
    parser.add_argument("--engine", default="sweep", choices=("sweep", "memory"))
    parser.add_argument("--repeat", type=int, default=7,
                        help="runs of each, interleaved; the best of each is kept (default 3)")
    args = parser.parse_args()
    WORK = args.work
    n, c = args.tasks, args.concurrency
    label = f"minionize FuncCallback, -j {c} ({args.engine} queue)"
    results: dict[str, float] = {}
    for _ in range(max(1, args.repeat)):
        for name, run in (
            ("serial loop", lambda: serial(max(1, n // 4))),
            (f"multiprocessing.Pool({c}).map", lambda: mp_pool(n, c)),
            (f"multiprocessing.Pool({c}).imap_unordered, chunksize=1", lambda: mp_pool(n, c, 1)),
            (label, lambda: minion(n, c, args.engine)),
        ):
            results[name] = max(results.get(name, 0.0), run())
    print(f"{n} tasks of a {WORK}-iteration Python loop, best of {max(1, args.repeat)} interleaved runs")
    for name, rate in results.items():
        print(f"  {name:<56} {rate:8.1f} tasks/s")
    ratio = results[label] / results[f"multiprocessing.Pool({c}).map"]
    single = results[label] / results[f"multiprocessing.Pool({c}).imap_unordered, chunksize=1"]
    print(f"  minionize / multiprocessing.Pool map = {ratio:.2f}  (target >= 0.95); "
          f"/ imap_unordered one by one = {single:.2f}")
    mine, task = OVERHEAD["minion"], OVERHEAD["workers"]
    print(f"  CPU per task: the minion {mine * 1e6:.0f} us, the function's worker {task * 1e3:.2f} ms "
          f"(the minion's share: {mine / (mine + task):.1%})")
    # What a machine of c free cores would do: c / CPU per task, for both (the load of
    # other work on this machine moves the rates above, much less the CPU per task).
    print(f"  CPU per task, everything: multiprocessing map {OVERHEAD['mp total'] * 1e3:.2f} ms, "
          f"minionize {(mine + task) * 1e3:.2f} ms: CPU-bound ceiling ratio "
          f"{OVERHEAD['mp total'] / (mine + task):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
