"""The baseline's per-batch validation rule, checked against a hand computation.

A stub model returns fixed outputs per validation row (the row number is written into
each image), so every per-batch metric can be worked out by hand below.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fmuia_lib.heads import ClassificationTaskHead, GridDetectionHead, LinearLandmarkHead, SegmentationTaskHead
from fmuia_lib.tasks import select_tasks
from fmuia_lib.training.per_batch_validation import per_batch_selection_score, validate_per_batch

TASKS = {t.task_id: t for t in select_tasks(["organ_cls", "breast_2cls", "breast_lesion", "thyroid_nodule_det",
                                             "FUGC"])}


def _cls(true: int, predicted: int, classes: int):
    logits = torch.zeros(classes)
    logits[predicted] = 5.0
    return torch.tensor(true), logits


def _seg(true, predicted):
    true, predicted = torch.tensor(true), torch.tensor(predicted)
    return true, torch.stack([(predicted == 0).float(), (predicted == 1).float()]) * 4.0


def _det(true, cells):
    """cells: [(row, col, objectness, box)] on a 2 x 2 map."""
    out = torch.zeros(5, 2, 2)
    out[4] = -9.0
    for r, c, score, box in cells:
        out[:4, r, c] = torch.tensor(box)
        out[4, r, c] = score
    return torch.tensor(true), out


def _reg(true, predicted):
    return torch.tensor(true), torch.tensor(predicted)


# Validation rows in the split's order; batches of 4 mix tasks:
#   batch 1: rows 0-3 = organ 0, lesion 0, organ 1, box 0
#   batch 2: rows 4-7 = points 0, organ 2, lesion 1, box 1
#   batch 3: rows 8-10 = points 1, organ 3, breast 0
ROWS = [
    ("organ_cls", *_cls(0, 0, 6)),
    ("breast_lesion", *_seg([[1, 0], [0, 0]], [[1, 1], [0, 0]])),
    ("organ_cls", *_cls(1, 0, 6)),
    ("thyroid_nodule_det", *_det([0.1, 0.1, 0.5, 0.5], [(1, 0, 2.0, [0.1, 0.1, 0.3, 0.5])])),
    ("FUGC", *_reg([[0.5, 0.5], [0.25, 0.25]], [[0.5, 0.75], [0.25, 0.25]])),
    ("organ_cls", *_cls(1, 1, 6)),
    ("breast_lesion", *_seg([[0, 0], [0, 0]], [[0, 0], [0, 0]])),
    # the box is read at the cell of highest objectness (0, 0), not at the exact box of cell (1, 1)
    ("thyroid_nodule_det", *_det([0.5, 0.5, 0.9, 0.9], [(0, 0, 5.0, [0.5, 0.5, 0.7, 0.9]),
                                                        (1, 1, 1.0, [0.5, 0.5, 0.9, 0.9])])),
    ("FUGC", *_reg([[0.5, 0.5], [0.5, 0.5]], [[0.625, 0.625], [0.625, 0.625]])),
    ("organ_cls", *_cls(2, 1, 6)),
    ("breast_2cls", *_cls(0, 0, 2)),
]
IMAGE = 8  # images are 8 x 8: MAE in pixels = normalised error x 8


class StubModel(nn.Module):
    """Returns ROWS' outputs for the rows whose number is in the images; real heads decode them."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks = TASKS
        self.heads = nn.ModuleDict({"organ_cls": ClassificationTaskHead(4, 6), "breast_2cls": ClassificationTaskHead(4, 2),
                                    "breast_lesion": SegmentationTaskHead(4, 2),
                                    "thyroid_nodule_det": GridDetectionHead(4), "FUGC": LinearLandmarkHead(4, 2)})

    def task(self, task_id):
        return self.tasks[task_id]

    def forward(self, images, task_id):
        rows = images[:, 0, 0, 0].round().long().tolist()
        assert all(ROWS[r][0] == task_id for r in rows), "a task's rows went to another task's head"
        return torch.stack([ROWS[r][2] for r in rows])


def _dataset():
    return [{"image": torch.full((3, IMAGE, IMAGE), float(i)), "task_id": task_id,
             "task_type": TASKS[task_id].task_type, "target": target, "orig_size": (IMAGE, IMAGE),
             "source": f"rows.csv:{i + 2}"} for i, (task_id, target, _) in enumerate(ROWS)]


def test_per_batch_metrics_match_the_hand_computation():
    results = validate_per_batch(StubModel(), _dataset(), "cpu", batch_size=4)
    eps = 1e-6
    # organ_cls: batch 1 (true 0, 1 / predicted 0, 0): accuracy 1/2, macro F1 = (2/3 + 0) / 2 = 1/3;
    # batch 2 (1 / 1): 1 and 1; batch 3 (2 / 1): 0 and 0 -> means 1/2 and 4/9
    assert results["organ_cls"]["Accuracy"] == pytest.approx(0.5)
    assert results["organ_cls"]["F1-Score"] == pytest.approx(4 / 9)
    assert results["organ_cls"]["num_batches"] == 3
    # (the whole set would give macro F1 over classes 0, 1, 2 = (2/3 + 1/2 + 0) / 3 = 7/18, not 4/9)
    # breast_2cls: one batch, one row, right
    assert results["breast_2cls"]["Accuracy"] == 1.0 and results["breast_2cls"]["F1-Score"] == 1.0
    # breast_lesion: batch 1: inter 1, |gt| 1 + |pred| 2 -> (2 + eps) / (3 + eps); batch 2: both empty -> 1
    assert results["breast_lesion"]["Dice"] == pytest.approx(((2 + eps) / (3 + eps) + 1.0) / 2, abs=1e-12)
    # boxes: batch 1: inter 0.2 x 0.4 = 0.08, union 0.16 + 0.08 - 0.08 -> 0.08 / (0.16 + eps);
    # batch 2 (read at the top cell): inter 0.2 x 0.4, union 0.16 -> 0.08 / (0.16 + eps)
    assert results["thyroid_nodule_det"]["IoU"] == pytest.approx(0.08 / (0.16 + eps), rel=1e-6)
    # points: batch 1: |errors| (0, 0.25, 0, 0) x 8 px -> mean 0.5; batch 2: 0.125 x 8 = 1 everywhere -> 1
    assert results["FUGC"]["MAE (pixels)"] == pytest.approx(0.75)
    assert math.isnan(results["FUGC"]["score"])
    assert results["organ_cls"]["score"] == pytest.approx((0.5 + 4 / 9) / 2)


def test_selection_is_the_mean_of_column_means_without_regression():
    results = validate_per_batch(StubModel(), _dataset(), "cpu", batch_size=4)
    eps = 1e-6
    accuracy = (0.5 + 1.0) / 2  # column mean over organ_cls and breast_2cls
    f1 = (4 / 9 + 1.0) / 2
    dice = ((2 + eps) / (3 + eps) + 1.0) / 2
    iou = 0.08 / (0.16 + eps)
    assert per_batch_selection_score(results) == pytest.approx((accuracy + f1 + dice + iou) / 4, rel=1e-6)
    # Regression is left out: changing its error changes nothing
    worse = {**results, "FUGC": {**results["FUGC"], "MAE (pixels)": 1e6}}
    assert per_batch_selection_score(worse) == per_batch_selection_score(results)
    assert per_batch_selection_score({"FUGC": results["FUGC"]}) == 0.0


def test_batch_size_changes_the_per_batch_result():
    """The rule depends on how rows fall into batches (the whole-set metrics would not)."""
    fours = validate_per_batch(StubModel(), _dataset(), "cpu", batch_size=4)
    whole = validate_per_batch(StubModel(), _dataset(), "cpu", batch_size=len(ROWS))
    # one batch: organ_cls accuracy 2/4 and macro F1 over classes 0, 1, 2 = (2/3 + 1/2 + 0) / 3
    assert whole["organ_cls"]["F1-Score"] == pytest.approx(7 / 18)
    assert fours["organ_cls"]["F1-Score"] != pytest.approx(whole["organ_cls"]["F1-Score"])
