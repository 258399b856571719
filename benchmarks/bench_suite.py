"""Time the notebook series under a profile and print notebook 04's per-task table.

Targets (printed next to the measurements, never asserted):
* the whole series under ``cpu-smoke`` runs in at most 10 minutes on 2 CPU cores;
* notebook 04's table shows every subtask of the data against its trivial baseline.

    python benchmarks/bench_suite.py [--profile cpu-smoke] [--out runs/bench_suite]

What it prints is also written, with the command and the machine, to
``results/bench_suite_<profile>.md`` (``--record PATH`` elsewhere, ``--no-record`` not at all).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

from fmuia_lib import profiles
from fmuia_lib.runner import run_folder, suite
from fmuia_lib.data.layout import read_root
from record import RESULTS, recorded  # benchmarks/record.py

TARGET_S = 600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu-smoke")
    parser.add_argument("--out", default="runs/bench_suite")
    parser.add_argument("--kernel", default="python3")
    parser.add_argument("--record", default="",
                        help="where to write the record (default: results/bench_suite_<profile>.md)")
    parser.add_argument("--no-record", dest="record", action="store_const", const=None, help="write no record")
    args = parser.parse_args(argv)
    record = args.record if args.record != "" else RESULTS / f"bench_suite_{Path(args.profile).stem}.md"
    with recorded("bench_suite", record, f"The notebook series timed: {args.profile}",
                  [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]):
        status = run(args)
        if status:
            raise SystemExit(status)  # no record of a series that did not run through
    return status


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    result = suite.run_suite(args.profile, out=args.out, kernel=args.kernel, html=True, progress=False)
    wall = time.perf_counter() - start
    print(f"\n== suite timings ({args.profile}; {os.cpu_count()} CPU cores visible, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    for name, seconds in result.timings.items():
        print(f"  {name:<26} {seconds:7.1f} s")
    print(f"  {'total (notebooks)':<26} {sum(result.timings.values()):7.1f} s")
    print(f"  {'wall (with data, HTML)':<26} {wall:7.1f} s   target <= {TARGET_S} s: "
          f"{'met' if wall <= TARGET_S else 'NOT met'}")
    sizes = {p.name: p.stat().st_size / 1e6 for p in result.executed}
    print("  executed notebook sizes (MB): " + ", ".join(f"{k[:2]} {v:.2f}" for k, v in sizes.items()))

    table_path = run_folder.metrics_path(result.out / "artifacts", "04_error_analysis")
    if not table_path.is_file():
        print("notebook 04 did not run: no per-task table")
        return 1
    table = pd.read_csv(table_path)
    val_tasks = set(read_root(profiles.run_settings(args.profile).config.val_root)["task_id"])
    missing = sorted(val_tasks - set(table["task_id"]))
    table = table.rename(columns={"value": "model"})
    print(f"\n== notebook 04: model vs trivial baseline ({table['task_id'].nunique()} of {len(val_tasks)} "
          f"subtasks in the table{'; missing: ' + ', '.join(missing) if missing else ''})")
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    wins = table.groupby("task_type")["beats_baseline"].agg(["sum", "size"])
    print("\nmetrics where the model beats its baseline:")
    print(wins.rename(columns={"sum": "better", "size": "metrics"}).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
