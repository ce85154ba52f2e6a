"""CPU per task of this checkout against an earlier revision, interleaved in one run.

    python bench/bench_revisions.py REV [--tasks 2000] [--rounds 6] [--engine sweep|file]

Checks REV out in a temporary git worktree, then runs ``minionize -j 2 true`` over
``--tasks`` params with each tree in turn (before, after, after, before, ...), and
prints the CPU time (user + system, the minion and its children) per task of each, the
median over the rounds, and the ratio after / before. CPU time, not wall time: it moves
less when the machine is busy. For a refactoring that must not cost CPU (within 3 %).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def cpu_per_task(tree: Path, tasks: int, engine: str) -> float:
    """Microseconds of CPU per task of one run of ``tree``'s minionize."""
    work = tempfile.mkdtemp(prefix="minionize-bench-")
    try:
        env = {**os.environ, "PYTHONPATH": str(tree),
               "EXECO_PERSISTENCE_DIR": os.path.join(work, "sweeps")}
        env.pop("MINION_ENGINE", None)
        argv = [sys.executable, "-m", "minionize", "-j", "2"]
        if engine == "sweep":
            subprocess.run([sys.executable, "-m", "minionize.cli.queue", "fill", f"1..{tasks}"],
                           env=env, cwd=work, check=True, capture_output=True)
        else:
            params = os.path.join(work, "params")
            with open(params, "w") as out:
                out.write("".join(f"{n}\n" for n in range(tasks)))
            argv += ["--file", params]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([*argv, "true"], env=env, cwd=work, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return spent / tasks * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the earlier revision (a commit, a tag, a branch)")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--engine", choices=("sweep", "file"), default="sweep")
    args = parser.parse_args()
    worktree = Path(tempfile.mkdtemp(prefix="minionize-before-")) / "tree"
    subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(worktree),
                    args.rev], check=True)
    trees = {"before": worktree, "after": HERE}
    runs: dict[str, list[float]] = {name: [] for name in trees}
    try:
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(list(trees)))
            for name in order:
                runs[name].append(cpu_per_task(trees[name], args.tasks, args.engine))
    finally:
        subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(worktree)],
                       check=False)
        shutil.rmtree(worktree.parent, ignore_errors=True)
    for name, values in runs.items():
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:6s} ({args.rev if name == 'before' else 'this checkout'}): "
              f"{statistics.median(values):.0f} us CPU per task (runs: {shown})")
    ratio = statistics.median(runs["after"]) / statistics.median(runs["before"])
    print(f"after / before: {ratio:.3f} ({args.tasks} tasks of `true`, {args.engine} queue, "
          f"-j 2, {args.rounds} rounds interleaved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
