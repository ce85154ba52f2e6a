"""Process overhead: `true` x N through minionize, against xargs, GNU parallel and the
physical limit (two threads that do nothing but posix_spawn `true` and wait), in one run.

minionize and xargs run `true PARAM`; coreutils' `true` with an argument sets up its
locale (it checks for --help) and costs about a third more than `true` alone, so the
physical limit is measured both ways and the ratio is taken against the same argv.

    python bench/bench_process.py [--tasks 10000] [--engine file|sweep] [--reporter null|json]
                                  [--joblog] [--sandbox]

Prints tasks/s for each and minionize's ratio to the bare loop and to xargs.
Target: minionize >= 0.8 x the bare loop (>= 0.85 with --joblog, which appends a line
per task to a joblog in the run's directory). --sandbox also runs minionize --sandbox DIR
(a fresh directory per task, entered through sh: its cost per task is printed; without
--sandbox nothing of it is on a task's path).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

TRUE = shutil.which("true") or "/bin/true"


def bare_loop(n: int, parallel: int = 2, with_param: bool = True) -> float:
    """Spawn `true` (with the param as its argument, like minionize) n times,
    `parallel` at a time, doing nothing else."""
    counter = iter(range(n))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            argv = [TRUE, str(i)] if with_param else [TRUE]
            pid = os.posix_spawn(TRUE, argv, os.environ)
            os.waitpid(pid, 0)

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return n / (time.perf_counter() - start)


def timed(cmd: list[str], stdin: bytes, env: dict[str, str] | None = None, cwd: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, input=stdin, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


#: CPU seconds per task (minionize and its `true` children) of the fastest run of each label.
CPU_PER_TASK: dict[str, float] = {}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def minionize_rate(n: int, lines: bytes, engine: str, reporter: str, joblog: bool = False,
                   sandbox: bool = False) -> float:
    """One run of `minionize -j 2 true` over n params, on a fresh queue."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MINION_CONCURRENCY="2", MINION_REPORTER=reporter,
                   REPORTER_JSON_DIRECTORY=os.path.join(tmp, "report"))
        if engine == "file":
            path = os.path.join(tmp, "params.txt")
            with open(path, "wb") as handle:
                handle.write(lines)
            env.update(MINION_ENGINE="file", FILE_PATH=path)
        else:
            env.update(MINION_ENGINE="sweep", EXECO_PERSISTENCE_DIR=os.path.join(tmp, "sweeps"))
            subprocess.run([sys.executable, "-m", "minionize.cli.queue", "fill", f"0..{n - 1}"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
        flags = ["--joblog", os.path.join(tmp, "joblog")] if joblog else []
        if sandbox:
            flags += ["--sandbox", os.path.join(tmp, "work")]
        key = ("joblog" if joblog else "") + ("sandbox" if sandbox else "")
        cpu = children_cpu()
        rate = n / timed([sys.executable, "-m", "minionize", *flags, TRUE], b"", env=env, cwd=tmp)
        per_task = (children_cpu() - cpu) / n
        CPU_PER_TASK[key] = min(CPU_PER_TASK.get(key, per_task), per_task)
        if joblog:
            with open(os.path.join(tmp, "joblog")) as handle:
                assert sum(1 for _ in handle) == n + 1, "the joblog misses lines"
        return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--engine", default="file", choices=("file", "sweep"))
    parser.add_argument("--reporter", default="null")
    parser.add_argument("--joblog", action="store_true",
                        help="run minionize with --joblog, and without it to compare")
    parser.add_argument("--sandbox", action="store_true",
                        help="also run minionize with --sandbox, to measure its cost")
    parser.add_argument("--without-parallel", action="store_true",
                        help="skip GNU parallel (the slowest run)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each, interleaved; the best of each is kept (default 3)")
    args = parser.parse_args()
    n = args.tasks
    lines = "".join(f"{i}\n" for i in range(n)).encode()
    minionize = [sys.executable, "-m", "minionize"]
    label = f"minionize -j 2 true ({args.engine} engine, {args.reporter} reporter" + (
        ", --joblog)" if args.joblog else ")")
    runs: dict[str, Callable[[], float]] = {
        "bare loop, true PARAM (2 threads posix_spawn+wait)": lambda: bare_loop(n),
        "bare loop, true without argument": lambda: bare_loop(n, with_param=False),
        "xargs -P 2 -n 1 true": lambda: n / timed(["xargs", "-P", "2", "-n", "1", TRUE], lines),
        label: lambda: minionize_rate(n, lines, args.engine, args.reporter, args.joblog),
    }
    if args.joblog:  # the same without the joblog, interleaved, to isolate its cost
        runs[label.replace(", --joblog", "")] = lambda: minionize_rate(
            n, lines, args.engine, args.reporter)
    sandboxed = label.replace("true (", "--sandbox DIR true (")
    if args.sandbox:
        runs[sandboxed] = lambda: minionize_rate(n, lines, args.engine, args.reporter, sandbox=True)
    if shutil.which("parallel") and not args.without_parallel:
        runs["GNU parallel -j 2 true"] = lambda: n / timed(["parallel", "-j", "2", TRUE], lines)
    results: dict[str, float] = {}
    for _ in range(max(1, args.repeat)):
        for name, run in runs.items():
            results[name] = max(results.get(name, 0.0), run())

    bare = results["bare loop, true PARAM (2 threads posix_spawn+wait)"]
    xargs = results["xargs -P 2 -n 1 true"]
    mine = results[label]
    print(f"{n} tasks of `true`, 2 at a time, best of {max(1, args.repeat)} interleaved runs")
    for name, rate in results.items():
        print(f"  {name:<58} {rate:8.0f} tasks/s")
    target = "0.85" if args.joblog else "0.80"
    print(f"  minionize / bare loop (same argv) = {mine / bare:.2f}  (target >= {target})")
    print(f"  minionize / xargs                 = {mine / xargs:.2f}")
    print(f"  CPU per task, minionize + true    = {CPU_PER_TASK[''] * 1e6:.0f} us "
          "(the fastest run's; less noisy than rates on a busy machine)")
    if args.joblog:
        plain = results[label.replace(", --joblog", "")]
        print(f"  without --joblog / bare loop      = {plain / bare:.2f}  "
              f"(--joblog costs {(1 - mine / plain) * 100:.1f} % of the rate)")
        with_log, without = CPU_PER_TASK["joblog"] * 1e6, CPU_PER_TASK[""] * 1e6
        print(f"  CPU per task, minionize + true    = {with_log:.0f} us with --joblog, "
              f"{without:.0f} us without (+{with_log - without:.0f} us; less noisy than rates "
              "on a busy machine)")
    if args.sandbox:
        boxed, plain_cpu = CPU_PER_TASK["sandbox"] * 1e6, CPU_PER_TASK[""] * 1e6
        print(f"  --sandbox / bare loop             = {results[sandboxed] / bare:.2f}  "
              f"(CPU per task: {boxed:.0f} us with --sandbox, {plain_cpu:.0f} us without)")
    start = time.perf_counter()
    subprocess.run([*minionize, "--version"], check=True, stdout=subprocess.DEVNULL)
    via_module = time.perf_counter() - start
    script = shutil.which("minionize")
    if script:
        start = time.perf_counter()
        subprocess.run([script, "--version"], check=True, stdout=subprocess.DEVNULL)
        print(f"  minionize --version: {(time.perf_counter() - start) * 1000:.0f} ms "
              f"(target < 150 ms; python -m minionize: {via_module * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
