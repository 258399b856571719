"""Scoring a submission (`fmuia evaluate`) and checking its form (`fmuia validate-submission`)."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from fmuia_lib.cli import main as fmuia
from fmuia_lib.data.layout import read_root
from fmuia_lib.challenge.evaluate import evaluate_submission, validate_submission
from fmuia_lib.challenge.predict import records_from_ground_truth, write_submission


@pytest.fixture(scope="module")
def perfect(data_root, tmp_path_factory):
    """A perfect submission for the shared root (copy it before changing it)."""
    out = tmp_path_factory.mktemp("perfect") / "sub"
    write_submission(out, records_from_ground_truth(data_root))
    return out


@pytest.fixture
def submission(perfect, tmp_path):
    out = tmp_path / "sub"
    shutil.copytree(perfect, out)
    return out


def _edit_json(path, edit):
    items = json.loads(path.read_text())
    edit(items)
    path.write_text(json.dumps(items))


def _first_mask(data_root, submission):
    row = read_root(data_root).query("task_id == 'cardiac_multi'").iloc[0]
    return row, submission / row["mask_path"][3:]


# -- evaluate ------------------------------------------------------------------------------------
def test_scores_imperfect_predictions_by_hand(data_root, submission):
    frame = read_root(data_root)
    # detection: shift one box of thyroid_nodule_det right by half its width -> IoU 1/3
    det_rows = frame[frame["task_id"] == "thyroid_nodule_det"]
    target_path = det_rows.iloc[0]["image_path"]

    def shift(items):
        for e in items:
            if e["image_path"] == target_path:
                x0, y0, x1, y1 = e["bbox_pixels"]
                e["bbox_pixels"] = [x0 + (x1 - x0) / 2, y0, x1 + (x1 - x0) / 2, y1]
    _edit_json(submission / "detection_predictions.json", shift)
    # Regression: move every FUGC point by (3, 4) -> MRE 5
    def move(items):
        for e in items:
            if e["task_id"] == "FUGC":
                e["predicted_points_pixels"] = [v + (3 if i % 2 == 0 else 4)
                                                for i, v in enumerate(e["predicted_points_pixels"])]
    _edit_json(submission / "regression_predictions.json", move)
    report = evaluate_submission(data_root, submission)
    per_task = report.per_task.set_index("task_id")
    n = len(det_rows)
    assert per_task.loc["thyroid_nodule_det", "IoU"] == pytest.approx((n - 1 + 1 / 3) / n)
    assert per_task.loc["FUGC", "MRE"] == pytest.approx(5.0)
    assert per_task.loc["IUGC", "MRE"] == pytest.approx(0.0, abs=1e-9)
    assert report.summary["Regression_MRE"] == pytest.approx(2.5, abs=1e-9)  # mean over the two tasks
    assert report.summary["Detection_IoU"] == pytest.approx(((n - 1 + 1 / 3) / n + 1) / 2)


def test_segmentation_empty_prediction_scores_the_diagonal(data_root, submission):
    row, mask_file = _first_mask(data_root, submission)
    gt = cv2.imread(row["mask_file"], cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(mask_file), np.zeros_like(gt))
    report = evaluate_submission(data_root, submission)
    per_class = report.per_class.query("task_id == 'cardiac_multi'").set_index("class_index")
    n = int(report.coverage.set_index("task_id").loc["cardiac_multi", "expected"])
    diagonal = float(np.hypot(*gt.shape))
    for c in range(1, 4):
        assert per_class.loc[c, "HD"] == pytest.approx(diagonal / n)  # other images are perfect
        assert per_class.loc[c, "DSC"] == pytest.approx((n - 1) / n)


def test_a_mask_value_that_is_no_class_is_scored_as_the_challenge_does(data_root, submission, capsys):
    """The challenge compares pixels with each class index: a pixel of value 255 in a
    4-class mask belongs to no class. Scored (same numbers as an empty prediction), with a
    warning in the report and in validate-submission, not an error."""
    row, mask_file = _first_mask(data_root, submission)
    gt = cv2.imread(row["mask_file"], cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(mask_file), np.full_like(gt, 255))
    report = evaluate_submission(data_root, submission)
    assert report.complete and not report.invalid
    assert any("has value 255 >= num_classes 4" in w and "belong to no class" in w for w in report.warnings)
    per_class = report.per_class.query("task_id == 'cardiac_multi'").set_index("class_index")
    n = int(report.coverage.set_index("task_id").loc["cardiac_multi", "expected"])
    for c in range(1, 4):  # as an empty prediction: nothing of class c is predicted in that image
        assert per_class.loc[c, "DSC"] == pytest.approx((n - 1) / n)
        assert per_class.loc[c, "HD"] == pytest.approx(float(np.hypot(*gt.shape)) / n)
    assert fmuia(["validate-submission", str(submission), "--data", str(data_root)]) == 0
    assert "WARNING" in capsys.readouterr().out


def test_missing_predictions_are_counted_not_hidden(data_root, submission):
    _edit_json(submission / "classification_predictions.json", lambda items: items.pop(0))
    row, mask_file = _first_mask(data_root, submission)
    mask_file.unlink()
    report = evaluate_submission(data_root, submission)
    cov = report.coverage.set_index("task_id")
    assert cov["missing"].sum() == 2 and not report.complete
    assert cov.loc["cardiac_multi", "found"] == cov.loc["cardiac_multi", "expected"] - 1
    assert report.notes[0].startswith("INCOMPLETE: 2 expected predictions")
    assert "Coverage" in report.format() and "INCOMPLETE" in report.format()


def test_missing_json_file_leaves_type_unscored(data_root, submission):
    (submission / "detection_predictions.json").unlink()
    report = evaluate_submission(data_root, submission)
    assert report.summary["Detection_IoU"] is None
    assert any("detection_predictions.json is missing" in n for n in report.notes)
    assert report.summary["Segmentation_DSC"] == 1.0


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")  # MCC with one label
def test_auc_failure_is_reported(data_root, submission, tmp_path):
    # keep only class-0 images of organ_cls: AUC cannot be computed, and the report says why
    frame = read_root(data_root)
    keep = set(frame[(frame["task_id"] == "organ_cls") & (frame["target"] == 0)]["image_path"])
    _edit_json(submission / "classification_predictions.json",
               lambda items: items.__setitem__(slice(None), [e for e in items if e["task_id"] != "organ_cls"
                                                               or e["image_path"] in keep]))
    report = evaluate_submission(data_root, submission)
    row = report.per_task.set_index("task_id").loc["organ_cls"]
    assert row["AUC"] == 0.0 and "only one class present" in row["AUC_error"]
    assert any(n.startswith("organ_cls: AUC counted as 0") for n in report.notes)


def test_report_json_and_cli(data_root, perfect, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert fmuia(["evaluate", "--data", str(data_root), "--pred", str(perfect), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Leaderboard summary" in text and "Segmentation_DSC" in text and "Per class" in text
    saved = json.loads(out.read_text())
    assert saved["summary"]["Segmentation_DSC"] == 1.0 and saved["complete"] is True
    assert set(saved["challenge"]) == {"segmentation", "classification", "detection", "regression"}
    assert saved["challenge"]["segmentation"]["cardiac_multi"]["per_class"]["class_3"]["HD"] == 0.0


# -- validate-submission -------------------------------------------------------------------------
def test_valid_submission_passes_cli(data_root, perfect, capsys):
    assert validate_submission(perfect, data_root) == []
    assert fmuia(["validate-submission", str(perfect), "--data", str(data_root)]) == 0
    assert "OK" in capsys.readouterr().out


def _break_missing_file(data_root, sub):
    (sub / "regression_predictions.json").unlink()


def _break_missing_entry(data_root, sub):
    _edit_json(sub / "detection_predictions.json", lambda items: items.pop(2))


def _break_probs_sum(data_root, sub):
    _edit_json(sub / "classification_predictions.json",
               lambda items: items[0].__setitem__("predicted_probs", [0.5] * len(items[0]["predicted_probs"])))


def _break_probs_nan(data_root, sub):
    path = sub / "classification_predictions.json"
    path.write_text(path.read_text().replace("1.0", "NaN", 1))


def _break_probs_length(data_root, sub):
    _edit_json(sub / "classification_predictions.json", lambda items: items[0]["predicted_probs"].append(0.0))


def _break_box_order(data_root, sub):
    def swap(items):
        b = items[0]["bbox_pixels"]
        items[0]["bbox_pixels"] = [b[2], b[1], b[0], b[3]]
    _edit_json(sub / "detection_predictions.json", swap)


def _break_box_outside(data_root, sub):
    def grow(items):
        items[0]["bbox_pixels"][2] = 10_000.0
    _edit_json(sub / "detection_predictions.json", grow)


def _break_mask_size(data_root, sub):
    row, mask_file = _first_mask(data_root, sub)
    mask = cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(mask_file), mask[:-3])


def _break_mask_value(data_root, sub):
    row, mask_file = _first_mask(data_root, sub)
    mask = cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED)
    mask[0, 0] = 4  # cardiac_multi has 4 classes: 0..3
    cv2.imwrite(str(mask_file), mask)


def _break_mask_missing(data_root, sub):
    _first_mask(data_root, sub)[1].unlink()


def _break_duplicate(data_root, sub):
    _edit_json(sub / "regression_predictions.json", lambda items: items.append(dict(items[1])))


def _break_unknown(data_root, sub):
    def add(items):
        items.append({**items[0], "image_path": "../Classification/organ_cls/images/not_there.png"})
        items.append({**items[0], "task_id": "no_such_task"})
    _edit_json(sub / "classification_predictions.json", add)


def _break_points_length(data_root, sub):
    _edit_json(sub / "regression_predictions.json", lambda items: items[0]["predicted_points_pixels"].pop())


@pytest.mark.parametrize("breaker, message", [
    (_break_missing_file, "regression_predictions.json: missing (12 Regression predictions expected)"),
    (_break_missing_entry, "detection_predictions.json: missing entry for"),
    (_break_probs_sum, "must lie in [0, 1] and sum to 1"),
    (_break_probs_nan, "is not a list of finite numbers"),
    (_break_probs_length, "predicted_probs, "),
    (_break_box_order, "needs x_min <= x_max"),
    (_break_mask_missing, "predicted mask missing"),
    (_break_duplicate, "duplicate entry (first at regression_predictions.json[1])"),
    (_break_unknown, "unknown entry (image not in the ground truth CSVs)"),
    (_break_unknown, "unknown entry (unknown task_id)"),
    (_break_points_length, "is not a list of 4 finite numbers"),
])
def test_validator_catches_each_malformed_case(data_root, submission, capsys, breaker, message):
    breaker(data_root, submission)
    problems = validate_submission(submission, data_root)
    assert any(message in p for p in problems), problems
    assert fmuia(["validate-submission", str(submission), "--data", str(data_root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("ERROR ") and message in line for line in out), out
    report = evaluate_submission(data_root, submission)
    assert not report.complete  # what validate-submission calls an error, the scorer cannot use


def test_unreadable_json_is_a_problem_and_a_clear_error(data_root, submission, capsys):
    (submission / "detection_predictions.json").write_text("{not json")
    assert any("detection_predictions.json: cannot read JSON" in p for p in validate_submission(submission, data_root))
    assert fmuia(["evaluate", "--data", str(data_root), "--pred", str(submission)]) == 2
    assert "cannot read JSON" in capsys.readouterr().err


def test_bad_ground_truth_root_exits_2(tmp_path, submission, capsys):
    (tmp_path / "empty").mkdir()
    assert fmuia(["validate-submission", str(submission), "--data", str(tmp_path / "empty")]) == 2
    assert "csv_files" in capsys.readouterr().err


def test_the_scorer_imports_neither_torch_nor_pandas(tmp_path):
    import subprocess
    import sys

    code = ("import sys, fmuia_lib.challenge.evaluate, fmuia_lib.cli; "
            "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'pandas', 'sklearn', 'scipy') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_scoring_imports_neither_torch_nor_pandas_either(data_root, perfect):
    import subprocess
    import sys

    code = ("import sys; from fmuia_lib.cli import main; "
            f"status = main(['evaluate', '--data', {str(data_root)!r}, '--pred', {str(perfect)!r}]); "
            "print('LOADED', sorted(m for m in ('torch', 'pandas', 'sklearn', 'scipy') if m in sys.modules), status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "LOADED [] 0"
