"""minion-status over 200 minion report files covering 1,000,000 tasks.

    python bench/bench_status.py [--minions 200] [--tasks 1000000]

Writes the reports with the real JSON reporter (and prints its cost per task), then
times `minion-status --json` as a user runs it (a new process), beside two baselines
measured in the same run: the same command on an empty directory (start-up alone) and a
reader that replays every line (what minion-status would cost without the summaries).
Target: minion-status --json <= 1 s on the finished run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minionize.reporters.base import MinionInfo, TaskReport
from minionize.reporters.format import MinionState, read_events
from minionize.reporters.json import SUMMARY_EVERY, JsonReporter


def write_reports(directory: Path, minions: int, tasks: int, running: bool) -> float:
    """Reports of ``minions`` minions sharing ``tasks`` tasks; 1 % fail once, 0.1 % die.

    ``running``: the minions never stop, and each has SUMMARY_EVERY - 1 task lines after
    its last summary, the most a reader ever replays. Returns seconds per reported task.
    """
    per_minion = tasks // minions
    start = time.time() - 3600
    spent, written = 0.0, 0
    for m in range(minions):
        reporter = JsonReporter(directory, heartbeat=1e9)
        reporter.start(MinionInfo(f"m{m}", f"node-{m // 8}", 10_000 + m, start,
                                  {"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": str(m)}))
        reports = []
        for i in range(per_minion):
            n = m * per_minion + i
            t0 = start + i * 0.5
            if n % 100 == 0:
                reports.append(TaskReport({"x": n, "y": "a"}, str(n), 1, "retry", t0, 0.1,
                                          exit_code=1, reason="exit code 1",
                                          stderr_tail="Traceback ...\nValueError: x\n",
                                          stderr_path=f"logs/{n}.1.err"))
            outcome = "dead" if n % 1000 == 0 else "done"
            reports.append(TaskReport({"x": n, "y": "a"}, str(n), 2 if n % 100 == 0 else 1,
                                      outcome, t0 + 0.1, 0.3 + (n % 7) * 0.01, exit_code=0))
        began = time.perf_counter()
        for report in reports:
            reporter.task_finished(report)
        spent += time.perf_counter() - began
        written += len(reports)
        if running:
            while reporter._unsummarized < SUMMARY_EVERY - 1:
                reporter.task_finished(reports[-1])
        else:
            reporter.stop(0)
    return spent / written


def timed_command(args: list[str], env: dict[str, str], runs: int = 3) -> tuple[float, str]:
    best, out = float("inf"), ""
    for _ in range(runs):
        began = time.perf_counter()
        result = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
        best = min(best, time.perf_counter() - began)
        out = result.stdout
    return best, out


def replay_everything(directory: Path) -> float:
    began = time.perf_counter()
    done = 0
    for path in directory.glob("*.jsonl"):
        state = MinionState()
        events, _ = read_events(path.read_bytes())
        for event in events:
            state.apply(event)
        done += state.counts["done"]
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minions", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    args = parser.parse_args()
    status = shutil.which("minion-status") or "minion-status"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MINION_", "EXECO_"))}
        env["MINION_ENGINE"] = "sweep"
        env["EXECO_PERSISTENCE_DIR"] = str(root / "no-queue-here")
        finished, running, empty = root / "finished", root / "running", root / "empty"
        empty.mkdir()
        per_task = write_reports(finished, args.minions, args.tasks, running=False)
        write_reports(running, args.minions, args.tasks, running=True)
        size = sum(p.stat().st_size for p in finished.iterdir()) / 1e6
        print(f"{args.minions} minion reports, {args.tasks} tasks, {size:.0f} MB; "
              f"JSON reporter: {per_task * 1e6:.1f} us per task")

        startup, _ = timed_command([status, "--json", str(empty)], env)
        whole, out = timed_command([status, "--json", str(finished)], env)
        live, live_out = timed_command([status, "--json", str(running)], env)
        replay = replay_everything(finished)
        result = json.loads(out)
        assert result["done"] + result["dead"] == args.tasks - args.tasks % args.minions
        assert json.loads(live_out)["minions"], "the running reports were read"
        print(f"  minion-status --json, finished run:          {whole:6.3f} s  (target <= 1 s)")
        print(f"  minion-status --json, run in progress:       {live:6.3f} s  "
              f"({SUMMARY_EVERY - 1} lines per minion after its summary)")
        print(f"  baseline: minion-status --json, empty dir:   {startup:6.3f} s  "
              f"(finished run / empty = {whole / startup:.2f})")
        print(f"  baseline: replaying every line, in process:  {replay:6.3f} s  "
              f"(finished run / replay = {whole / replay:.3f})")
        print(f"  totals: done {result['done']}, failed attempts {result['failed']}, "
              f"dead {result['dead']}")
    return 0 if whole <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
