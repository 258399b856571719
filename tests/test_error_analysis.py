"""Error analysis: baselines, the per-class failure taxonomy, spreads, box sizes and the findings."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmuia_lib.notebook import error_analysis as ea
from fmuia_lib.data.layout import read_root
from fmuia_lib.challenge.evaluate import evaluate_records, evaluate_submission
from fmuia_lib.challenge.predict import records_from_ground_truth, write_submission
from fmuia_lib.tasks import load_manifest

TASKS = load_manifest()


# -- the per-class taxonomy on hand-made masks ------------------------------------------------------
def _kinds(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> dict[int, str]:
    true_px, pred_px, both = ea.class_pixels(pred, gt, num_classes)
    return {c: ea.class_failure_kind(int(true_px[c]), int(pred_px[c]), int(both[c])) for c in range(1, num_classes)}


@pytest.fixture
def truth() -> np.ndarray:
    """40 x 40: a 20 x 20 organ (class 1) holding a 2 x 2 structure (class 2); class 3 absent."""
    gt = np.zeros((40, 40), np.uint8)
    gt[10:30, 10:30] = 1
    gt[19:21, 19:21] = 2
    return gt


def test_a_small_class_never_predicted_is_missed_not_misplaced(truth):
    pred = truth.copy()
    pred[pred == 2] = 1  # the organ is right, the small structure is swallowed by it
    assert _kinds(pred, truth, 4) == {1: "ok", 2: "missed", 3: "absent"}
    pred[0, 0] = 2  # one stray pixel of the class far away: still nothing of it found
    assert _kinds(pred, truth, 4)[2] == "missed"


def test_misplaced_under_over_segmented_and_false_alarm(truth):
    moved = truth.copy()
    moved[moved == 2] = 1
    moved[2:4, 2:4] = 2  # the right size in the wrong place
    assert _kinds(moved, truth, 4)[2] == "misplaced"

    small = np.zeros_like(truth)
    small[10:15, 10:30] = 1  # a quarter of the organ: DSC 0.4
    assert _kinds(small, truth, 4)[1] == "under-segmented"

    large = np.zeros_like(truth)
    large[0:40, 0:40] = 1  # the whole image: DSC 2*400/(400+1600) = 0.4
    assert _kinds(large, truth, 4)[1] == "over-segmented"

    shifted = truth.copy()
    shifted[:, :] = 0
    shifted[20:40, 20:40] = 1  # same area, a quarter overlapping: DSC 0.25
    assert _kinds(shifted, truth, 4)[1] == "misplaced"

    alarm = truth.copy()
    alarm[35:38, 35:38] = 3
    assert _kinds(alarm, truth, 4)[3] == "false alarm"


def test_the_image_failure_is_its_worst_class(truth):
    task = TASKS["fetal_abdomen_multi"]  # 5 classes
    pred = truth.copy()
    pred[pred == 2] = 1
    kinds = {c: k for c, k in _kinds(pred, truth, 5).items() if k != "absent"}
    from fmuia_lib.challenge.metrics import dice_per_class

    row = {"class_failures": kinds, "class_DSC": dice_per_class(pred, truth, 5)}
    assert ea.failure_kind(task, row) == "missed"
    assert ea.failure_kind(task, {"class_failures": {1: "ok"}, "class_DSC": np.ones(5)}) == "ok"


# -- baselines -----------------------------------------------------------------------------------------
def test_majority_mask_votes_per_pixel_at_the_frame_and_prefers_background_on_ties():
    a = np.zeros((4, 4), np.uint8)
    a[:2, :] = 1
    b = np.zeros((8, 8), np.uint8)  # twice the size: resized to the frame first
    b[:4, :] = 1
    b[:, 6:] = 2
    c = np.zeros((4, 4), np.uint8)
    vote = ea.majority_mask([a, b, c], 3, (4, 4))
    expected = np.zeros((4, 4), np.uint8)
    expected[:2, :3] = 1  # 2 of 3 masks say 1 there
    # top right: a says 1, b says 2, c says 0: a three-way tie, background wins
    np.testing.assert_array_equal(vote, expected)
    tie = ea.majority_mask([a, c], 3, (2, 2))  # one vote each: background wins
    np.testing.assert_array_equal(tie, np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="no masks"):
        ea.majority_mask([], 3, (4, 4))


def test_baselines_on_a_root_are_scored_by_the_one_scorer(make_root, tmp_path):
    train_root = make_root(tmp_path, tasks=("cardiac_multi", "organ_cls", "FUGC"), n=6, name="train")
    val_root = make_root(tmp_path, tasks=("cardiac_multi", "organ_cls", "FUGC"), n=3, seed=1, name="val")
    train, val = read_root(train_root), read_root(val_root)

    trivial = ea.trivial_baseline_records(train, val, TASKS)
    probs = {tuple(r["probs"]) for r in trivial if r["task_id"] == "organ_cls"}
    labels = train.loc[train["task_id"] == "organ_cls", "target"].astype(int)
    assert probs == {tuple(np.bincount(labels, minlength=6) / len(labels))}
    assert all(not r["mask"].any() for r in trivial if r["task_id"] == "cardiac_multi")

    mean = list(ea.mean_mask_records(train, val, TASKS, frame=32))
    assert {r["task_id"] for r in mean} == {"cardiac_multi"} and len(mean) == 3
    empty = [r for r in trivial if r["task_id"] == "cardiac_multi"]
    assert [r["mask"].shape for r in mean] == [r["mask"].shape for r in empty]  # each image's own size
    assert all(r["mask"].any() for r in mean)  # the blobs sit near the centre of every image

    report_trivial = evaluate_records(val_root, trivial)
    report_mean = evaluate_records(val_root, mean)
    dsc = lambda report: report.per_task.set_index("task_id").loc["cardiac_multi", "DSC"]  # noqa: E731
    assert dsc(report_trivial) == 0 and dsc(report_mean) > 0
    assert report_mean.per_task.set_index("task_id").loc["organ_cls", "num_samples"] == 0  # segmentation only

    comparison = ea.compare_to_baselines(report_trivial.per_task, {"trivial": report_trivial.per_task,
                                                                  "mean mask": report_mean.per_task}, TASKS)
    dsc_row = comparison[(comparison["task_id"] == "cardiac_multi") & (comparison["metric"] == "DSC")].iloc[0]
    assert dsc_row["best_baseline"] == "mean mask" and dsc_row["baseline"] == dsc(report_mean)
    assert dsc_row["margin"] < 0 and not dsc_row["beats_baseline"]
    other = comparison[comparison["task_id"] != "cardiac_multi"]
    assert other["mean mask"].isna().all() and (other["best_baseline"] == "trivial").all()
    assert (other["margin"] == 0).all() and not other["beats_baseline"].any()  # the trivial baseline ties itself


def _per_task(rows):
    return pd.DataFrame(rows)


def test_compare_to_baselines_picks_the_strongest_baseline_in_the_metric_direction():
    model = _per_task([{"task_id": "FUGC", "task_type": "Regression", "MRE": 65.5},
                       {"task_id": "thyroid_nodule_det", "task_type": "detection", "IoU": 0.30}])
    a = _per_task([{"task_id": "FUGC", "MRE": 66.3}, {"task_id": "thyroid_nodule_det", "IoU": 0.40}])
    b = _per_task([{"task_id": "FUGC", "MRE": 70.0}, {"task_id": "thyroid_nodule_det", "IoU": 0.20}])
    table = ea.compare_to_baselines(model, {"a": a, "b": b}, TASKS).set_index("task_id")
    assert table.loc["FUGC", "best_baseline"] == "a" and table.loc["FUGC", "margin"] == pytest.approx(0.8)
    assert table.loc["FUGC", "relative_margin"] == pytest.approx(0.8 / 66.3)
    assert bool(table.loc["FUGC", "beats_baseline"])
    assert table.loc["thyroid_nodule_det", "best_baseline"] == "a"
    assert table.loc["thyroid_nodule_det", "margin"] == pytest.approx(-0.1)

    lines = ea.baseline_findings(table.reset_index())
    assert ea.baseline_findings(table.reset_index(), shown=0)[1] == (
        "  ... and 1 more (0 of all 1 are ties); the table below marks every one")
    assert lines[0] == "The model is no better than its strongest baseline on 1 of 2 task metrics (1 of 2 tasks):"
    assert lines[1] == "  thyroid_nodule_det IoU: 0.3 vs 0.4 (a baseline), 0.1 worse (25.0%)"
    assert lines[3] == "  FUGC MRE: 65.5 vs 66.3 (a baseline), 0.8 better (1.2%)"
    winning = ea.compare_to_baselines(model.iloc[:1], {"a": a}, TASKS)
    assert ea.baseline_findings(winning)[0] == "The model beats its strongest baseline on all 1 metrics of the 1 tasks."


# -- landmarks ---------------------------------------------------------------------------------------
def test_spread_ratio_measures_collapse_toward_the_mean():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.2, 0.8, (30, 2, 2))
    pred = truth.mean(axis=0) + 0.25 * (truth - truth.mean(axis=0)) + 0.1  # shrunk around a shifted mean
    np.testing.assert_allclose(ea.spread(pred), 0.25 * ea.spread(truth))
    np.testing.assert_allclose(ea.spread(np.zeros((5, 3, 2)) + 0.4), 0.0)

    size = (300, 400)  # height, width: points are compared in fractions of each image
    scale = np.array([400, 300], float)
    per_image = pd.DataFrame({"task_id": "FUGC", "task_type": "Regression", "size": [size] * 30,
                              "truth": list(truth * scale), "prediction": list(pred * scale)})
    table = ea.landmark_spread(per_image, TASKS)
    assert list(table["landmark"]) == list(TASKS["FUGC"].class_names)
    np.testing.assert_allclose(table["ratio"], 0.25)
    comparison = pd.DataFrame([{"task_id": "FUGC", "metric": "MRE", "model": 65.5, "baseline": 66.3,
                                "best_baseline": "trivial", "margin": 0.8, "relative_margin": 0.8 / 66.3}])
    (line,) = ea.landmark_findings(table, comparison)
    assert "spread 0.25x as widely" in line and "collapse toward one position" in line
    assert "MRE 65.5 px vs 66.3 px for the trivial baseline, 0.8 better (1.2%)." in line
    table["ratio"] = 1.0
    assert "vary about as much as the truth" in ea.landmark_findings(table, comparison)[0]


# -- boxes ------------------------------------------------------------------------------------------
def test_iou_by_box_size_splits_each_task_into_equal_groups():
    area = np.linspace(0.01, 0.12, 9)
    per_image = pd.DataFrame({"task_id": "thyroid_nodule_det", "task_type": "detection",
                              "box_area_fraction": area, "IoU": np.linspace(0.0, 0.8, 9)})
    table = ea.iou_by_box_size(per_image, bins=3)
    assert list(table["images"]) == [3, 3, 3] and list(table["size_bin"]) == [1, 2, 3]
    assert table["mean_IoU"].tolist() == pytest.approx([0.1, 0.4, 0.7])
    assert table["below_half"].tolist() == [3, 2, 0]
    (line,) = ea.box_size_findings(table, per_image)
    assert "mean IoU 0.10 on its 3 smallest boxes (1.0%-3.8% of the image; 3 below IoU 0.5)" in line
    assert "smaller boxes are found worse" in line and "Spearman rho(area, IoU) 1.00" in line
    flat = per_image.assign(IoU=0.6)
    assert "box size makes little difference" in ea.box_size_findings(ea.iou_by_box_size(flat), flat)[0]
    assert ea.iou_by_box_size(per_image.iloc[:1]).empty  # one image: nothing to compare
    two = per_image.iloc[[0, 8]]
    (line,) = ea.box_size_findings(ea.iou_by_box_size(two), two)
    assert line == ("thyroid_nodule_det: IoU 0.00 on its smallest box (1.0% of the image) vs IoU 0.80 on its "
                    "largest box (12.0%): smaller boxes are found worse.")  # no rank correlation of 2 images


# -- classes: per-image table, small classes, weakest ------------------------------------------------
@pytest.fixture
def scored(make_root, tmp_path):
    """A cardiac_multi + organ_cls root whose submission is the truth except: class 3 of
    cardiac_multi (the innermost blob) is never predicted, and organ_cls always says class 0."""
    root = make_root(tmp_path, tasks=("cardiac_multi", "organ_cls"), n=6)
    records = records_from_ground_truth(root)
    for r in records:
        if r["task_id"] == "cardiac_multi":
            r["mask"] = np.where(r["mask"] == 3, 0, r["mask"]).astype(np.uint8)
        else:
            r["probs"] = np.eye(6)[0]
    write_submission(tmp_path / "sub", records)
    val = read_root(root)
    return val, evaluate_submission(root, tmp_path / "sub"), ea.per_image_errors(val, tmp_path / "sub", TASKS)


def test_segmentation_classes_show_the_missed_small_class_with_its_area(scored):
    _, report, per_image = scored
    seg = per_image[per_image["task_type"] == "segmentation"]
    assert (seg["failure"] == "missed").all()
    classes = ea.segmentation_classes(report.per_class, per_image, TASKS).set_index("class_name")
    assert classes.loc["myocardium", "DSC"] == 1 and classes.loc["left_atrium", "DSC"] == 0
    assert classes.loc["left_atrium", "missed"] == classes.loc["left_atrium", "present"] == 6
    assert classes.loc["left_atrium", "area_share"] < classes.loc["left_ventricle", "area_share"]
    missed = ea.missed_small_classes(classes.reset_index())
    assert list(missed["class_name"]) == ["left_atrium"] and missed.loc[0, "best_DSC"] > 0.5
    assert missed.loc[0, "false alarm"] == 0 and missed.loc[0, "missed"] == 6  # every column carried over
    lines = ea.small_class_findings(missed)
    assert lines[0].startswith("1 class(es) score DSC below 0.1") and "missed outright in 6 of the 6 images" in lines[1]
    assert "so smaller than it" in lines[1]
    assert ea.small_class_findings(missed.iloc[:0])[0].startswith("No segmentation class scores DSC below 0.1")
    counts = ea.class_failure_table(classes.reset_index())
    assert counts.loc[("cardiac_multi", "left_atrium"), "missed"] == 6
    lines = ea.taxonomy_findings(counts)
    assert lines == ["cardiac_multi/left_ventricle: no failure in 6 cases.",
                     "cardiac_multi/myocardium: no failure in 6 cases.",
                     "cardiac_multi/left_atrium: 6 of 6 cases fail; most often missed (6)."]
    images = ea.taxonomy_findings(ea.failure_taxonomy(per_image))
    assert "segmentation: 6 of 6 cases fail; most often missed (6)." in images


def test_weakest_findings_name_the_weakest_task_and_classes(scored):
    _, report, per_image = scored
    seg = ea.segmentation_classes(report.per_class, per_image, TASKS)
    cls = ea.classification_classes(report.per_class, per_image, TASKS)
    assert cls.set_index("class_index").loc[0, "predicted"] == 6 and cls["support"].sum() == 6
    lines = ea.weakest_findings(report.per_task, seg, cls, k=2)
    assert lines[0].startswith("Weakest segmentation task by DSC: cardiac_multi at 0.667 (the only "
                               "segmentation task); per class left_ventricle 1.00")
    two = pd.concat([report.per_task, report.per_task.assign(task_id="other", DSC=0.9)])
    assert "(mean of the 2 segmentation tasks 0.783)" in ea.weakest_findings(two, seg, cls)[0]
    assert "left_atrium 0.00" in lines[0]
    assert lines[-2] == ("Lowest segmentation class DSC: cardiac_multi/left_atrium 0.00; "
                         "cardiac_multi/left_ventricle 1.00.")
    assert lines[-1].startswith("Lowest classification class F1: organ_cls/")
