"""A dry run (`minionize -n echo`) of a 1,000,000-param sweep queue.

    python bench/bench_dry_run.py [--params 1000000] [--repeat 3]

Fills a sweep queue in a temporary directory, then times `minionize -n echo` as a user
runs it (a new process each time, best of --repeat): until its first line reaches a
pipe and a terminal (a pty), through `| head -1`, and in all (`> /dev/null`). Beside
each, a baseline measured in the same run, and the ratio: the same dry run on an empty
queue (the start-up alone) for the first line and `| head -1`, `cat params.jsonl` for
the whole.
Target: the first line within 1 s.
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from minionize.engines.sweep.engine import SweepEngine


def best(repeat: int, measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(repeat))


def shell(command: str, cwd: Path) -> Callable[[], float]:
    def measure() -> float:
        began = time.perf_counter()
        subprocess.run(["sh", "-c", command], cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - began
    return measure


def first_line_on_pipe(argv: list[str], cwd: Path) -> Callable[[], float]:
    def measure() -> float:
        began = time.perf_counter()
        with subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE) as process:
            assert process.stdout is not None
            process.stdout.readline()
            elapsed = time.perf_counter() - began
            process.kill()
        return elapsed
    return measure


def first_line_on_terminal(argv: list[str], cwd: Path) -> Callable[[], float]:
    def measure() -> float:
        main, side = pty.openpty()
        began = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, stdout=side, stderr=subprocess.DEVNULL)
        os.close(side)
        seen = b""
        try:
            while b"\n" not in seen:
                ready, _, _ = select.select([main], [], [], 60)
                if not ready:
                    raise RuntimeError("no line on the terminal within 60 s")
                seen += os.read(main, 4096)
            return time.perf_counter() - began
        finally:
            process.kill()
            process.wait()
            os.close(main)
    return measure


def quoted(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    minionize = [sys.executable, "-m", "minionize.cli.minion"]
    dry = [*minionize, "-n", "echo"]
    dry_text = quoted(dry)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        began = time.perf_counter()
        engine = SweepEngine(str(cwd / "sweeps"))
        engine.create()
        engine.fill(range(args.params))
        engine.close()
        print(f"{args.params} params filled in {time.perf_counter() - began:.1f} s; "
              f"best of {args.repeat}")
        empty = cwd / "empty"
        SweepEngine(str(empty / "sweeps")).create()
        startup = best(args.repeat, shell(dry_text, empty))
        cat = best(args.repeat, shell("cat sweeps/params.jsonl", cwd))
        rows = [
            ("first line, on a pipe", best(args.repeat, first_line_on_pipe(dry, cwd)),
             startup, "start-up"),
            ("first line, on a terminal", best(args.repeat, first_line_on_terminal(dry, cwd)),
             startup, "start-up"),
            ("through | head -1", best(args.repeat, shell(f"{dry_text} | head -1", cwd)),
             startup, "start-up"),
            ("in all, > /dev/null", best(args.repeat, shell(dry_text, cwd)),
             cat, "cat params.jsonl"),
        ]
    print(f"  baseline: minionize -n echo, empty queue    {startup:7.3f} s  (start-up)")
    print(f"  baseline: cat params.jsonl                  {cat:7.3f} s")
    for what, seconds, baseline, name in rows:
        print(f"  minionize -n echo, {what:26} {seconds:7.3f} s  "
              f"({seconds / baseline:6.1f} x {name})")
    first = min(rows[0][1], rows[1][1])
    print(f"  target: first line within 1 s: {'met' if max(rows[0][1], rows[1][1]) <= 1 else 'missed'}"
          f" ({first:.3f} s at best)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
