"""The challenge metrics: hand-computed cases, and the Hausdorff distance against SimpleITK."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.distance import cdist

from fmuia_lib.challenge import metrics
from fmuia_lib.tasks import load_manifest

TASKS = load_manifest()


# -- Dice --------------------------------------------------------------------------------------
def test_dice_hand_computed_with_absent_class():
    pred = np.array([[0, 1], [1, 1]])
    gt = np.array([[0, 1], [0, 1]])
    # class 0: |P|=1, |G|=2, overlap 1 -> 2/3; class 1: |P|=3, |G|=2, overlap 2 -> 4/5;
    # class 2 is in neither mask -> 1
    np.testing.assert_allclose(metrics.dice_per_class(pred, gt, 3), [2 / 3, 4 / 5, 1.0])


def test_dice_one_sided_empty_and_out_of_range_prediction():
    gt = np.array([[1, 1], [0, 0]])
    pred = np.array([[7, 7], [0, 0]])  # value 7 is no class: class 1 is simply missed
    # class 0: the same two pixels in both -> 1; class 1: only in gt -> 0
    np.testing.assert_allclose(metrics.dice_per_class(pred, gt, 2), [1.0, 0.0])
    np.testing.assert_allclose(metrics.dice_per_class(np.array([[1, 1], [1, 0]]), gt, 2), [2 / 3, 0.8])


def test_dice_refuses_mismatched_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        metrics.dice_per_class(np.zeros((4, 4)), np.zeros((4, 5)), 2)


# -- Hausdorff, hand-computed ---------------------------------------------------------------------
def test_hausdorff_empty_mask_rules():
    gt = np.zeros((30, 40), np.uint8)
    gt[5:10, 5:10] = 1
    pred = np.zeros_like(gt)
    # class 0 present in both; class 1 only in gt -> diagonal sqrt(30^2 + 40^2) = 50;
    # class 2 in neither -> 0
    hd = metrics.hausdorff_per_class(pred, gt, 3)
    assert hd[1] == 50.0 and hd[2] == 0.0
    assert metrics.hausdorff_per_class(gt, pred, 3)[1] == 50.0  # symmetric
    assert metrics.hausdorff_pair(pred == 1, gt == 1, percentile=95) == 50.0


def test_hausdorff_single_pixels_3_4_5():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[1, 1] = True
    b[5, 4] = True  # 4 rows and 3 columns away
    assert metrics.hausdorff_pair(a, b) == 5.0
    assert metrics.hausdorff_pair(a, b, percentile=95) == 5.0


def test_hausdorff_uses_whole_masks_not_contours():
    # A filled 9x9 square against its own outline: every outline pixel is in the
    # square, but the square's centre is 4 pixels from the outline. Contour-based
    # distances would say 0; the challenge (SimpleITK on full masks) says 4.
    square = np.zeros((15, 15), bool)
    square[3:12, 3:12] = True
    outline = square & ~cv2.erode(square.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert metrics.hausdorff_pair(square, outline) == 4.0
    assert metrics.hausdorff_pair(square, outline, percentile=100) == 0.0


def test_hausdorff_identical_and_nested_masks():
    a = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b = np.zeros((20, 20), bool)
    b[2:15, 2:15] = True
    assert metrics.hausdorff_pair(a, a) == 0.0
    # the farthest point of b from a is corner (14, 14) vs a's corner (9, 9): 5*sqrt(2)
    assert metrics.hausdorff_pair(a, b) == pytest.approx(5 * math.sqrt(2), abs=1e-12)


def test_hd95_matches_brute_force_surface_distances():
    rng = np.random.default_rng(3)
    a = np.zeros((40, 50), np.uint8)
    b = np.zeros((40, 50), np.uint8)
    cv2.ellipse(a, (20, 18), (12, 8), 20, 0, 360, 1, -1)
    cv2.ellipse(b, (24, 21), (9, 11), 0, 0, 360, 1, -1)
    b[rng.integers(0, 40, 5), rng.integers(0, 50, 5)] = 1  # a few stray pixels

    def surface(mask):  # boundary incl. the image edge: 4-neighbour outside the mask
        padded = np.pad(mask, 1)
        inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        return np.argwhere(mask & ~inner)

    sa, sb = surface(a.astype(bool)), surface(b.astype(bool))
    d = cdist(sa, sb)
    pooled = np.concatenate([d.min(axis=1), d.min(axis=0)])
    assert metrics.hausdorff_pair(a, b, percentile=95) == pytest.approx(np.percentile(pooled, 95), abs=1e-12)


# -- Hausdorff against SimpleITK, the challenge's own implementation ------------------------------
def _sitk_hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """What the challenge computes for a class present in both masks."""
    filt = sitk.HausdorffDistanceImageFilter()
    filt.Execute(sitk.GetImageFromArray(a.astype(np.uint8) * 255), sitk.GetImageFromArray(b.astype(np.uint8) * 255))
    return filt.GetHausdorffDistance()


def _random_label_image(rng: np.random.Generator, shape: tuple[int, int], num_classes: int, kind: int) -> np.ndarray:
    h, w = shape
    mask = np.zeros(shape, np.uint8)
    if kind == 0:  # blobs, some touching the image edge
        for c in range(1, num_classes):
            for _ in range(int(rng.integers(1, 3))):
                centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                axes = (int(rng.integers(1, w // 2)), int(rng.integers(1, h // 2)))
                cv2.ellipse(mask, centre, axes, float(rng.integers(0, 180)), 0, 360, c, -1)
    elif kind == 1:  # salt-and-pepper noise
        mask = rng.integers(0, num_classes, shape).astype(np.uint8)
    else:  # rings and thin lines
        for c in range(1, num_classes):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(mask, centre, int(rng.integers(2, max(h, w) // 2)), c, int(rng.integers(1, 4)))
    return mask


def test_hausdorff_identical_to_simpleitk_on_random_masks():
    rng = np.random.default_rng(0)
    compared = 0
    for i in range(90):
        shape = (int(rng.integers(8, 120)), int(rng.integers(8, 120)))
        num_classes = int(rng.integers(2, 5))
        pred = _random_label_image(rng, shape, num_classes, i % 3)
        gt = _random_label_image(rng, shape, num_classes, (i // 3) % 3)
        ours = metrics.hausdorff_per_class(pred, gt, num_classes)
        for c in range(num_classes):
            if (pred == c).any() and (gt == c).any():
                assert ours[c] == _sitk_hausdorff(pred == c, gt == c), (i, c)  # bit for bit
                compared += 1
    assert compared > 150


def test_hausdorff_identical_to_simpleitk_at_512():
    rng = np.random.default_rng(1)
    for i in range(4):
        pred = _random_label_image(rng, (512, 512), 3, 0)
        gt = _random_label_image(rng, (512, 512), 3, 0)
        ours = metrics.hausdorff_per_class(pred, gt, 3)
        for c in range(3):
            if (pred == c).any() and (gt == c).any():
                assert ours[c] == _sitk_hausdorff(pred == c, gt == c)


def test_resize_nearest_is_opencv_nearest():
    small = np.array([[0, 1], [2, 3]], np.uint8)
    big = metrics.resize_nearest(small, (4, 6))
    assert big.shape == (4, 6)
    np.testing.assert_array_equal(big, cv2.resize(small, (6, 4), interpolation=cv2.INTER_NEAREST))
    assert set(np.unique(big)) == {0, 1, 2, 3}


# -- Classification -----------------------------------------------------------------------------
def test_binary_classification_hand_computed():
    y_true = [0, 1, 1, 0]
    p1 = np.array([0.1, 0.8, 0.4, 0.6])
    probs = np.stack([1 - p1, p1], axis=1)
    s = metrics.classification_scores(y_true, probs, 2)
    # predictions (arg-max) 0, 1, 0, 1: one hit per class -> accuracy 0.5, F1 0.5 each, MCC 0
    assert s["Accuracy"] == 0.5 and s["F1_macro"] == 0.5 and s["F1_weighted"] == 0.5
    assert s["MCC"] == 0.0
    # AUC: positives {0.8, 0.4} vs negatives {0.1, 0.6}: 3 of 4 pairs ranked right
    assert s["AUC"] == 0.75 and s["AUC_error"] is None


def test_stated_predicted_class_is_scored_not_the_argmax():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    s = metrics.classification_scores([0, 1], probs, 2, y_pred=[1, 1])
    assert s["Accuracy"] == 0.5
    assert s["AUC"] == 1.0


def test_multiclass_auc_one_vs_rest_macro():
    y_true = [0, 1, 2, 0, 1, 2]
    probs = np.array([[.8, .1, .1], [.1, .8, .1], [.1, .1, .8], [.5, .3, .2], [.3, .5, .2], [.2, .3, .5]])
    s = metrics.classification_scores(y_true, probs, 3)
    assert s["AUC"] == 1.0 and s["Accuracy"] == 1.0 and s["MCC"] == 1.0
    # columns of classes 0 and 1 swapped. Counting ranked pairs (ties count 1/2), positives
    # against negatives: class 0 scores 2/8, class 1 2.5/8, class 2 (unchanged) 8/8
    s = metrics.classification_scores(y_true, probs[:, [1, 0, 2]], 3)
    assert s["AUC"] == pytest.approx((2 / 8 + 2.5 / 8 + 1.0) / 3)


def test_auc_failure_is_explained_not_silent():
    s = metrics.classification_scores([1, 1, 1], np.array([[.3, .7], [.6, .4], [.2, .8]]), 2)
    assert s["AUC"] == 0.0
    assert "only one class present in y_true" in s["AUC_error"]
    s = metrics.classification_scores([0, 1, 0], np.full((3, 3), 1 / 3), 3)
    assert s["AUC"] == 0.0 and "absent: 2" in s["AUC_error"]
    s = metrics.classification_scores([0, 1], None, 2, y_pred=[0, 1])
    assert s["AUC"] == 0.0 and s["AUC_error"] == "no predicted probabilities" and s["Accuracy"] == 1.0


def test_f1_per_class_covers_every_class():
    s = metrics.classification_scores([0, 0, 1], None, 3, y_pred=[0, 1, 1])
    assert s["F1_per_class"] == [pytest.approx(2 / 3), pytest.approx(2 / 3), 0.0]


# -- Detection and landmarks --------------------------------------------------------------------
def test_box_iou_hand_computed():
    pred = [[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [1, 1, 1, 1]]
    gt = [[0, 0, 2, 2], [5, 5, 6, 6], [1, 0, 3, 2], [1, 1, 1, 1]]
    # perfect, disjoint, half-shifted (overlap 2, union 6), zero union -> 0
    np.testing.assert_allclose(metrics.box_iou(pred, gt), [1.0, 0.0, 1 / 3, 0.0])


def test_mean_radial_error_known_offsets():
    gt = np.array([[[0, 0], [10, 10]], [[5, 5], [5, 5]]], float)
    pred = np.array([[[3, 4], [10, 10]], [[5, 5], [11, 13]]], float)
    np.testing.assert_allclose(metrics.mean_radial_error(pred, gt), [2.5, 5.0])


# -- One task, and model selection -------------------------------------------------------------
def test_task_scores_for_every_type():
    gt = np.zeros((20, 30), np.uint8)
    gt[4:10, 6:16] = 1  # even edges: the half-size copy scales back exactly
    seg = metrics.task_scores(TASKS["breast_lesion"], [gt, gt[::2, ::2]], [gt, gt])
    assert seg["per_class"]["DSC"] == [1.0, 1.0] and seg["HD"] == 0.0 and seg["num_samples"] == 2
    shifted = np.roll(gt, 3, axis=1)  # 3 columns right: DSC 2*7*6/(2*60) = 0.7, HD 3
    seg = metrics.task_scores(TASKS["breast_lesion"], [shifted], [gt])
    assert seg["DSC"] == pytest.approx(0.7) and seg["HD"] == 3.0

    det = metrics.task_scores(TASKS["thyroid_nodule_det"], np.array([[0, 0, 2, 2]]), np.array([[1, 0, 3, 2]]))
    assert det["IoU"] == pytest.approx(1 / 3)

    reg = metrics.task_scores(TASKS["FUGC"], np.array([[[3, 4], [0, 0]]], float), np.zeros((1, 2, 2)),
                              image_sizes=[(60, 80)])
    assert reg["MRE"] == 2.5 and reg["NMRE"] == pytest.approx(2.5 / 100)

    cls = metrics.task_scores(TASKS["breast_2cls"], np.array([[.9, .1], [.2, .8]]), np.array([0, 1]))
    assert cls["Accuracy"] == 1.0 and cls["AUC"] == 1.0


def test_selection_score_means_task_qualities_and_refuses_missing_tasks():
    tasks = [TASKS["breast_lesion"], TASKS["thyroid_nodule_det"], TASKS["FUGC"], TASKS["breast_2cls"]]
    per_task = {"breast_lesion": {"DSC": 0.8}, "thyroid_nodule_det": {"IoU": 0.5},
                "FUGC": {"MRE": 5.0, "NMRE": 0.1},
                "breast_2cls": {"Accuracy": 0.5, "F1_macro": 0.4, "AUC": 0.0, "AUC_error": "only one class"}}
    # classification: AUC left out because it failed -> (0.5 + 0.4) / 2
    assert metrics.selection_score(per_task, tasks) == pytest.approx((0.8 + 0.5 + 0.9 + 0.45) / 4)
    with pytest.raises(KeyError, match="FUGC"):
        metrics.selection_score({k: v for k, v in per_task.items() if k != "FUGC"}, tasks)


# -- the numpy implementations against the libraries that define them -----------------------------
@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")  # scikit-learn's MCC, one label
def test_classification_metrics_equal_scikit_learn_on_random_inputs():
    from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score

    rng = np.random.default_rng(7)
    compared = 0
    for trial in range(300):
        num_classes = int(rng.integers(2, 7))
        n = int(rng.integers(2, 60))
        y_true = rng.integers(0, num_classes, n)
        y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, num_classes, n))
        logits = rng.normal(size=(n, num_classes)) + 2.0 * np.eye(num_classes)[y_true] * rng.random()
        if trial % 4 == 0:
            logits = np.round(logits, 1)  # ties in the scores
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        ours = metrics.classification_scores(y_true, probs, num_classes, y_pred=y_pred)
        assert ours["F1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0), abs=1e-12)
        assert ours["F1_weighted"] == pytest.approx(f1_score(y_true, y_pred, average="weighted", zero_division=0),
                                                    abs=1e-12)
        assert ours["MCC"] == pytest.approx(matthews_corrcoef(y_true, y_pred), abs=1e-12)
        assert ours["F1_per_class"] == pytest.approx(
            f1_score(y_true, y_pred, labels=list(range(num_classes)), average=None, zero_division=0), abs=1e-12)
        present = len(np.unique(y_true))
        if present == num_classes:
            expected = (roc_auc_score(y_true, probs[:, 1]) if num_classes == 2
                        else roc_auc_score(y_true, probs, average="macro", multi_class="ovr"))
            assert ours["AUC"] == pytest.approx(expected, abs=1e-12) and ours["AUC_error"] is None
            compared += 1
        else:
            assert ours["AUC"] == 0.0 and ours["AUC_error"]
    assert compared > 150


def test_multiclass_auc_refuses_rows_that_do_not_sum_to_one_like_scikit_learn():
    probs = np.array([[.5, .3, .2], [.2, .5, .3], [.1, .1, .7]])  # the last row sums to 0.9
    s = metrics.classification_scores([0, 1, 2], probs, 3)
    assert s["AUC"] == 0.0 and "sum up to 1.0" in s["AUC_error"]


def test_hausdorff_exact_beyond_the_float32_range():
    """Distances above 1448 px cannot be read exactly from float32 squares; they are
    measured point by point, and still equal the brute-force values bit for bit."""
    a = np.zeros((1200, 2100), bool)
    b = np.zeros_like(a)
    a[5:40, 3:30] = True
    b[1150:1190, 2050:2090] = True
    b[600:620, 1000:1010] = True
    pa, pb = np.argwhere(a), np.argwhere(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1).astype(np.float64))
    assert metrics.hausdorff_pair(a, b) == max(d.min(axis=1).max(), d.min(axis=0).max())
    assert metrics.hausdorff_pair(a, b) > 1448
    assert metrics.hausdorff_pair(a, b, percentile=95) > 1000  # the surface path takes the far branch too


def test_hd95_equals_brute_force_when_boundaries_are_far_apart_or_touch_the_edge():
    rng = np.random.default_rng(11)
    for _ in range(30):
        shape = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        a = _random_label_image(rng, shape, 2, int(rng.integers(0, 3))) == 1
        b = _random_label_image(rng, shape, 2, int(rng.integers(0, 3))) == 1
        if not (a.any() and b.any()):
            continue

        def surface(mask):
            padded = np.pad(mask, 1)
            inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
            return np.argwhere(mask & ~inner)

        d = np.sqrt(((surface(a)[:, None, :] - surface(b)[None, :, :]) ** 2).sum(-1).astype(np.float64))
        pooled = np.concatenate([d.min(axis=1), d.min(axis=0)])
        for p in (50, 95, 100):
            assert metrics.hausdorff_pair(a, b, percentile=p) == np.percentile(pooled, p)
