"""Margins over the trivial baseline with their seed-to-seed spread, for one profile.

Trains the profile once per seed (its ``seeds`` key, or ``--seeds``), scores each run's
selected checkpoint and the trivial baseline on the validation set with the one scorer,
and prints per task: the main metric (DSC, accuracy, IoU, MRE) of the model and of the
baseline, the margin ± its standard deviation over the seeds, its range, the margin
relative to the baseline, and whether it beats the baseline in every run and by more than
the spread (``fmuia_lib.experiments.margins``). Also prints each run's training wall time (training and
its validations; wall and CPU time) and the machine's load average, and writes the table to
``OUT/margins.csv``. The record of the run goes to ``results/``: the table as
``results/margins_<profile>.csv`` and what the run printed, with the command and the machine,
as ``results/margins_<profile>.md`` (``--record PATH.md`` elsewhere, ``--no-record`` not at all).

    python benchmarks/seed_margins.py --profile cpu-smoke
    python benchmarks/seed_margins.py --profile real-slice --seeds 0 1 2
    python benchmarks/seed_margins.py --profile cpu-smoke --out runs/m --reuse   # table of runs already made
    python benchmarks/seed_margins.py --profile cpu-smoke --out runs/m --rescore  # their checkpoints scored anew

Runs one training at a time; set ``OMP_NUM_THREADS`` to the cores you give it.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fmuia_lib.experiments import margins  # noqa: E402
from fmuia_lib.config import ConfigError  # noqa: E402
from fmuia_lib.profiles import parse_overrides  # noqa: E402
from record import RESULTS, load_average, recorded  # noqa: E402  (benchmarks/record.py)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu-smoke", help="profile name or YAML path (default: cpu-smoke)")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default: the profile's seeds)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="*", default=[],
                        help="TrainConfig overrides applied to every run")
    parser.add_argument("--data", help="a folder with train/ and val/ data roots (default: the profile's data)")
    parser.add_argument("--out", default="runs/seed_margins", help="run folder (one sub-folder per seed)")
    parser.add_argument("--device", help="cpu, cuda... (default: CUDA when available)")
    parser.add_argument("--reuse", action="store_true",
                        help="train nothing: read the runs already in OUT/seed<N> (no times printed)")
    parser.add_argument("--rescore", action="store_true",
                        help="train nothing: score each run's selected checkpoint in OUT/seed<N> again with "
                             "this code (a change of decoding or scoring on the same models)")
    parser.add_argument("--record", default="",
                        help="the record's .md path; the table goes beside it as .csv "
                             "(default: results/margins_<profile>.md)")
    parser.add_argument("--no-record", dest="record", action="store_const", const=None, help="write no record")
    args = parser.parse_args(argv)
    record = args.record
    if record == "":
        record = RESULTS / f"margins_{Path(args.profile).stem}.md"
    with recorded("margins", record, f"Margins over the trivial baseline: {Path(args.profile).stem}",
                  [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]):
        run(args)
    if record is not None:
        Path(record).with_suffix(".csv").write_bytes((Path(args.out) / "margins.csv").read_bytes())
    return 0


def run(args: argparse.Namespace) -> None:
    """Train (or read) the runs and print the table; bad input exits 2 before any record is written."""

    def report(seed: int, seconds: float) -> None:
        print(f"seed {seed}: training and its validations took {seconds:.1f} s wall "
              f"(load average now {load_average()})", flush=True)

    print(f"profile {args.profile}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"{os.cpu_count()} CPUs; load average at start {load_average()}", flush=True)
    try:
        overrides = parse_overrides(args.overrides)
        if args.reuse or args.rescore:
            study = margins.load_seed_study(args.profile, args.seeds, overrides, run_dir=args.out, data_dir=args.data,
                                            rescore=args.rescore)
        else:
            study = margins.seed_study(args.profile, args.seeds, overrides, run_dir=args.out, data_dir=args.data,
                                       device=args.device, on_run=report)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    table = study.table()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "margins.csv", index=False)
    print()
    print(margins.format_margin_table(table))
    if study.train_seconds:
        wall = ", ".join(f"{s:.0f}" for s in study.train_seconds)
        cpu = ", ".join(f"{s:.0f}" for s in study.train_cpu_seconds)
        print(f"training and its validations, per seed: wall {wall} s; CPU {cpu} s (with OMP_NUM_THREADS=1 the "
              f"CPU time bounds the wall time on an idle machine)")
    print(f"table: {out / 'margins.csv'}")


if __name__ == "__main__":
    sys.exit(main())
