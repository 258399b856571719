"""The ablation study of fmuia's switches: its grid, its runs and its tables.

An *arm* is a list of switches (``fmuia_lib.switches``) on top of the official recipe. The
grid is the official recipe (no switch), each switch of a chosen set added ONE at a time
(its main effect), the fmuia recipe (every switch) and, optionally, the fmuia recipe with
each of those switches taken out (all-but-one). Every arm runs with the same size knobs and
the same seeds; only its switches differ.

Every arm's final model is scored the same way, whatever its own validation rule: per-task
challenge metrics over the whole held-out validation root (``training.validation.validate_whole_set``),
so the official arm's per-batch rule never makes its numbers incomparable.

Tables (:func:`type_table`): per arm and task type, the quality (``metrics.task_quality``,
in [0, 1]) averaged over the type's tasks, its mean and seed-to-seed standard deviation over
seeds, and the difference from the official arm *paired by seed* (same seed: same
initialisation of the shared layers and the same data order), with its mean and standard
deviation. A difference counts as a finding only when its mean is larger in size than its
spread and every seed's difference has the mean's sign (:func:`is_finding`): with three seeds
a mean just over one standard deviation can still hide a seed that went the other way or
tied, and a learner should not read that as an effect (:func:`verdicts`).
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from fmuia_lib.switches import FMUIA_RECIPE, SWITCHES

OFFICIAL = "official"
FMUIA = "fmuia"
#: Columns of the tidy results: one row per dataset, arm, seed and task.
RESULT_COLUMNS = ("dataset", "arm", "seed", "task_id", "task_type", "quality", "train_seconds")
TYPE_COLUMNS = ("dataset", "arm", "task_type", "seeds", "quality", "quality_std", "diff", "diff_std",
                "diff_min", "diff_max", "finding")


@dataclass(frozen=True)
class Arm:
    """One arm of the grid: a name and the switches it lists."""

    name: str
    switches: tuple[str, ...]
    kind: str  #: "official" | "one switch" | "all but one" | "fmuia"


def grid(main_effects: Iterable[str], recipe: Sequence[str] = FMUIA_RECIPE,
         all_but_one: bool = False) -> list[Arm]:
    """The arms: official, ``+X`` for each switch X of ``main_effects``, then (``all_but_one``)
    ``-X`` (the recipe without X) for each, then the fmuia ``recipe``.

    A switch that is unknown or listed twice is an error, and so is an all-but-one arm for a
    switch the recipe does not use. A main effect may be a switch outside the recipe: an
    alternative the recipe chose against (``sigmoid_landmarks`` beside ``heatmap_landmarks``).
    """
    main_effects, recipe = list(main_effects), tuple(recipe)
    unknown = [n for n in (*main_effects, *recipe) if n not in SWITCHES]
    if unknown:
        raise ValueError(f"unknown switch(es) {unknown}; known: {list(SWITCHES)}")
    if len(set(main_effects)) != len(main_effects):
        raise ValueError(f"main_effects={main_effects}: a switch is listed twice")
    outside = [n for n in main_effects if n not in recipe]
    if all_but_one and outside:
        raise ValueError(f"switch(es) {outside} are not in the recipe {list(recipe)}: no all-but-one arm")
    arms = [Arm(OFFICIAL, (), "official")]
    arms += [Arm(f"+{n}", (n,), "one switch") for n in main_effects]
    if all_but_one:
        arms += [Arm(f"-{n}", tuple(s for s in recipe if s != n), "all but one") for n in main_effects]
    arms.append(Arm(FMUIA, recipe, "fmuia"))
    return arms


def run_arm(profile: Any, arm: Arm, seed: int, run_dir: str | Path, data_dir: str | Path | None = None,
            overrides: Mapping[str, Any] | None = None, device: str | None = None) -> tuple[pd.DataFrame, float]:
    """Train ``arm`` of ``profile`` with ``seed`` into ``run_dir`` and score its final model
    over the whole validation set (the validation root; with ``val_root: null``, the split that
    ``seed`` draws, the same for every arm of that seed). Returns ``(per-task rows, training seconds)``; the rows
    have ``task_id, task_type, quality`` and the task's challenge metrics."""
    from fmuia_lib.profiles import run_settings
    from fmuia_lib.training import train
    from fmuia_lib.training.data import build_datasets
    from fmuia_lib.training.validation import validate_whole_set

    settings = run_settings(profile, {**(overrides or {}), "switches": list(arm.switches), "seed": seed},
                            data_dir=data_dir, run_dir=run_dir, device=device)
    config = settings.config
    start = time.perf_counter()
    result = train(config, progress=False)
    seconds = time.perf_counter() - start
    _, val_set, _ = build_datasets(config)
    scores = validate_whole_set(result.model, val_set, next(result.model.parameters()).device,
                      batch_size=config.val_batch_size or config.batch_size, num_workers=config.num_workers)
    rows = [{"task_id": t, "task_type": result.model.task(t).task_type, "quality": s["score"],
             **{k: v for k, v in s.items() if k != "score" and isinstance(v, (int, float, np.number))}}
            for t, s in scores.items()]
    return pd.DataFrame(rows), seconds


def run_grid(profile: Any, arms: Sequence[Arm], seeds: Sequence[int], run_dir: str | Path, dataset: str,
             data_dir: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
             device: str | None = None, on_run: Callable[[Arm, int, float], None] | None = None,
             jobs: int = 1) -> pd.DataFrame:
    """Every arm with every seed (``run_dir/ARM/seedN``): the tidy results, one row per arm,
    seed and task (:data:`RESULT_COLUMNS` first, then the challenge metrics), in arm then
    seed order whatever order the runs finish in.

    ``jobs`` > 1 trains that many runs at a time, each in a process of its own with
    ``cpu_count // jobs`` threads: small CPU models use two threads poorly, so two one-thread
    runs on two cores finish sooner than two two-thread runs one after the other. A run's
    numbers depend on its thread count only through the order of float sums.
    """
    runs = [(arm, seed) for arm in arms for seed in seeds]
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: must be at least 1")

    def arguments(arm: Arm, seed: int) -> tuple:
        return profile, arm, seed, Path(run_dir) / arm.name / f"seed{seed}", data_dir, overrides, device

    done: dict[tuple[str, int], pd.DataFrame] = {}

    def finished(arm: Arm, seed: int, rows: pd.DataFrame, seconds: float) -> None:
        done[arm.name, seed] = rows.assign(dataset=dataset, arm=arm.name, seed=seed, train_seconds=seconds)
        if on_run is not None:
            on_run(arm, seed, seconds)

    if jobs == 1:
        for arm, seed in runs:
            finished(arm, seed, *run_arm(*arguments(arm, seed)))
    else:
        # spawn, not fork: a forked child of a process that has run torch's thread pools can hang
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_limit_threads, initargs=(threads,)) as pool:
            futures = {pool.submit(run_arm, *arguments(arm, seed)): (arm, seed) for arm, seed in runs}
            for future in as_completed(futures):
                finished(*futures[future], *future.result())
    results = pd.concat([done[arm.name, seed] for arm, seed in runs], ignore_index=True)
    return results[list(RESULT_COLUMNS) + [c for c in results.columns if c not in RESULT_COLUMNS]]


def _limit_threads(threads: int) -> None:
    """A grid worker's start: ``threads`` compute threads for torch and OpenCV."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def type_table(results: pd.DataFrame, reference: str = OFFICIAL) -> pd.DataFrame:
    """Per dataset, arm and task type: quality (mean over the type's tasks, then mean and
    standard deviation over seeds, ``ddof=1``) and the difference from ``reference`` paired by
    seed (mean, standard deviation, range), plus ``finding`` (:func:`is_finding`; ``<NA>`` with
    one seed, and for the reference itself).

    Every arm must have the reference's seeds and tasks: a missing pairing is an error.
    """
    per_seed = (results.groupby(["dataset", "arm", "task_type", "seed"], sort=False)["quality"]
                .mean().rename("quality").reset_index())
    rows = []
    for (dataset, arm, task_type), group in per_seed.groupby(["dataset", "arm", "task_type"], sort=False):
        ref = per_seed[(per_seed["dataset"] == dataset) & (per_seed["arm"] == reference)
                       & (per_seed["task_type"] == task_type)].set_index("seed")["quality"]
        values = group.set_index("seed")["quality"]
        missing = sorted(set(values.index) ^ set(ref.index))
        if missing:
            raise ValueError(f"{dataset}: arm {arm!r} and {reference!r} differ in seeds {missing} "
                             f"for {task_type}: the difference is paired by seed")
        _check_same_tasks(results, dataset, arm, reference, task_type)
        diff = (values - ref.loc[values.index]).to_numpy()
        n = len(values)
        diff_std = float(diff.std(ddof=1)) if n > 1 else float("nan")
        is_ref = arm == reference
        rows.append({"dataset": dataset, "arm": arm, "task_type": task_type, "seeds": n,
                     "quality": float(values.mean()),
                     "quality_std": float(values.std(ddof=1)) if n > 1 else float("nan"),
                     "diff": float(diff.mean()), "diff_std": diff_std,
                     "diff_min": float(diff.min()), "diff_max": float(diff.max()),
                     "finding": pd.NA if (n < 2 or is_ref) else is_finding(diff)})
    table = pd.DataFrame(rows, columns=list(TYPE_COLUMNS))
    table["finding"] = table["finding"].astype("boolean")
    return table


def is_finding(diff: Sequence[float] | np.ndarray) -> bool:
    """Whether paired per-seed differences make a finding: their mean is larger in size than
    their standard deviation (``ddof=1``) and every one of them is strictly of the mean's sign
    (no seed tied or went the other way). Needs at least two seeds."""
    diff = np.asarray(diff, dtype=float)
    if diff.size < 2:
        raise ValueError(f"a finding needs at least 2 seeds, got {diff.size}")
    mean = float(diff.mean())
    one_sign = bool((diff > 0).all() or (diff < 0).all())
    return bool(abs(mean) > float(diff.std(ddof=1)) and one_sign)


def _check_same_tasks(results: pd.DataFrame, dataset: str, arm: str, reference: str, task_type: str) -> None:
    def tasks(name: str) -> set[str]:
        rows = results[(results["dataset"] == dataset) & (results["arm"] == name)
                       & (results["task_type"] == task_type)]
        return set(rows["task_id"])

    if tasks(arm) != tasks(reference):
        raise ValueError(f"{dataset}: arm {arm!r} and {reference!r} were scored on different "
                         f"{task_type} tasks: {sorted(tasks(arm) ^ tasks(reference))}")


def verdicts(table: pd.DataFrame, reference: str = OFFICIAL) -> list[str]:
    """One sentence per dataset, arm (but the reference) and task type, read off ``table``:
    the paired difference ± its spread, and whether it is a finding (:func:`is_finding`)."""
    lines = []
    for r in table[table["arm"] != reference].itertuples(index=False):
        what = _arm_words(r.arm)
        if r.seeds < 2:
            reading = f"{r.seeds} seed: no spread to compare with, not a finding"
            change = f"{r.diff:+.3f}"
        else:
            change = f"{r.diff:+.3f} ± {r.diff_std:.3f}"
            if r.finding:
                judged = "larger than its spread, of one sign in every seed"
            elif abs(r.diff) > r.diff_std:
                judged = "larger than its spread but not of one sign in every seed, not a finding"
            else:
                judged = "within its spread, not a finding"
            reading = f"{r.seeds} seeds, range [{r.diff_min:+.3f}, {r.diff_max:+.3f}]: {judged}"
        lines.append(f"{r.dataset}: {what} changed {r.task_type} quality by {change} ({reading})")
    return lines


def _arm_words(arm: str) -> str:
    if arm == FMUIA:
        return "the fmuia recipe (every switch)"
    if arm.startswith("+"):
        return f"switch {arm[1:]} alone"
    if arm.startswith("-"):
        return f"the fmuia recipe without {arm[1:]}"
    return f"arm {arm}"


def wide(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as text cells ``mean ± std`` per arm (rows) and task type (columns), one block
    per dataset: quality, and the paired difference from the reference."""
    def cell(mean: float, std: float) -> str:
        return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}"

    frame = table.assign(**{"quality ± spread": [cell(m, s) for m, s in zip(table["quality"], table["quality_std"])],
                            "diff ± spread": [cell(m, s) for m, s in zip(table["diff"], table["diff_std"])]})
    arms = list(dict.fromkeys(table["arm"]))
    out = frame.pivot_table(index=["dataset", "arm"], columns="task_type",
                            values=["quality ± spread", "diff ± spread"], aggfunc="first", sort=False)
    return out.reindex(sorted(out.index, key=lambda i: (i[0], arms.index(i[1]))))
