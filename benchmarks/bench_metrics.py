"""Speed and memory of scoring a submission: ``fmuia evaluate``, and the challenge's evaluate.py.

The workload is the default phantom's validation root (``fmuia data phantom --out
runs/phantom``: 27 subtasks, 64 images each; generated here when missing) and a
submission made from its ground truth with imperfect masks (shifted, grown, shrunk, a
stray blob, or empty), so that every Hausdorff distance has work to do.

Each scorer runs as a whole command in a fresh Python process, as a user runs it:
``python -m fmuia_lib.cli evaluate --data VAL --pred SUB``, and, with ``--official
PATH/evaluate.py``, the challenge's script copied into a temporary folder and driven
through its ``Evaluator`` class (it needs SimpleITK). Wall-clock time and peak resident
memory (``ru_maxrss`` of that process) are measured ``--repeat`` times; the median time
and the largest peak are printed, with the ratio. Both processes get
``OMP_NUM_THREADS=1``. When both run, their per-task numbers are compared too (they
must agree to 1e-6).

What it prints is also written, with the command and the machine, to
``results/bench_metrics.md`` (``--record PATH`` elsewhere, ``--no-record`` not at all).

Usage: ``python benchmarks/bench_metrics.py [--phantom runs/phantom] [--repeat 3]
[--official /path/to/evaluate.py]``
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fmuia_lib.data.layout import read_root  # noqa: E402
from fmuia_lib.challenge.predict import records_from_ground_truth, write_submission  # noqa: E402
from record import recorded  # noqa: E402  (benchmarks/record.py)

TARGET_SPEEDUP = 3.0
TARGET_PEAK_MB = 300.0

OFFICIAL_DRIVER = """
import sys
from evaluate import Evaluator
evaluator = Evaluator(sys.argv[1], sys.argv[2])
results = evaluator.evaluate_all()
evaluator.print_summary(results)
evaluator.save_results(results, sys.argv[3])
"""


def imperfect(mask: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong prediction: shifted, grown, shrunk, a stray blob, empty, or right."""
    mode = rng.integers(0, 6)
    if mode == 0:
        return np.roll(mask, int(rng.integers(-12, 13)), axis=int(rng.integers(0, 2)))
    if mode == 1:
        return cv2.dilate(mask, np.ones((7, 7), np.uint8))
    if mode == 2:
        return cv2.erode(mask, np.ones((5, 5), np.uint8))
    if mode == 3:
        out = mask.copy()
        h, w = mask.shape
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.ellipse(out, centre, (int(rng.integers(3, w // 6)), int(rng.integers(3, h // 6))), 0, 0, 360,
                    int(rng.integers(1, num_classes)), -1)
        return out
    if mode == 4:
        return np.zeros_like(mask)
    return mask


def phantom_val(phantom: Path) -> Path:
    val = phantom / "val"
    if not (val / "csv_files").is_dir():
        print(f"{val} not found: generating the default phantom (a minute or two)")
        from fmuia_lib.sources.phantom import generate_phantom

        generate_phantom(phantom, seed=0)
    return val


def make_submission(val: Path, out: Path, seed: int) -> None:
    from fmuia_lib.tasks import load_manifest

    tasks = load_manifest()
    rng = np.random.default_rng(seed)
    records = records_from_ground_truth(val)
    for record in records:
        if "mask" in record:
            record["mask"] = imperfect(record["mask"], tasks[record["task_id"]].num_classes, rng)
    write_submission(out, records)


#: Runs a command and writes its wall time and peak RSS. A small process of its own, because
#: a child's ``ru_maxrss`` counts what it had before ``exec``: the memory of whoever forked it.
LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - start
proc.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as fh:
    json.dump({"wall": wall, "peak_kb": usage.ru_maxrss, "status": proc.returncode}, fh)
"""


def run_measured(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one command in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        done = subprocess.run([sys.executable, "-c", LAUNCHER, str(result), *argv], cwd=cwd, env=env,
                              capture_output=True, text=True)
        figures = json.loads(result.read_text()) if result.is_file() else {"status": done.returncode}
    if done.returncode != 0 or figures["status"] != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return figures["wall"], figures["peak_kb"] / 1024.0


def measure(name: str, argv: list[str], cwd: Path, repeat: int) -> tuple[float, float]:
    walls, peaks = [], []
    for _ in range(repeat):
        wall, peak = run_measured(argv, cwd)
        walls.append(wall)
        peaks.append(peak)
    wall, peak = statistics.median(walls), max(peaks)
    print(f"  {name:<22} {wall:7.2f} s wall (median of {repeat}: {', '.join(f'{w:.2f}' for w in walls)}), "
          f"peak {peak:6.1f} MB")
    return wall, peak


def compare_numbers(ours_json: Path, official_json: Path) -> float:
    """Largest difference between the two scorers' per-task numbers."""
    ours = json.loads(ours_json.read_text())["challenge"]
    theirs = json.loads(official_json.read_text())
    worst = 0.0
    for group, tasks in theirs.items():
        for task_id, values in tasks.items():
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    worst = max(worst, abs(float(ours[group][task_id][key]) - float(value)))
            for cls, cls_values in values.get("per_class", {}).items():
                if "HD" in cls_values:
                    for key in ("DSC", "HD"):
                        ours_value = ours[group][task_id]["per_class"][cls][key]
                        worst = max(worst, abs(float(ours_value) - float(cls_values[key])))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom", type=Path, default=REPO / "runs" / "phantom")
    parser.add_argument("--official", type=Path, default=None, help="the challenge's evaluate.py")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", default="", help="where to write the record (default: results/bench_metrics.md)")
    parser.add_argument("--no-record", dest="record", action="store_const", const=None, help="write no record")
    args = parser.parse_args(argv)
    val = phantom_val(args.phantom).resolve()
    with recorded("bench_metrics", args.record, "Scoring speed and memory: benchmarks/bench_metrics.py",
                  [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]):
        return run(args, val)


def run(args: argparse.Namespace, val: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="fmuia-bench-") as tmp:
        work = Path(tmp)
        sub = work / "submission"
        make_submission(val, sub, args.seed)
        shown = val.relative_to(REPO) if val.is_relative_to(REPO) else val
        rows = len(read_root(val, labels=False))
        print(f"scoring {sub.name} against {shown} ({sum(1 for _ in (val / 'csv_files').glob('*.csv'))} CSV files, "
              f"{rows} images)")
        ours_json = work / "fmuia.json"
        ours_wall, ours_peak = measure("fmuia evaluate", [sys.executable, "-m", "fmuia_lib.cli", "evaluate",
                                                          "--data", str(val), "--pred", str(sub),
                                                          "--json", str(ours_json)], work, args.repeat)
        ok = ours_peak < TARGET_PEAK_MB
        if args.official is not None:
            official_dir = work / "official"
            official_dir.mkdir()
            shutil.copy(args.official, official_dir / "evaluate.py")
            official_json = official_dir / "results.json"
            theirs_wall, theirs_peak = measure("challenge evaluate.py", [sys.executable, "-c", OFFICIAL_DRIVER,
                                                                         str(val), str(sub), str(official_json)],
                                               official_dir, args.repeat)
            speedup = theirs_wall / ours_wall
            difference = compare_numbers(ours_json, official_json)
            print(f"  speed-up {speedup:.1f}x wall (target >= {TARGET_SPEEDUP:.0f}x), peak memory "
                  f"{ours_peak:.0f} MB vs {theirs_peak:.0f} MB ({ours_peak / theirs_peak:.2f}x)")
            print(f"  largest difference between the two scorers' per-task and per-class numbers: {difference:.1e}")
            ok = ok and speedup >= TARGET_SPEEDUP and difference <= 1e-6
        targets = f"< {TARGET_PEAK_MB:.0f} MB peak"
        if args.official is not None:
            targets = f">= {TARGET_SPEEDUP:.0f}x faster, {targets}, numbers equal to 1e-6"
        else:
            targets += "; without --official nothing was compared with the challenge's scorer"
        print(f"{'meets' if ok else 'MISSES'} the targets ({targets})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
