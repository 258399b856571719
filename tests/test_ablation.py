"""The ablation of notebook 06 (fmuia_lib.experiments.ablation): its grid, its paired-difference table,
the sentences read off it, and one real (tiny) grid run scored the same way for every arm."""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats
import pytest

from fmuia_lib import profiles
from fmuia_lib.experiments import ablation
from fmuia_lib.config import TrainConfig
from fmuia_lib.switches import FMUIA_RECIPE, SWITCHES
from conftest import TINY_MODEL


def test_grid_is_official_then_one_switch_at_a_time_then_the_recipe():
    recipe = ["trained_fpn", "dice_ce", "centernet_detection"]
    arms = ablation.grid(["trained_fpn", "dice_ce"], recipe=recipe)
    assert [(a.name, a.switches, a.kind) for a in arms] == [
        ("official", (), "official"), ("+trained_fpn", ("trained_fpn",), "one switch"),
        ("+dice_ce", ("dice_ce",), "one switch"), ("fmuia", tuple(recipe), "fmuia")]
    with_out = ablation.grid(["dice_ce"], recipe=recipe, all_but_one=True)
    assert [(a.name, a.switches) for a in with_out][2] == ("-dice_ce", ("trained_fpn", "centernet_detection"))
    assert ablation.grid([])[-1].switches == FMUIA_RECIPE
    # an alternative the recipe chose against has a main effect, and no all-but-one arm
    alternative = ablation.grid(["sigmoid_landmarks"], recipe=["heatmap_landmarks"])
    assert [a.name for a in alternative] == ["official", "+sigmoid_landmarks", "fmuia"]


@pytest.mark.parametrize("main, recipe, message", [
    (["no_such_switch"], FMUIA_RECIPE, "unknown switch"),
    (["dice_ce", "dice_ce"], FMUIA_RECIPE, "listed twice"),
    (["dice_ce"], ["trained_fpn"], "not in the recipe.*no all-but-one arm"),
])
def test_grid_refuses_what_it_cannot_measure(main, recipe, message):
    with pytest.raises(ValueError, match=message):
        ablation.grid(main, recipe=recipe, all_but_one=True)


def _results(values: dict[tuple[str, int], tuple[float, float]]) -> pd.DataFrame:
    """Tidy results of one dataset: per (arm, seed), the quality of two segmentation tasks."""
    rows = [{"dataset": "phantom", "arm": arm, "seed": seed, "task_id": task, "task_type": "segmentation",
             "quality": q, "train_seconds": 1.0}
            for (arm, seed), qs in values.items() for task, q in zip(["breast_lesion", "fetal_head"], qs)]
    return pd.DataFrame(rows)


def test_type_table_pairs_the_difference_by_seed():
    # the seed moves both arms together: the paired difference is exactly +0.1 in every seed, so its
    # spread is 0 while each arm's own spread over seeds is large
    results = _results({("official", 0): (0.1, 0.3), ("official", 1): (0.5, 0.7), ("official", 2): (0.3, 0.1),
                        ("+x", 0): (0.2, 0.4), ("+x", 1): (0.6, 0.8), ("+x", 2): (0.4, 0.2)})
    table = ablation.type_table(results).set_index("arm")
    official, arm = table.loc["official"], table.loc["+x"]
    assert official["quality"] == pytest.approx(0.333333, abs=1e-6)  # type mean per seed: 0.2, 0.6, 0.2
    assert official["quality_std"] == pytest.approx(pd.Series([0.2, 0.6, 0.2]).std())
    assert (official["diff"], official["diff_std"]) == (0.0, 0.0) and pd.isna(official["finding"])
    assert arm["diff"] == pytest.approx(0.1) and arm["diff_std"] == pytest.approx(0.0, abs=1e-12)
    assert arm["quality_std"] == pytest.approx(official["quality_std"])
    assert bool(arm["finding"]) and arm["seeds"] == 3


def test_a_difference_within_its_spread_is_not_a_finding_and_one_seed_has_no_spread():
    results = _results({("official", 0): (0.5, 0.5), ("official", 1): (0.5, 0.5),
                        ("+x", 0): (0.7, 0.7), ("+x", 1): (0.4, 0.4)})
    row = ablation.type_table(results).set_index("arm").loc["+x"]
    assert row["diff"] == pytest.approx(0.05) and row["diff_std"] == pytest.approx(pd.Series([0.2, -0.1]).std())
    assert not bool(row["finding"])
    table = ablation.type_table(results)
    row = table.set_index("arm").loc["+x"]
    # t = 0.05 / (0.212 / sqrt 2) = 0.333 on 1 degree of freedom
    assert row["p_value"] == pytest.approx(2 * stats.t.sf(0.05 / (row["diff_std"] / math.sqrt(2)), 1))
    assert row["ci_low"] < 0 < row["ci_high"] and row["status"] == "measured"
    (line,) = ablation.verdicts(table)
    assert line.startswith("phantom: switch x alone changed segmentation quality by +0.050 (95 % CI [")
    assert "2 seeds; paired t-test p = 0.795, adjusted 0.795): not a finding at a false-discovery rate of 5%" in line
    one = ablation.type_table(_results({("official", 0): (0.5, 0.5), ("fmuia", 0): (0.6, 0.6)}))
    assert math.isnan(one.set_index("arm").loc["fmuia", "diff_std"]) and one["finding"].isna().all()
    (line,) = ablation.verdicts(one)
    assert line == ("phantom: the fmuia recipe (every switch) changed segmentation quality by +0.100 "
                    "(1 seed: no spread to test against, not a finding)")


def test_a_seed_against_the_mean_or_tied_keeps_a_difference_from_being_a_finding():
    # mean +0.083, spread 0.081: larger than the spread, yet one seed tied (0.0)
    assert not ablation.is_finding([0.0, 0.086, 0.163])
    # mean -0.0110, spread 0.0106: larger than the spread, yet one seed went up
    assert not ablation.is_finding([-0.019, -0.015, 0.001])
    assert ablation.is_finding([-0.019, -0.015, -0.001])
    assert ablation.is_finding([0.1, 0.1]) and not ablation.is_finding([0.0, 0.0])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        ablation.is_finding([0.3])
    results = _results({("official", 0): (0.5, 0.5), ("official", 1): (0.5, 0.5), ("official", 2): (0.5, 0.5),
                        ("+x", 0): (0.481, 0.481), ("+x", 1): (0.485, 0.485), ("+x", 2): (0.501, 0.501)})
    table = ablation.type_table(results)
    row = table.set_index("arm").loc["+x"]
    assert abs(row["diff"]) > row["diff_std"] and not bool(row["finding"])  # p = 0.25: noise passes |mean| > sd
    assert row["p_value"] == pytest.approx(stats.ttest_1samp([-0.019, -0.015, 0.001], 0).pvalue)


def test_the_spread_rule_passes_noise_a_fifth_of_the_time_the_test_at_its_level():
    """Simulated, not asserted from a formula: Gaussian differences of mean 0, three seeds."""
    spread = ablation.false_positive_rate(ablation.spread_rule, 3, trials=20000)
    test = ablation.false_positive_rate(lambda d: ablation.paired_test(d) < 0.05, 3, trials=20000)
    assert 0.19 < spread < 0.23 and 0.045 < test < 0.055


def test_power_and_the_detectable_effect():
    assert ablation.test_power(ablation.detectable_effect(5, 0.02), 5, 0.02) == pytest.approx(0.8)
    assert ablation.detectable_effect(10, 0.02) < ablation.detectable_effect(3, 0.02)
    assert ablation.test_power(0.0, 5, 0.02) == pytest.approx(0.05)  # no effect: the test's level


def test_rows_a_switch_cannot_move_are_labelled_not_measured_and_the_rest_share_one_fdr():
    results = _results({("official", 0): (0.0, 0.0), ("official", 1): (0.0, 0.0), ("official", 2): (0.0, 0.0),
                        ("+floor", 0): (0.0, 0.0), ("+floor", 1): (0.0, 0.0), ("+floor", 2): (0.0, 0.0),
                        ("+up", 0): (0.1, 0.1), ("+up", 1): (0.12, 0.12), ("+up", 2): (0.09, 0.09)})
    shifted = results.assign(quality=results["quality"] + (results["arm"] != "+up") * 0.3, dataset="slice")
    shifted.loc[shifted["arm"] == "+up", "quality"] += 0.3
    table = ablation.type_table(pd.concat([results, shifted])).set_index(["dataset", "arm"])
    assert table.loc[("phantom", "+floor"), "status"] == "at floor"
    assert table.loc[("slice", "+floor"), "status"] == "not applicable"
    assert pd.isna(table.loc[("phantom", "+floor"), "finding"]) and pd.isna(table.loc[("phantom", "+floor"), "p_value"])
    measured = table[table["status"] == "measured"]
    assert len(measured) == 2 and list(measured["p_adjusted"]) == pytest.approx(
        list(stats.false_discovery_control(measured["p_value"], method="bh")))
    lines = ablation.verdicts(table.reset_index())
    assert any("segmentation at floor" in line for line in lines)
    assert any("not applicable" in line for line in lines)


def test_type_table_refuses_unpaired_arms():
    results = _results({("official", 0): (0.5, 0.5), ("official", 1): (0.5, 0.5), ("+x", 0): (0.7, 0.7)})
    with pytest.raises(ValueError, match=r"differ in seeds \[1\]"):
        ablation.type_table(results)
    results = _results({("official", 0): (0.5, 0.5), ("+x", 0): (0.7, 0.7)})
    results = results[~((results["arm"] == "+x") & (results["task_id"] == "fetal_head"))]
    with pytest.raises(ValueError, match="different segmentation tasks"):
        ablation.type_table(results)


def test_wide_shows_mean_and_spread_per_arm_and_type():
    results = _results({("official", 0): (0.5, 0.5), ("official", 1): (0.3, 0.3),
                        ("+x", 0): (0.7, 0.7), ("+x", 1): (0.4, 0.4)})
    wide = ablation.wide(ablation.type_table(results))
    assert list(wide.index) == [("phantom", "official"), ("phantom", "+x")]
    assert wide.loc[("phantom", "+x"), ("quality ± spread", "segmentation")] == "0.550 ± 0.212"
    assert wide.loc[("phantom", "+x"), ("diff ± spread", "segmentation")] == "0.150 ± 0.071"


def test_the_ablation_profile_is_the_official_recipe_at_a_cpu_size():
    """Only size knobs and the data differ from the official recipe; the arms add switches."""
    loaded = profiles.load_profile("ablation")
    config = TrainConfig.from_dict(loaded.train)
    differ = {k for k, v in config.to_dict().items() if TrainConfig().to_dict()[k] != v}
    size = {"encoder", "encoder_weights", "image_size", "batch_size", "epochs", "max_steps", "eval_every"}
    assert config.active_switches() == [] and differ <= size | {"num_workers", "seed"}, differ - size
    # several validations: each arm is scored on the checkpoint its own rule selected
    assert config.max_steps % config.eval_every == 0 and config.max_steps // config.eval_every >= 3
    section = loaded.notebooks["06_experiments"]
    assert section["seeds"] == [0, 1, 2]
    # every switch's main effect; the fmuia arm is the notebook's default: the fmuia recipe
    assert section["real_slice"] and "recipe" not in section and section["jobs"] == 2
    assert sorted(section["main_effects"]) == sorted(SWITCHES)
    assert ablation.grid(section["main_effects"])[-1].switches == FMUIA_RECIPE


def test_run_grid_scores_every_arm_on_the_whole_validation_root(tmp_path, make_root):
    """Two arms, two seeds, two tasks, 2 steps: one row per arm, seed and task, each scored
    by whole-set validation (the official arm validates per batch while it trains)."""
    data = tmp_path / "data"
    make_root(data, tasks=["breast_lesion", "FUGC"], n=4, name="train")
    make_root(data, tasks=["breast_lesion", "FUGC"], n=4, seed=1, name="val")
    arms = ablation.grid([], recipe=["trained_fpn", "dice_ce"])
    overrides = dict(max_steps=2, eval_every=2, batch_size=2, image_size=32, device="cpu", **TINY_MODEL)
    finished = []
    results = ablation.run_grid("ablation", arms, [0, 1], tmp_path / "runs", "toy", data_dir=data,
                                overrides=overrides, jobs=2, on_run=lambda arm, seed, s: finished.append((arm.name, seed)))
    assert list(results.columns[:7]) == list(ablation.RESULT_COLUMNS)
    assert len(results) == 2 * 2 * 2 and set(results["arm"]) == {"official", "fmuia"}
    # two runs at a time, each in a process with one thread: rows in arm then seed order, every
    # run reported, and the same numbers as the run made here (one thread too, conftest.py)
    assert sorted(finished) == [("fmuia", 0), ("fmuia", 1), ("official", 0), ("official", 1)]
    assert list(results.drop_duplicates(["arm", "seed"])[["arm", "seed"]].itertuples(index=False, name=None)) == [
        ("official", 0), ("official", 1), ("fmuia", 0), ("fmuia", 1)]
    rows, _ = ablation.run_arm("ablation", arms[1], 1, tmp_path / "again", data_dir=data, overrides=overrides)
    pd.testing.assert_frame_equal(rows, results[(results["arm"] == "fmuia") & (results["seed"] == 1)][
        list(rows.columns)].reset_index(drop=True))
    assert results["quality"].between(0, 1).all() and results[["DSC", "MRE"]].notna().sum().tolist() == [4, 4]
    assert (tmp_path / "runs" / "official" / "seed1" / "train" / "config.yaml").is_file()
    table = ablation.type_table(results)
    assert set(table["task_type"]) == {"segmentation", "Regression"} and (table["seeds"] == 2).all()


def test_run_arm_scores_the_checkpoint_its_rule_selected(tmp_path, make_root):
    from fmuia_lib.checkpoint import load_checkpoint
    from fmuia_lib.training.validation import validate_whole_set

    data = tmp_path / "data"
    make_root(data, tasks=["breast_lesion", "breast_2cls"], n=4, name="train")
    make_root(data, tasks=["breast_lesion", "breast_2cls"], n=4, seed=1, name="val")
    overrides = dict(max_steps=4, eval_every=2, batch_size=2, image_size=32, device="cpu", **TINY_MODEL)
    arm = ablation.Arm("+whole_set_validation", ("whole_set_validation",), "one switch")
    rows, _ = ablation.run_arm("ablation", arm, 0, tmp_path / "run", data_dir=data, overrides=overrides)
    best = tmp_path / "run" / "train" / "checkpoints" / "best.pt"
    model, config, _ = load_checkpoint(best)
    from fmuia_lib.training.data import build_datasets

    expected = validate_whole_set(model, build_datasets(config)[1], "cpu", batch_size=config.val_batch_size)
    assert rows.set_index("task_id")["quality"].to_dict() == {t: s["score"] for t, s in expected.items()}


def test_plot_ablation_keeps_each_arm_s_colour_in_every_plot():
    import matplotlib

    matplotlib.use("Agg")
    from fmuia_lib.notebook import viz

    results = _results({("official", 0): (0.5, 0.5), ("official", 1): (0.3, 0.3), ("+dice_ce", 0): (0.7, 0.7),
                        ("+dice_ce", 1): (0.4, 0.4), ("fmuia", 0): (0.9, 0.9), ("fmuia", 1): (0.8, 0.8)})
    table = ablation.type_table(results)

    def colours(fig):
        (ax,) = fig.axes
        return {c.get_label(): c.patches[0].get_facecolor() for c in ax.containers if c.get_label() != "_nolegend_"}

    every, without_official = colours(viz.plot_ablation(table)), colours(
        viz.plot_ablation(table[table["arm"] != "official"], "diff"))
    assert set(every) == {"official", "+dice_ce", "fmuia"} and set(without_official) == {"+dice_ce", "fmuia"}
    assert all(every[arm] == without_official[arm] for arm in without_official)


def test_plot_ablation_gives_every_switch_a_colour_of_its_own():
    """The grid has more arms than tab10 has colours: no two switches may share one."""
    import matplotlib

    matplotlib.use("Agg")
    from fmuia_lib.notebook import viz
    from fmuia_lib.switches import SWITCHES

    runs = {(f"+{name}", seed): (0.5 + 0.01 * i, 0.5) for i, name in enumerate(SWITCHES) for seed in (0, 1)}
    runs.update({("official", 0): (0.5, 0.5), ("official", 1): (0.5, 0.5)})
    fig = viz.plot_ablation(ablation.type_table(_results(runs)))
    (ax,) = fig.axes
    colours = [c.patches[0].get_facecolor() for c in ax.containers if c.get_label().startswith("+")]
    assert len(colours) == len(SWITCHES) == len(set(colours)), len(set(colours))
