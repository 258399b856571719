"""Speed of ``fmuia data check``: every image decoded (the default) against headers only.

Runs :func:`~fmuia_lib.data.layout.validate_root` on the phantom's training root
(``runs/phantom/train``; make it once with ``fmuia data phantom --out runs/phantom``) or
``--root``, alternating the two modes ``--repeats`` times after one warm-up pass (files in
the page cache), and prints rows/s of the fastest pass of each and their ratio. Masks are
decoded in both modes. Prints figures only::

    python benchmarks/bench_data_check.py [--root ROOT] [--repeats 3] [--workers N]

Decoding, which is what finds a cut-off or corrupt image, costs several times the
header-only pass. What it prints is also written, with the command and the machine, to
``results/bench_data_check.md`` (``--record PATH`` elsewhere, ``--no-record`` not at all);
the figures measured when decoding became the default are in ``results/history.md``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fmuia_lib.data.layout import read_root, validate_root
from record import recorded  # benchmarks/record.py

REPO = Path(__file__).resolve().parents[1]


def seconds(root: Path, header_only: bool, workers: int | None) -> float:
    start = time.perf_counter()
    problems = validate_root(root, header_only=header_only, workers=workers)
    elapsed = time.perf_counter() - start
    if problems:
        sys.exit(f"{root} has {len(problems)} problem(s), first: {problems[0]}; benchmark a valid root")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO / "runs" / "phantom" / "train"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="threads (default: validate_root's)")
    parser.add_argument("--record", default="", help="where to write the record (default: results/bench_data_check.md)")
    parser.add_argument("--no-record", dest="record", action="store_const", const=None, help="write no record")
    args = parser.parse_args()
    root = Path(args.root)
    if not (root / "csv_files").is_dir():
        sys.exit(f"no data root at {root}: run `fmuia data phantom --out runs/phantom` first, or pass --root")
    with recorded("bench_data_check", args.record, "Speed of fmuia data check: benchmarks/bench_data_check.py"):
        run(root, args)


def run(root: Path, args: argparse.Namespace) -> None:
    rows = len(read_root(root))
    seconds(root, False, args.workers)  # warm-up: every file read once
    best = {True: float("inf"), False: float("inf")}
    for _ in range(args.repeats):
        for header_only in (True, False):
            best[header_only] = min(best[header_only], seconds(root, header_only, args.workers))
    shown = root.resolve().relative_to(REPO) if root.resolve().is_relative_to(REPO) else root
    print(f"root: {shown} ({rows} rows); best of {args.repeats}")
    print(f"  --header-only (headers read, masks decoded): {rows / best[True]:8.0f} rows/s")
    print(f"  default (every image and mask decoded):      {rows / best[False]:8.0f} rows/s")
    print(f"  default / header-only time: {best[False] / best[True]:.2f}x")


if __name__ == "__main__":
    main()
