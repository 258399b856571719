"""Margins over the trivial baseline, and their seed-to-seed spread.

One training run beating its trivial baseline (``training.baselines``) on a task can be
luck: the same recipe with another seed starts from other weights and draws other batches.
A margin means something when it is larger than that spread. This module turns several
runs of one recipe (one per seed, same data) into a table, per task:

* the task's **main metric** (``metrics.MAIN_METRIC``, the first challenge metric of its type:
  DSC, Accuracy, IoU, MRE) of the model and of the trivial baseline, averaged over the runs;
* the **margin**: how much better the model is, in the metric's unit (model - baseline, or
  baseline - model for MRE, where lower is better), so a positive margin is a win; its mean,
  standard deviation over the runs (``ddof=1``) and range; and the mean margin relative to
  the baseline (``margin / baseline``: the share of the baseline's MRE removed, for landmarks);
* ``beats_in_every_run`` (every run's margin > 0) and ``margin_exceeds_spread`` (the mean
  margin is larger than its standard deviation; undefined, ``<NA>``, with one run): two
  descriptions, not tests: with a few runs, ``mean > sd`` holds for pure noise far more
  often than a 5 % test would (``ablation.false_positive_rate`` measures such a rule);
* ``p_value``: a one-sided t-test (``scipy.stats.ttest_1samp``, ``alternative="greater"``)
  that the mean margin is above 0, with runs as the sample (NaN with one run, or with runs
  that all have the same margin), and ``ci_low`` / ``ci_high``, the 95 % Student's t
  interval of the mean margin. Several tasks mean several tests: adjust before calling one
  significant (``scipy.stats.false_discovery_control``).

:func:`seed_study` trains a profile once per seed (``profiles.run_settings`` with the seed
overridden) and scores each run's selected checkpoint and the trivial baseline on the same
validation set with the one scorer; the seeds come from the profile's ``seeds`` key unless
given. :func:`load_seed_study` collects the same from runs already trained.
``benchmarks/seed_margins.py`` runs either from the command line.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from fmuia_lib.challenge import metrics
from fmuia_lib.tasks import TaskSpec

PerTask = Mapping[str, Mapping[str, Any]]  #: task id -> {metric: value}, as ``training.validation.validate_whole_set`` returns

TABLE_COLUMNS = ("task_id", "task_type", "metric", "higher_is_better", "runs", "model", "baseline", "margin",
                 "margin_std", "margin_min", "margin_max", "relative_margin", "beats_in_every_run",
                 "margin_exceeds_spread", "ci_low", "ci_high", "p_value")


def margin_table(runs: Sequence[PerTask], baselines: PerTask | Sequence[PerTask],
                 tasks: Mapping[str, TaskSpec]) -> pd.DataFrame:
    """Per task: main metric of the model and of the trivial baseline, margin and its spread.

    ``runs``: per-task results of each run (one per seed). ``baselines``: the trivial
    baseline's per-task results, one for all runs (same data) or one per run (a run whose
    split depends on its seed). Tasks are those of the first run, in manifest order; a task
    missing from another run or from a baseline is an error, never dropped. Columns:
    :data:`TABLE_COLUMNS` (see the module docstring).
    """
    if not runs:
        raise ValueError("margin_table needs at least one run")
    per_run_baselines = [baselines] * len(runs) if isinstance(baselines, Mapping) else list(baselines)
    if len(per_run_baselines) != len(runs):
        raise ValueError(f"{len(runs)} runs but {len(per_run_baselines)} baselines: give one, or one per run")
    task_ids = sorted(runs[0], key=lambda t: (tasks[t].index, t))
    rows = []
    for task_id in task_ids:
        task = tasks[task_id]
        metric, higher = metrics.MAIN_METRIC[task.task_type]
        model = np.array([_value(run, task_id, metric, f"run {i}") for i, run in enumerate(runs)])
        base = np.array([_value(b, task_id, metric, f"baseline {i}") for i, b in enumerate(per_run_baselines)])
        margins = model - base if higher else base - model
        mean = float(margins.mean())
        std = float(margins.std(ddof=1)) if len(margins) > 1 else float("nan")
        base_mean = float(base.mean())
        rows.append({"task_id": task_id, "task_type": task.task_type, "metric": metric, "higher_is_better": higher,
                     "runs": len(margins), "model": float(model.mean()), "baseline": base_mean, "margin": mean,
                     "margin_std": std, "margin_min": float(margins.min()), "margin_max": float(margins.max()),
                     "relative_margin": mean / abs(base_mean) if base_mean else float("nan"),
                     "beats_in_every_run": bool((margins > 0).all()),
                     "margin_exceeds_spread": pd.NA if len(margins) < 2 else bool(mean > std),
                     **_margin_test(margins)})
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table["margin_exceeds_spread"] = table["margin_exceeds_spread"].astype("boolean")
    return table


def _margin_test(margins: np.ndarray) -> dict[str, float]:
    """95 % t interval of the mean margin and the one-sided p-value that it is above 0."""
    nan = {"ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan")}
    if len(margins) < 2 or np.all(margins == margins[0]):
        return nan
    sem = float(margins.std(ddof=1)) / np.sqrt(len(margins))
    low, high = stats.t.interval(0.95, len(margins) - 1, loc=float(margins.mean()), scale=sem)
    return {"ci_low": float(low), "ci_high": float(high),
            "p_value": float(stats.ttest_1samp(margins, 0.0, alternative="greater").pvalue)}


def _value(results: PerTask, task_id: str, metric: str, which: str) -> float:
    if task_id not in results:
        raise KeyError(f"{which} has no results for task {task_id!r}")
    if metric not in results[task_id]:
        raise KeyError(f"{which}: task {task_id!r} has no {metric!r}")
    return float(results[task_id][metric])


def format_margin_table(table: pd.DataFrame) -> str:
    """The table as fixed-width text: ``margin ± std [min, max]`` per task, then the counts."""
    lines = [f"{'task':<24} {'type':<14} {'metric':<8} {'model':>9} {'baseline':>9}  "
             f"{'margin ± std':>19} {'[min, max]':>21} {'rel.':>6}  every run  > spread"]
    for r in table.itertuples(index=False):
        std = "   n/a" if np.isnan(r.margin_std) else f"{r.margin_std:6.3f}"
        exceeds = "n/a" if pd.isna(r.margin_exceeds_spread) else ("yes" if r.margin_exceeds_spread else "NO")
        lines.append(f"{r.task_id:<24} {r.task_type:<14} {r.metric:<8} {r.model:9.3f} {r.baseline:9.3f}  "
                     f"{r.margin:10.3f} ± {std} [{r.margin_min:8.3f}, {r.margin_max:8.3f}] "
                     f"{r.relative_margin:6.1%}  {'yes' if r.beats_in_every_run else 'NO':>9}  {exceeds:>8}")
    every = int(table["beats_in_every_run"].sum())
    exceeds = int(table["margin_exceeds_spread"].fillna(False).sum())
    lines.append(f"{len(table)} tasks, {int(table['runs'].max())} run(s): the model beats the trivial baseline "
                 f"in every run on {every}, by more than the spread on {exceeds}")
    return "\n".join(lines)


# -- running the study ---------------------------------------------------------------------------
@dataclass
class SeedStudy:
    """Runs of one profile, one per seed, and the trivial baseline on the same validation set."""

    profile: str
    seeds: list[int]
    runs: list[dict[str, dict[str, Any]]]  #: per seed: per-task metrics of the selected checkpoint
    baselines: list[dict[str, dict[str, Any]]]  #: per seed: per-task metrics of the trivial baseline
    train_seconds: list[float]  #: per seed: wall time of ``train`` (training and its validations)
    train_cpu_seconds: list[float] = field(default_factory=list)  #: per seed: CPU time of this process
    #: during ``train`` (with one thread, an upper bound of its wall time on an idle machine)
    tasks: dict[str, TaskSpec] = field(repr=False, default_factory=dict)

    def table(self) -> pd.DataFrame:
        return margin_table(self.runs, self.baselines, self.tasks)


def seed_study(profile: str | Path, seeds: Sequence[int] | None = None,
               overrides: Mapping[str, Any] | None = None, run_dir: str | Path = "runs/seed_study",
               data_dir: str | Path | None = None, device: str | None = None, progress: bool = False,
               on_run: Callable[[int, float], None] | None = None) -> SeedStudy:
    """Train ``profile`` once per seed (``seeds``, else the profile's ``seeds``, else its
    ``train.seed``) into ``run_dir/seed<N>`` and collect what :func:`margin_table` needs.

    Each run's results are the validation metrics at its best selection score (the
    checkpoint the series carries on, :func:`best_results`); the trivial baseline is scored
    on the same validation set. ``on_run(seed, wall_seconds)`` is called after each run.
    """
    from fmuia_lib.runner.run_folder import prepare_data
    from fmuia_lib.training import train

    loaded, chosen = _profile_and_seeds(profile, seeds)
    study = SeedStudy(str(profile), chosen, [], [], [])
    for seed in chosen:
        settings = _seed_settings(loaded, seed, overrides, run_dir, data_dir, device)
        prepare_data(settings)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = train(settings.config, progress=progress)
        seconds = time.perf_counter() - start
        study.train_cpu_seconds.append(time.process_time() - cpu_start)
        study.train_seconds.append(seconds)
        _add_run(study, settings.config, result.val_history)
        if on_run is not None:
            on_run(seed, seconds)
    return study


def load_seed_study(profile: str | Path, seeds: Sequence[int] | None = None,
                    overrides: Mapping[str, Any] | None = None, run_dir: str | Path = "runs/seed_study",
                    data_dir: str | Path | None = None, rescore: bool = False) -> SeedStudy:
    """The study :func:`seed_study` would return for runs already trained into
    ``run_dir/seed<N>``, read from each run's ``val_history.csv`` (no training; no times).
    With ``rescore``, each run's selected checkpoint (``checkpoints/best.pt``) is scored
    again on the validation set by this code, on the CPU, instead: what a change of decoding or scoring
    does to the same trained models. A seed without a finished run is an error naming its file."""
    from fmuia_lib.training import load_checkpoint
    from fmuia_lib.training.validation import validate_whole_set

    loaded, chosen = _profile_and_seeds(profile, seeds)
    study = SeedStudy(str(profile), chosen, [], [], [])
    for seed in chosen:
        config = _seed_settings(loaded, seed, overrides, run_dir, data_dir, None).config
        path = Path(config.out_dir) / ("checkpoints/best.pt" if rescore else "val_history.csv")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no finished run for seed {seed}")
        if rescore:
            model, _, _ = load_checkpoint(path)
            _add_run(study, config, score=lambda val_set: validate_whole_set(
                model, val_set, "cpu", batch_size=config.val_batch_size or config.batch_size))
        else:
            _add_run(study, config, pd.read_csv(path))
    return study


def best_results(val_history: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per task: the validation metrics at the step of the best selection score (the
    earliest such step), from a run's ``val_history`` (``training.validation`` rows)."""
    best_score = val_history["selection_score"].max()
    best = val_history.loc[val_history["selection_score"] == best_score, "step"].min()
    rows = val_history[val_history["step"] == best].set_index("task_id")
    return {t: rows.loc[t].dropna().to_dict() for t in rows.index}


def _profile_and_seeds(profile, seeds):
    from fmuia_lib.profiles import load_profile

    loaded = load_profile(profile)
    return loaded, list(seeds) if seeds else study_seeds(loaded)


def _seed_settings(loaded, seed, overrides, run_dir, data_dir, device):
    from fmuia_lib.profiles import run_settings

    return run_settings(loaded, {**(overrides or {}), "seed": seed}, data_dir=data_dir,
                        run_dir=Path(run_dir) / f"seed{seed}", device=device)


def _add_run(study: SeedStudy, config, val_history: pd.DataFrame | None = None,
             score: Callable[[Any], dict[str, dict[str, Any]]] | None = None) -> None:
    """Add one run: its selected checkpoint's metrics (from ``val_history``, or ``score`` of
    the validation set) and the trivial baseline's on the same set."""
    from fmuia_lib.training.baselines import trivial_baseline_scores
    from fmuia_lib.training.data import build_datasets

    train_set, val_set, _ = build_datasets(config)
    study.runs.append(best_results(val_history) if score is None else score(val_set))
    study.baselines.append(trivial_baseline_scores(train_set, val_set))
    study.tasks = dict(val_set.specs)


def study_seeds(profile) -> list[int]:
    """The seeds of a profile's margin study: its ``seeds`` key, else its ``train.seed``
    (else the library default)."""
    from fmuia_lib.config import TrainConfig

    if profile.seeds:
        return list(profile.seeds)
    return [int(profile.train.get("seed", TrainConfig().seed))]
