"""The ablation study of fmuia's switches: its grid, its runs and its tables.

An *arm* is a list of switches (``fmuia_lib.switches``) on top of the official recipe. The
grid is the official recipe (no switch), each switch of a chosen set added ONE at a time
(its main effect), the fmuia recipe (every switch) and, optionally, the fmuia recipe with
each of those switches taken out (all-but-one). Every arm runs with the same size knobs and
the same seeds; only its switches differ.

Every arm is scored the same way, whatever its own validation rule: per-task challenge
metrics over the whole held-out validation root (``training.validation.validate``), so the
official arm's per-batch rule never makes its numbers incomparable. What is scored is the
checkpoint the arm's own rule selected (``best.pt``), as a submission would be: with several
validations per run (``eval_every`` below the run length) a selection rule such as
``whole_set_validation`` acts on the result; with one validation it cannot, and its rows
come out "not applicable".

Tables (:func:`type_table`): per arm and task type, the quality (``metrics.task_quality``,
in [0, 1]) averaged over the type's tasks, its mean and seed-to-seed standard deviation over
seeds, and the difference from the official arm *paired by seed* (same seed: same
initialisation of the shared layers and the same data order): its mean, standard deviation,
range, 95 % confidence interval (Student's t), a paired t-test (``scipy.stats.ttest_1samp``
of the per-seed differences against 0) and its p-value adjusted for every test of the table
(Benjamini-Hochberg, ``scipy.stats.false_discovery_control``: the expected share of false
findings among the findings is at most :data:`FDR`), and the smallest difference the seeds
could detect (:func:`detectable_effect`: 80 % power at that level, for the spread measured).
A difference is a *finding* when its adjusted p-value is below :data:`FDR`.

Not every difference is measured (``status``): where every seed's difference is exactly 0 the
arm could not act on that metric, and the table says so instead of reporting a 0 +/- 0 as
a measurement: ``"at floor"`` when the official arm scores 0 in every seed there (a switch
cannot show an effect on a metric nobody moves), else ``"not applicable"`` (e.g. a landmark
switch on a dataset without landmark tasks). Only ``"measured"`` rows are tested.

:func:`spread_rule` is the rule this module used before the test (``|mean| > sd`` and one
sign): :func:`false_positive_rate` simulates how often it, or any rule, calls pure noise a
finding, so a notebook can print that rate instead of asserting it.
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
from scipy import optimize, stats

from fmuia_lib.switches import FMUIA_RECIPE, SWITCHES

OFFICIAL = "official"
FMUIA = "fmuia"
#: Columns of the tidy results: one row per dataset, arm, seed and task.
RESULT_COLUMNS = ("dataset", "arm", "seed", "task_id", "task_type", "quality", "train_seconds")
TYPE_COLUMNS = ("dataset", "arm", "task_type", "seeds", "quality", "quality_std", "diff", "diff_std",
                "diff_min", "diff_max", "status", "ci_low", "ci_high", "p_value", "p_adjusted", "detectable",
                "finding")
#: The false-discovery rate the table controls (Benjamini-Hochberg), and the level of each test.
FDR = 0.05
#: The power at which :func:`detectable_effect` states the smallest detectable difference.
POWER = 0.8
MEASURED, AT_FLOOR, NOT_APPLICABLE, REFERENCE, ONE_SEED = (
    "measured", "at floor", "not applicable", "reference", "one seed")


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
    """Train ``arm`` of ``profile`` with ``seed`` into ``run_dir`` and score the checkpoint its
    validation rule selected (``best.pt``; the final model when the run wrote none) over the
    whole validation set (the validation root; with ``val_root: null``, the split that
    ``seed`` draws, the same for every arm of that seed). Returns ``(per-task rows, training seconds)``; the rows
    have ``task_id, task_type, quality`` and the task's challenge metrics."""
    from fmuia_lib.profiles import run_settings
    from fmuia_lib.training import train
    from fmuia_lib.checkpoint import load_checkpoint
    from fmuia_lib.training.data import build_datasets
    from fmuia_lib.training.validation import validate_whole_set

    settings = run_settings(profile, {**(overrides or {}), "switches": list(arm.switches), "seed": seed},
                            data_dir=data_dir, run_dir=run_dir, device=device)
    config = settings.config
    start = time.perf_counter()
    result = train(config, progress=False)
    seconds = time.perf_counter() - start
    _, val_set, _ = build_datasets(config)
    model, device = result.model, next(result.model.parameters()).device
    if result.best_checkpoint is not None and Path(result.best_checkpoint).is_file():
        model = load_checkpoint(result.best_checkpoint, map_location=device)[0]
    scores = validate_whole_set(model, val_set, device,
                      batch_size=config.val_batch_size or config.batch_size, num_workers=config.num_workers)
    rows = [{"task_id": t, "task_type": model.task(t).task_type, "quality": s["score"],
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
    seed (mean, standard deviation, range), its ``status``, and for measured rows its 95 %
    interval, paired t-test p-value, Benjamini-Hochberg adjusted p-value (over every measured
    row of the table), the difference detectable with 80 % power, and ``finding`` (adjusted
    p below :data:`FDR`; ``<NA>`` where nothing is tested: one seed, rows not measured, the
    reference itself). See the module docstring.

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
        status = difference_status(diff, ref.to_numpy(), is_reference=arm == reference)
        low, high = confidence_interval(diff) if status == MEASURED else (float("nan"), float("nan"))
        rows.append({"dataset": dataset, "arm": arm, "task_type": task_type, "seeds": n,
                     "quality": float(values.mean()),
                     "quality_std": float(values.std(ddof=1)) if n > 1 else float("nan"),
                     "diff": float(diff.mean()), "diff_std": diff_std,
                     "diff_min": float(diff.min()), "diff_max": float(diff.max()), "status": status,
                     "ci_low": low, "ci_high": high,
                     "p_value": paired_test(diff) if status == MEASURED else float("nan"),
                     "detectable": detectable_effect(n, diff_std) if status == MEASURED else float("nan")})
    table = pd.DataFrame(rows, columns=list(TYPE_COLUMNS))
    tested = table["status"] == MEASURED
    table["p_adjusted"] = np.nan
    if tested.any():
        table.loc[tested, "p_adjusted"] = stats.false_discovery_control(table.loc[tested, "p_value"], method="bh")
    table["finding"] = pd.array([bool(p < FDR) if t else pd.NA for p, t in zip(table["p_adjusted"], tested)],
                                dtype="boolean")
    return table


def difference_status(diff: np.ndarray, reference: np.ndarray, is_reference: bool = False) -> str:
    """What a row of paired differences is (see the module docstring): ``"reference"``,
    ``"one seed"`` (nothing to test), ``"at floor"`` or ``"not applicable"`` (every seed's
    difference exactly 0, with the reference at 0 in every seed or not), else ``"measured"``."""
    if is_reference:
        return REFERENCE
    if len(diff) < 2:
        return ONE_SEED
    if not np.any(diff):
        return AT_FLOOR if not np.any(reference) else NOT_APPLICABLE
    return MEASURED


def paired_test(diff: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of the paired t-test: are the per-seed differences' mean 0?
    (Differences equal in every seed have no spread: p is 0 when they are not 0, 1 when they are.)"""
    diff = np.asarray(diff, dtype=float)
    if diff.size < 2:
        raise ValueError(f"a paired test needs at least 2 seeds, got {diff.size}")
    if np.all(diff == diff[0]):
        return 0.0 if diff[0] else 1.0
    return float(stats.ttest_1samp(diff, 0.0).pvalue)


def confidence_interval(diff: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student's t confidence interval of the mean paired difference."""
    diff = np.asarray(diff, dtype=float)
    mean, sem = float(diff.mean()), float(diff.std(ddof=1)) / np.sqrt(diff.size)
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(level, diff.size - 1, loc=mean, scale=sem)
    return float(low), float(high)


def test_power(effect: float, n: int, sd: float, alpha: float = FDR) -> float:
    """Power of the two-sided paired t-test with ``n`` seeds to detect a true mean difference
    ``effect`` when the differences have standard deviation ``sd`` (noncentral t)."""
    df, crit = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)
    nc = effect / (sd / np.sqrt(n))
    lower = stats.nct.cdf(-crit, df, nc)  # the wrong-sign tail: NaN where it underflows, i.e. 0
    return float(stats.nct.sf(crit, df, nc) + (0.0 if np.isnan(lower) else lower))


test_power.__test__ = False  # a library function, not a pytest test


def detectable_effect(n: int, sd: float, alpha: float = FDR, power: float = POWER) -> float:
    """The smallest true mean difference the paired t-test with ``n`` seeds detects with
    probability ``power`` at level ``alpha``, when the differences' spread is ``sd``."""
    if n < 2 or not np.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    high = sd
    while test_power(high, n, sd, alpha) < power:  # power grows with the effect: bracket it
        high *= 2
    return float(optimize.brentq(lambda e: test_power(e, n, sd, alpha) - power, 0.0, high))


def spread_rule(diff: Sequence[float] | np.ndarray) -> bool:
    """The rule of thumb the study used before the test: ``|mean| > sd`` and every seed of the
    mean's sign (:func:`is_finding`). :func:`false_positive_rate` measures what it lets through."""
    return is_finding(diff)


def false_positive_rate(rule: Callable[[np.ndarray], bool], seeds: int, trials: int = 20000,
                        seed: int = 0) -> float:
    """How often ``rule`` calls pure noise a finding: the share of ``trials`` simulated rows of
    ``seeds`` paired differences, each drawn from a Gaussian of mean 0, that it accepts (the
    rules here are scale-free, so the Gaussian's spread does not matter)."""
    draws = np.random.default_rng(seed).standard_normal((trials, seeds))
    return float(np.mean([rule(row) for row in draws]))


def is_finding(diff: Sequence[float] | np.ndarray) -> bool:
    """The former rule of thumb (:func:`spread_rule`): the mean of the paired per-seed
    differences is larger in size than their standard deviation (``ddof=1``) and every one of
    them is strictly of the mean's sign. Not a test: it passes pure noise far more often than
    5 % (:func:`false_positive_rate`). Needs at least two seeds."""
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
    the paired difference with its 95 % confidence interval, the test's adjusted p-value and
    whether it is a finding, or why the row is not measured (see the module docstring)."""
    lines = []
    for r in table[table["arm"] != reference].itertuples(index=False):
        what = _arm_words(r.arm)
        if r.status == ONE_SEED:
            lines.append(f"{r.dataset}: {what} changed {r.task_type} quality by {r.diff:+.3f} (1 seed: no spread "
                         "to test against, not a finding)")
        elif r.status == AT_FLOOR:
            lines.append(f"{r.dataset}: {what}: {r.task_type} at floor (the official arm scores 0 in every seed "
                         "and so does this arm: nothing measured)")
        elif r.status == NOT_APPLICABLE:
            lines.append(f"{r.dataset}: {what}: {r.task_type} not applicable (the same score in every seed: "
                         "the switch does not act here)")
        else:
            judged = (f"a finding (false-discovery rate {FDR:.0%})" if r.finding
                      else f"not a finding at a false-discovery rate of {FDR:.0%}")
            lines.append(f"{r.dataset}: {what} changed {r.task_type} quality by {r.diff:+.3f} (95 % CI "
                         f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}], {r.seeds} seeds; paired t-test p = {r.p_value:.3f}, "
                         f"adjusted {r.p_adjusted:.3f}): {judged}; the smallest difference these seeds detect "
                         f"with {POWER:.0%} power is {r.detectable:.3f}")
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
