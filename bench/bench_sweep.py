"""The sweep queue's bookkeeping costs, each beside execo's ParamSweeper in the same run.

    python bench/bench_sweep.py [--params 1000000] [--cycles 20000] [--no-execo]

Figures (targets from the sweep-queue issue):
  fill N params                                  <= 5 s
  claim+ack cycles/s in one process               >= 5,000 (execo: about 700)
  the same with 10,000 params in flight elsewhere  (execo: about 200)
  the same, each ack storing a result             >= 5,000
  claim+ack cost with N params / with 1,000      <= 1.5 (best of three, interleaved)
  open a queue of N params with 90 % done        <= 1 s
Each execo figure is measured here, now, on the same disk; the ratio says how many times
better (> 1) or worse (< 1) the sweep queue is. Runs in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from typing import Any, Callable, Optional

from minionize.engines.sweep.engine import SweepEngine


def seconds(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


#: What a function task returns, in the cycles that store a result.
RESULT = '{"loss":0.0123,"params":[1,2,3],"name":"run-42"}'


def sweep_cycles(directory: str, size: int, cycles: int, result: bool = False) -> float:
    """claim+ack cycles per second on a queue of ``size`` params (filled beforehand);
    ``result``: each ack stores RESULT (results.jsonl)."""
    engine = SweepEngine(directory)
    engine.create()
    engine.open()
    if engine.status()["total"] < size:
        engine.fill(range(size))
    engine.take(1, 0.0)  # warm up
    start = time.perf_counter()
    for _ in range(cycles):
        (delivery,) = engine.take(1, 0.0)
        engine.ack(delivery, RESULT if result else None)
    rate = cycles / (time.perf_counter() - start)
    engine.close()
    return rate


def sweep_cycles_small(directory: str, size: int, cycles: int) -> float:
    """claim+ack cycles per second on queues of ``size`` params: fresh queues one after
    the other, so that every cycle runs on a queue of that size."""
    spent, done, round_ = 0.0, 0, 0
    while done < cycles:
        count = min(size - 1, cycles - done)
        rate = sweep_cycles(f"{directory}-{round_}", size, count)
        spent += count / rate
        done += count
        round_ += 1
    return cycles / spent


def sweep_mostly_done(directory: str, size: int, done: int) -> None:
    """Mark the first ``done`` params done with the journal records minions write, ten
    thousand per lock holding (a bulk path for the benchmark only)."""
    engine = SweepEngine(directory)
    engine.create()
    engine.open()
    store, owner = engine.store, engine.owner
    for start in range(0, done, 10_000):
        with store.locked():
            claimed = store.claim(min(10_000, done - start), owner, time.time() + 3600)
            for c in claimed:
                store.settle("ack", c.index, owner.minion, c.seq)
    engine.close()


def execo_cycles(directory: str, size: int, cycles: int) -> float:
    from execo_engine.sweep import ParamSweeper

    sweeper = ParamSweeper(directory, sweeps=range(size), save_sweeps=True)
    start = time.perf_counter()
    for _ in range(cycles):
        sweeper.done(sweeper.get_next())
    return cycles / (time.perf_counter() - start)


def execo_mostly_done(directory: str, size: int, done: int) -> None:
    """execo's own files, as ParamSweeper writes them: the set of params in ``sweeps``,
    one pickle per done param appended to ``done``."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "sweeps"), "wb") as f:
        pickle.dump(set(range(size)), f)
    with open(os.path.join(directory, "done"), "wb") as f:
        for param in range(done):
            pickle.dump(param, f)
    with open(os.path.join(directory, "inprogress"), "wb") as f:
        pickle.dump(set(), f)


def line(name: str, mine: float, unit: str, target: str, execo: Optional[float] = None,
         higher_is_better: bool = True) -> None:
    text = f"  {name:<44} {mine:10.3f} {unit:<9} target {target:<9}"
    if execo is not None:
        ratio = mine / execo if higher_is_better else execo / mine
        text += f" execo {execo:10.3f} {unit:<9} ({ratio:6.1f} x execo)"
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=1_000_000, help="the big queue's size")
    parser.add_argument("--cycles", type=int, default=20_000, help="claim+ack cycles per run")
    parser.add_argument("--execo-cycles", type=int, default=2_000,
                        help="claim+ack cycles for execo (it is slow)")
    parser.add_argument("--no-execo", action="store_true", help="skip the execo baselines")
    args = parser.parse_args()
    n = args.params
    try:
        import execo_engine  # noqa: F401

        execo = not args.no_execo
    except ImportError:
        execo = False
        print("execo is not installed: no baselines (pip install execo)")

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        def where(name: str) -> str:
            return os.path.join(tmp, name)

        print(f"sweep queue vs execo ParamSweeper, {n:,} params, in a temporary directory")

        # -- fill ----------------------------------------------------------------------
        def fill() -> None:
            engine = SweepEngine(where("fill"))
            engine.create()
            engine.open()
            engine.fill(range(n))

        mine = seconds(fill)
        base = None
        if execo:
            from execo_engine.sweep import ParamSweeper

            base = seconds(lambda: ParamSweeper(where("fill-execo"), sweeps=range(n),
                                                save_sweeps=True))
        line(f"fill {n:,} params", mine, "s", "<= 5", base, higher_is_better=False)

        # -- claim+ack in one process --------------------------------------------------
        # Interleaved and best of three: this machine's load varies more than the costs.
        small = big = 0.0
        for k in range(3):
            small = max(small, sweep_cycles_small(where(f"small{k}"), 1_000, args.cycles))
            big = max(big, sweep_cycles(where("fill"), n, args.cycles))
        mid = sweep_cycles(where("mid"), 100_000, args.cycles)
        base = execo_cycles(where("mid-execo"), 100_000, args.execo_cycles) if execo else None
        line("claim+ack cycles/s (100,000 params)", mid, "cycles/s", ">= 5000", base)

        # -- the same with 10,000 params in flight elsewhere ---------------------------
        other = SweepEngine(where("mid"))
        other.create()
        other.open()
        assert len(other.take(10_000, 0.0)) == 10_000
        busy = sweep_cycles(where("mid"), 100_000, args.cycles)
        base = None
        if execo:
            # execo's in-progress file as another minion holding 10,000 params leaves it.
            with open(os.path.join(where("mid-execo"), "inprogress"), "wb") as f:
                pickle.dump(set(range(90_000, 100_000)), f)
            base = execo_cycles(where("mid-execo"), 100_000, args.execo_cycles // 4)
        line("  ... with 10,000 in flight elsewhere", busy, "cycles/s", ">= 5000", base)
        kept = sweep_cycles(where("results"), 100_000, args.cycles, result=True)
        line("  ... each ack storing a result", kept, "cycles/s", ">= 5000")

        # -- cost at N params against 1,000 --------------------------------------------
        line(f"claim+ack cost {n:,} / 1,000 params", small / big, "x", "<= 1.5")
        print(f"  {'':<44} ({small:.0f} and {big:.0f} cycles/s)")
        if execo:
            execo_small = execo_cycles(where("small-execo"), 1_000, min(args.execo_cycles, 999))
            execo_big = execo_cycles(where("big-execo"), n, min(args.execo_cycles, 200))
            print(f"  {'':<44} execo: {execo_small / execo_big:.1f} x "
                  f"({execo_small:.0f} and {execo_big:.0f} cycles/s)")

        # -- open with 90 % done -------------------------------------------------------
        done = n * 9 // 10
        sweep_mostly_done(where("fill"), n, done)

        def reopen() -> None:
            engine = SweepEngine(where("fill"))
            engine.create()
            engine.open()
            status = engine.status()
            assert status["done"] >= done, status
            engine.close()

        mine = min(seconds(reopen) for _ in range(3))
        base = None
        if execo:
            from execo_engine.sweep import ParamSweeper

            execo_mostly_done(where("open-execo"), n, done)
            base = seconds(lambda: ParamSweeper(where("open-execo")))
        line(f"open {n:,} params, {done:,} done", mine, "s", "<= 1", base, higher_is_better=False)
        files = len(os.listdir(where("fill")))
        print(f"  files in the {n:,}-param queue: {files} (target <= 100)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
