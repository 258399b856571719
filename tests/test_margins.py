"""Margins over the trivial baseline and their seed-to-seed spread (fmuia_lib.experiments.margins), and
the seeds of a profile's margin study."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from fmuia_lib import profiles
from fmuia_lib.experiments import margins
from fmuia_lib.tasks import load_manifest

TASKS = load_manifest()


def test_margin_is_signed_so_that_positive_is_better_for_every_metric():
    runs = [{"FUGC": {"MRE": 30.0}, "breast_lesion": {"DSC": 0.70, "HD": 9.0}},
            {"FUGC": {"MRE": 40.0}, "breast_lesion": {"DSC": 0.60, "HD": 9.0}},
            {"FUGC": {"MRE": 50.0}, "breast_lesion": {"DSC": 0.80, "HD": 9.0}}]
    baseline = {"FUGC": {"MRE": 60.0}, "breast_lesion": {"DSC": 0.0}}
    table = margins.margin_table(runs, baseline, TASKS).set_index("task_id")
    assert list(table.index) == ["breast_lesion", "FUGC"]  # manifest order
    seg, reg = table.loc["breast_lesion"], table.loc["FUGC"]
    assert (seg["metric"], bool(seg["higher_is_better"]), reg["metric"], bool(reg["higher_is_better"])) == (
        "DSC", True, "MRE", False)
    # MRE: lower is better, so the margin is baseline - model: 30, 20, 10
    assert reg["model"] == pytest.approx(40.0) and reg["baseline"] == pytest.approx(60.0)
    assert reg["margin"] == pytest.approx(20.0) and reg["margin_std"] == pytest.approx(10.0)
    assert (reg["margin_min"], reg["margin_max"]) == (pytest.approx(10.0), pytest.approx(30.0))
    assert reg["relative_margin"] == pytest.approx(20.0 / 60.0)
    assert bool(reg["beats_in_every_run"]) and bool(reg["margin_exceeds_spread"])  # 20 > 10
    assert seg["margin"] == pytest.approx(0.7) and seg["margin_std"] == pytest.approx(0.1)
    assert seg["runs"] == 3


def test_a_margin_smaller_than_its_spread_or_lost_in_one_run_is_flagged():
    runs = [{"organ_cls": {"Accuracy": a}} for a in (0.40, 0.20, 0.36)]
    table = margins.margin_table(runs, {"organ_cls": {"Accuracy": 0.25}}, TASKS)
    row = table.iloc[0]
    assert row["margin_min"] == pytest.approx(-0.05)
    assert not row["beats_in_every_run"]
    assert not row["margin_exceeds_spread"]  # mean 0.07 < std 0.106
    # a tie is not a win
    tie = margins.margin_table([{"organ_cls": {"Accuracy": 0.25}}] * 2, {"organ_cls": {"Accuracy": 0.25}}, TASKS)
    assert not tie.iloc[0]["beats_in_every_run"]


def test_one_baseline_per_run_and_one_run_without_a_spread():
    runs = [{"thyroid_nodule_det": {"IoU": 0.5}}, {"thyroid_nodule_det": {"IoU": 0.6}}]
    per_run = [{"thyroid_nodule_det": {"IoU": 0.2}}, {"thyroid_nodule_det": {"IoU": 0.4}}]
    row = margins.margin_table(runs, per_run, TASKS).iloc[0]
    assert row["margin"] == pytest.approx(0.25) and row["baseline"] == pytest.approx(0.3)
    assert row["margin_std"] == pytest.approx(math.sqrt(2) * 0.05)
    single = margins.margin_table(runs[:1], per_run[0], TASKS).iloc[0]
    assert math.isnan(single["margin_std"]) and pd.isna(single["margin_exceeds_spread"])
    assert single["margin_min"] == single["margin_max"] == pytest.approx(0.3)


def test_missing_results_are_errors_never_dropped():
    runs = [{"FUGC": {"MRE": 3.0}, "IUGC": {"MRE": 4.0}}, {"FUGC": {"MRE": 3.0}}]
    with pytest.raises(KeyError, match="run 1 has no results for task 'IUGC'"):
        margins.margin_table(runs, {"FUGC": {"MRE": 5.0}, "IUGC": {"MRE": 5.0}}, TASKS)
    with pytest.raises(KeyError, match="baseline 0 has no results for task 'IUGC'"):
        margins.margin_table(runs[:1], {"FUGC": {"MRE": 5.0}}, TASKS)
    with pytest.raises(KeyError, match="task 'FUGC' has no 'MRE'"):
        margins.margin_table([{"FUGC": {"NMRE": 0.1}}], {"FUGC": {"MRE": 5.0}}, TASKS)
    with pytest.raises(ValueError, match="2 runs but 3 baselines"):
        margins.margin_table(runs, [{}, {}, {}], TASKS)
    with pytest.raises(ValueError, match="at least one run"):
        margins.margin_table([], {}, TASKS)


def test_formatted_table_names_every_task_and_the_counts():
    runs = [{"FUGC": {"MRE": 30.0}, "organ_cls": {"Accuracy": 0.2}},
            {"FUGC": {"MRE": 32.0}, "organ_cls": {"Accuracy": 0.3}}]
    table = margins.margin_table(runs, {"FUGC": {"MRE": 40.0}, "organ_cls": {"Accuracy": 0.25}}, TASKS)
    text = margins.format_margin_table(table)
    assert "FUGC" in text and "organ_cls" in text
    assert text.splitlines()[-1] == ("2 tasks, 2 run(s): the model beats the trivial baseline in every run on 1, "
                                     "by more than the spread on 1")


def test_profile_seeds_are_the_study_seeds(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ntrain: {seed: 7}\nseeds: [3, 4, 5]\n", encoding="utf-8")
    assert margins.study_seeds(profiles.load_profile(path)) == [3, 4, 5]
    path.write_text("name: p\ntrain: {seed: 7}\n", encoding="utf-8")
    assert margins.study_seeds(profiles.load_profile(path)) == [7]
    for bad in ("[]", "[1, 1]", "[-1]", "3", "[true]"):
        path.write_text(f"name: p\ntrain: {{seed: 7}}\nseeds: {bad}\n", encoding="utf-8")
        with pytest.raises(profiles.ProfileError, match=r"p\.yaml: seeds="):
            profiles.load_profile(path)


def test_seed_study_trains_each_seed_and_scores_the_baseline_on_the_same_set(tmp_path):
    from conftest import make_root

    from fmuia_lib.training.baselines import trivial_baseline_scores
    from fmuia_lib.training.data import build_datasets

    tasks = ["breast_lesion", "organ_cls", "FUGC"]
    root = make_root(tmp_path, tasks=tasks, n=4)
    overrides = dict(data_root=str(root), val_root=str(root), max_steps=2, eval_every=2, norm_stats_batches=1,
                     image_size=32, batch_size=2, fpn_pyramid_channels=32, fpn_segmentation_channels=32)
    seen = []
    study = margins.seed_study("ci-tiny", [1, 2], overrides, run_dir=tmp_path / "study", device="cpu",
                               on_run=lambda seed, seconds: seen.append(seed))
    assert study.seeds == seen == [1, 2] and len(study.train_seconds) == 2
    assert [sorted(run) for run in study.runs] == [sorted(tasks)] * 2
    assert (tmp_path / "study" / "seed2" / "train" / "checkpoints" / "best.pt").is_file()
    config = profiles.run_settings("ci-tiny", {**overrides, "seed": 1}).config
    expected = trivial_baseline_scores(*build_datasets(config)[:2])
    assert study.baselines[0]["organ_cls"]["Accuracy"] == expected["organ_cls"]["Accuracy"]
    table = study.table()
    assert list(table["task_id"]) == tasks and (table["runs"] == 2).all()
    # the same study, read back from the runs' files without training
    again = margins.load_seed_study("ci-tiny", [1, 2], overrides, run_dir=tmp_path / "study")
    assert again.train_seconds == []  # model and baseline: the tables below
    assert [sorted(run) for run in again.runs] == [sorted(tasks)] * 2
    pd.testing.assert_frame_equal(again.table(), table)
    with pytest.raises(FileNotFoundError, match=r"seed3.*val_history\.csv: no finished run for seed 3"):
        margins.load_seed_study("ci-tiny", [3], overrides, run_dir=tmp_path / "study")
    # the selected checkpoints scored anew by the same code give the numbers validation wrote
    rescored = margins.load_seed_study("ci-tiny", [1, 2], overrides, run_dir=tmp_path / "study", rescore=True)
    for run, read in zip(rescored.runs, again.runs):
        for task in tasks:
            for metric in ("DSC", "Accuracy", "MRE"):
                if metric in read[task]:
                    assert run[task][metric] == pytest.approx(read[task][metric], rel=1e-6), (task, metric)
    with pytest.raises(FileNotFoundError, match=r"seed3.*best\.pt: no finished run for seed 3"):
        margins.load_seed_study("ci-tiny", [3], overrides, run_dir=tmp_path / "study", rescore=True)


def test_margin_table_tests_each_margin_with_a_t_interval():
    from scipy import stats

    from fmuia_lib.experiments import ablation

    tasks = load_manifest()
    runs = [{"breast_2cls": {"Accuracy": a}} for a in (0.8, 0.7, 0.9)]
    base = {"breast_2cls": {"Accuracy": 0.6}}
    row = margins.margin_table(runs, base, tasks).iloc[0]
    expected = stats.ttest_1samp([0.2, 0.1, 0.3], 0.0, alternative="greater").pvalue
    assert row["p_value"] == pytest.approx(expected) and row["ci_low"] < 0.2 < row["ci_high"]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(ablation.confidence_interval([0.2, 0.1, 0.3]))
    one = margins.margin_table(runs[:1], base, tasks).iloc[0]
    assert math.isnan(one["p_value"]) and math.isnan(one["ci_low"])
