"""The challenge metrics, defined exactly as the FM_UIA 2026 evaluator defines them.

Plain numpy / scipy / scikit-learn, so that training-time validation, the submission
scorer (:mod:`fmuia_lib.evaluate`) and the notebooks all compute the same numbers.

Segmentation (per image, per class ``c``, masks at ground-truth resolution)
    * **DSC** ``2|P∩G| / (|P|+|G|)``; both masks empty: 1.
    * **HD**, the full (100th percentile) Hausdorff distance in pixels between the
      *whole* pixel sets ``P = pred == c`` and ``G = gt == c`` (not their contours), as
      SimpleITK's ``HausdorffDistanceImageFilter`` measures it. Both empty: 0; exactly
      one empty: the image diagonal ``sqrt(H² + W²)``.
    * Per class: mean over images; per task: mean over the foreground classes ``1..C-1``.
Classification
    Accuracy; AUC (two classes: score of class 1; more: one-vs-rest macro); F1 macro and
    weighted; Matthews correlation (MCC). A failed AUC counts 0, as in the challenge,
    and the reason is reported in ``AUC_error``.
Detection
    IoU of pixel boxes ``[x_min, y_min, x_max, y_max]`` (no ``+1`` pixel convention;
    an empty union scores 0), mean over images.
Regression
    MRE: per image the mean Euclidean distance between predicted and true landmarks in
    original pixels, then the mean over images.

How the Hausdorff distance is computed fast, yet exactly
--------------------------------------------------------
The directed distance ``h(A, B) = max_{a in A} min_{b in B} |a - b|`` only needs the
points of ``A`` that lie outside ``B`` (the others are at distance 0), and the nearest
pixel of ``B`` to a point outside ``B`` is always a *boundary* pixel of ``B`` (a step
from any interior pixel towards the point would be closer). So the work happens in
the box around ``A \\ B`` and the boundary of ``B`` (small for most classes, even the
background). There, OpenCV's fast float32 distance transform finds the few points of
``A \\ B`` near the maximum, and a k-d tree (:class:`scipy.spatial.cKDTree`) over the
boundary of ``B`` gives their exact distances. Pixel coordinates are integers, so each
distance is the square root of an exact integer: the values are identical, bit for
bit, to SimpleITK's (the tests check this).
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
from scipy.spatial import cKDTree
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score

from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec

#: The leaderboard columns: (column, task type, per-task metric key).
LEADERBOARD_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("Segmentation_DSC", SEGMENTATION, "DSC"),
    ("Segmentation_HD", SEGMENTATION, "HD"),
    ("Classification_Accuracy", CLASSIFICATION, "Accuracy"),
    ("Classification_AUC", CLASSIFICATION, "AUC"),
    ("Classification_F1_macro", CLASSIFICATION, "F1_macro"),
    ("Classification_F1_weighted", CLASSIFICATION, "F1_weighted"),
    ("Classification_MCC", CLASSIFICATION, "MCC"),
    ("Detection_IoU", DETECTION, "IoU"),
    ("Regression_MRE", REGRESSION, "MRE"),
)

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)


# --------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------
def resize_nearest(pred: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``pred`` resized to ``(height, width) = shape[:2]`` with nearest neighbour.

    This is how the challenge brings a predicted mask to the ground-truth size
    (``cv2.INTER_NEAREST``); an already matching mask is returned unchanged.
    """
    height, width = int(shape[0]), int(shape[1])
    if pred.shape[:2] == (height, width):
        return pred
    return cv2.resize(pred, (width, height), interpolation=cv2.INTER_NEAREST)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"masks must be 2-D label images, got shapes {pred.shape} and {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size; "
                         "resize the prediction first (metrics.resize_nearest)")


def dice_per_class(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice score of every class ``0..num_classes-1`` (background included), shape ``(C,)``.

    A class absent from both masks scores 1. Prediction values ``>= num_classes``
    belong to no class (they only lower the scores of the classes they cover).
    """
    _check_pair(pred, gt)
    dice = np.ones(num_classes, dtype=np.float64)
    for c in range(num_classes):
        in_pred, in_gt = pred == c, gt == c
        total = np.count_nonzero(in_pred) + np.count_nonzero(in_gt)
        if total:
            dice[c] = 2.0 * np.count_nonzero(in_pred & in_gt) / total
    return dice


def _boundary(mask: np.ndarray, edge_is_outside: bool) -> np.ndarray:
    """Pixels of boolean ``mask`` that have a 4-neighbour outside it.

    ``edge_is_outside`` decides whether pixels on the image edge count as boundary
    (surface distances, HD95) or not (the full Hausdorff distance, where only
    neighbours inside the image matter).
    """
    m = np.ascontiguousarray(mask).view(np.uint8)
    eroded = cv2.erode(m, _CROSS, borderType=cv2.BORDER_CONSTANT,
                       borderValue=0 if edge_is_outside else 1)
    return m > eroded


def _bounding_slices(mask: np.ndarray) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _nearest_distances(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Exact distance from each row of ``points`` to its nearest row of ``targets`` (pixels)."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.float64)
    distances, _ = cKDTree(targets).query(points, k=1)
    return np.asarray(distances, dtype=np.float64)


#: Candidates kept from the fast float32 distance map: within this many pixels of its
#: maximum. OpenCV's precise transform is exact up to float32 rounding (< 1e-3 px here),
#: so the true maximiser is always among them.
_CANDIDATE_MARGIN = 0.5


def _directed_hausdorff(src: np.ndarray, dst: np.ndarray) -> float:
    """``max_{a in src} min_{b in dst} |a - b|`` for non-empty boolean masks, exactly.

    1. Only ``src`` pixels outside ``dst`` matter, and the nearest ``dst`` pixel of such a
       point is a boundary pixel of ``dst``: so work in the box around both sets.
    2. A fast float32 distance map (``cv2.distanceTransform``) there finds the few
       candidates near the maximum; a k-d tree gives their exact float64 distances.
    """
    outside = src & ~dst
    if not outside.any():
        return 0.0
    edge = _boundary(dst, edge_is_outside=False)
    rows, cols = _bounding_slices(outside | edge)
    outside, edge = outside[rows, cols], edge[rows, cols]
    approx = cv2.distanceTransform((~edge).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    values = approx[outside]
    candidates = np.argwhere(outside)[values >= values.max() - _CANDIDATE_MARGIN]
    return float(_nearest_distances(candidates, np.argwhere(edge)).max())


def _surface_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances from every boundary pixel of ``a`` to the boundary of ``b`` and back, pooled."""
    edge_a = np.argwhere(_boundary(a, edge_is_outside=True))
    edge_b = np.argwhere(_boundary(b, edge_is_outside=True))
    return np.concatenate([_nearest_distances(edge_a, edge_b), _nearest_distances(edge_b, edge_a)])


def hausdorff_pair(a: np.ndarray, b: np.ndarray, percentile: float | None = None) -> float:
    """Hausdorff distance between two boolean masks of one image, in pixels.

    ``percentile=None`` gives the challenge's full Hausdorff distance between the whole
    pixel sets (SimpleITK semantics). A number ``p`` gives the ``p``-th percentile of the
    symmetric surface distances (boundary pixels of each mask to the other's boundary,
    pooled), e.g. ``95`` for the common HD95. Empty-mask rules for both: both empty 0,
    exactly one empty the image diagonal.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    _check_pair(a, b)
    has_a, has_b = bool(a.any()), bool(b.any())
    if not has_a and not has_b:
        return 0.0
    if not (has_a and has_b):
        height, width = a.shape
        return float(np.sqrt(height ** 2 + width ** 2))
    if percentile is None:
        return max(_directed_hausdorff(a, b), _directed_hausdorff(b, a))
    return float(np.percentile(_surface_distances(a, b), percentile))


def hausdorff_per_class(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                        percentile: float | None = None) -> np.ndarray:
    """Hausdorff distance of every class ``0..num_classes-1``, shape ``(C,)``, in pixels.

    See :func:`hausdorff_pair` for the definition and the empty-mask rules.
    """
    _check_pair(pred, gt)
    return np.array([hausdorff_pair(pred == c, gt == c, percentile) for c in range(num_classes)],
                    dtype=np.float64)


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------
def _auc(y_true: np.ndarray, probs: np.ndarray | None, num_classes: int) -> tuple[float, str | None]:
    """(AUC, reason it could not be computed or None). A failed AUC counts 0."""
    if probs is None:
        return 0.0, "no predicted probabilities"
    if probs.ndim != 2 or probs.shape != (len(y_true), num_classes):
        return 0.0, f"probabilities have shape {probs.shape}, expected ({len(y_true)}, {num_classes})"
    present = np.unique(y_true)
    if len(present) < 2:
        return 0.0, (f"only one class present in y_true (class {present[0]}); "
                     "ROC AUC is not defined")
    if num_classes > 2 and len(present) < num_classes:
        absent = sorted(set(range(num_classes)) - set(present.tolist()))
        return 0.0, (f"only {len(present)} of {num_classes} classes present in y_true (absent: "
                     f"{', '.join(map(str, absent))}); one-vs-rest AUC needs every class")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UndefinedMetricWarning)
            if num_classes == 2:
                auc = roc_auc_score(y_true, probs[:, 1])
            else:
                auc = roc_auc_score(y_true, probs, average="macro", multi_class="ovr")
    except (ValueError, UndefinedMetricWarning) as err:
        return 0.0, str(err)
    if not np.isfinite(auc):
        return 0.0, "ROC AUC is undefined (not finite)"
    return float(auc), None


def classification_scores(y_true: Sequence[int] | np.ndarray, probs: np.ndarray | None,
                          num_classes: int, y_pred: Sequence[int] | np.ndarray | None = None
                          ) -> dict[str, Any]:
    """Accuracy, AUC, F1_macro, F1_weighted, MCC and AUC_error of one task.

    ``probs`` is ``(N, C)``; ``y_pred`` defaults to its arg-max (a submission states its
    ``predicted_class`` separately, and the challenge scores that). Following the
    challenge, F1 is taken over the labels that occur in ``y_true`` or ``y_pred``;
    ``F1_per_class`` (not a challenge number) is over all ``C`` classes.
    ``AUC_error`` explains why the AUC is 0 when it could not be computed
    (e.g. only one class present in ``y_true``); it is None otherwise.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = None if probs is None else np.asarray(probs, dtype=np.float64)
    if y_pred is None:
        if probs is None:
            raise ValueError("give probs or y_pred")
        y_pred = probs.argmax(axis=1)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if len(y_true) == 0 or len(y_true) != len(y_pred):
        raise ValueError(f"need as many predictions as labels (>0); got {len(y_pred)} and {len(y_true)}")
    auc, auc_error = _auc(y_true, probs, num_classes)
    return {
        "Accuracy": float(np.mean(y_true == y_pred)),
        "AUC": auc,
        "F1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "F1_weighted": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "MCC": float(matthews_corrcoef(y_true, y_pred)),
        "AUC_error": auc_error,
        "F1_per_class": [float(v) for v in f1_score(y_true, y_pred, labels=list(range(num_classes)),
                                                     average=None, zero_division=0)],
        "num_samples": int(len(y_true)),
    }


# --------------------------------------------------------------------------------------
# Detection and landmarks
# --------------------------------------------------------------------------------------
def box_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of matching rows of two ``(N, 4)`` arrays of pixel boxes ``[x_min, y_min, x_max, y_max]``.

    Intersection sides are clipped at 0; areas are ``(x_max-x_min)*(y_max-y_min)``;
    a zero union scores 0.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    if pred.shape != gt.shape:
        raise ValueError(f"box arrays differ in shape: {pred.shape} vs {gt.shape}")
    inter_w = np.maximum(0.0, np.minimum(pred[:, 2], gt[:, 2]) - np.maximum(pred[:, 0], gt[:, 0]))
    inter_h = np.maximum(0.0, np.minimum(pred[:, 3], gt[:, 3]) - np.maximum(pred[:, 1], gt[:, 1]))
    inter = inter_w * inter_h
    union = ((pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
             + (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]) - inter)
    iou = np.zeros(len(pred), dtype=np.float64)
    nonzero = union != 0
    iou[nonzero] = inter[nonzero] / union[nonzero]
    return iou


def mean_radial_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per image, the mean Euclidean distance between matching landmarks: ``(N, K, 2) -> (N,)``."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[2] != 2:
        raise ValueError(f"need two (N, K, 2) arrays of the same shape; got {pred.shape} and {gt.shape}")
    return np.sqrt(np.sum((pred - gt) ** 2, axis=2)).mean(axis=1)


# --------------------------------------------------------------------------------------
# One task, and a single model-selection number
# --------------------------------------------------------------------------------------
class SegmentationScorer:
    """Accumulates one segmentation task image by image (masks need not stay in memory).

    ``add(pred, gt)`` resizes ``pred`` to ``gt``'s size (nearest neighbour) and records
    the per-class DSC, HD and, with ``hd95=True``, HD95 of that image; ``result()``
    gives the per-class means over images and their means over the foreground classes.
    """

    def __init__(self, num_classes: int, hd95: bool = True) -> None:
        self.num_classes = num_classes
        self.rows: dict[str, list[np.ndarray]] = {"DSC": [], "HD": []}
        if hd95:
            self.rows["HD95"] = []

    def __len__(self) -> int:
        return len(self.rows["DSC"])

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred = resize_nearest(np.asarray(pred), gt.shape)
        self.rows["DSC"].append(dice_per_class(pred, gt, self.num_classes))
        self.rows["HD"].append(hausdorff_per_class(pred, gt, self.num_classes))
        if "HD95" in self.rows:
            self.rows["HD95"].append(hausdorff_per_class(pred, gt, self.num_classes, percentile=95))

    def result(self) -> dict[str, Any]:
        """``{DSC, HD[, HD95]: foreground means, per_class: {name: [C means]}, num_samples}``."""
        if not len(self):
            raise ValueError("no image was scored")
        per_class = {name: np.mean(rows, axis=0) for name, rows in self.rows.items()}
        scores: dict[str, Any] = {name: float(np.mean(values[1:])) if self.num_classes > 1 else 0.0
                                  for name, values in per_class.items()}
        scores["per_class"] = {name: [float(v) for v in values] for name, values in per_class.items()}
        scores["num_samples"] = len(self)
        return scores


def segmentation_scores(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], num_classes: int,
                        hd95: bool = True) -> dict[str, Any]:
    """DSC, HD (and HD95) of one segmentation task from lists of masks (see :class:`SegmentationScorer`)."""
    if len(preds) != len(gts) or not gts:
        raise ValueError(f"need as many predicted as true masks (>0); got {len(preds)} and {len(gts)}")
    scorer = SegmentationScorer(num_classes, hd95=hd95)
    for pred, gt in zip(preds, gts):
        scorer.add(pred, gt)
    return scorer.result()


def task_scores(task: TaskSpec, preds: Any, gts: Any,
                image_sizes: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
    """One task's challenge numbers from predictions and ground truth.

    ==============  ===============================  ================================
    task type       ``preds``                         ``gts``
    ==============  ===============================  ================================
    segmentation    label masks (any size)            label masks (the reference size)
    classification  probabilities ``(N, C)``          labels ``(N,)``
    detection       boxes ``(N, 4)`` xyxy             boxes ``(N, 4)`` xyxy
    Regression      points ``(N, K, 2)`` xy           points ``(N, K, 2)`` xy
    ==============  ===============================  ================================

    Coordinates must share one frame (original pixels for challenge numbers). For
    Regression the result also holds ``NMRE``: each image's mean radial error divided
    by its diagonal, averaged (``image_sizes`` gives ``(height, width)`` per image; without
    it the points are taken as normalised to ``[0, 1]`` and the diagonal is ``sqrt(2)``).
    """
    if task.task_type == SEGMENTATION:
        return segmentation_scores(list(preds), list(gts), task.num_classes)
    if task.task_type == CLASSIFICATION:
        return classification_scores(gts, preds, task.num_classes)
    if task.task_type == DETECTION:
        iou = box_iou(preds, gts)
        return {"IoU": float(iou.mean()), "num_samples": len(iou)}
    if task.task_type == REGRESSION:
        mre = mean_radial_error(preds, gts)
        if image_sizes is None:
            diagonal = np.full(len(mre), np.sqrt(2.0))
        else:
            sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
            diagonal = np.hypot(sizes[:, 0], sizes[:, 1])
        return {"MRE": float(mre.mean()), "NMRE": float((mre / diagonal).mean()),
                "num_samples": len(mre)}
    raise ValueError(f"{task.task_id}: unknown task type {task.task_type!r}")


def task_quality(task: TaskSpec, scores: Mapping[str, Any]) -> float:
    """One number in [0, 1] (higher is better) for a task's scores.

    segmentation: DSC; classification: mean of Accuracy, F1_macro and AUC (AUC left out
    when it could not be computed); detection: IoU; Regression: ``1 - NMRE``, clipped at 0.
    """
    if task.task_type == SEGMENTATION:
        return float(scores["DSC"])
    if task.task_type == CLASSIFICATION:
        parts = [scores["Accuracy"], scores["F1_macro"]]
        if scores.get("AUC_error") is None:
            parts.append(scores["AUC"])
        return float(np.mean(parts))
    if task.task_type == DETECTION:
        return float(scores["IoU"])
    if task.task_type == REGRESSION:
        if "NMRE" not in scores:
            raise KeyError(f"{task.task_id}: Regression scores need 'NMRE' (see metrics.task_scores)")
        return float(max(0.0, 1.0 - scores["NMRE"]))
    raise ValueError(f"{task.task_id}: unknown task type {task.task_type!r}")


def selection_score(per_task: Mapping[str, Mapping[str, Any]], tasks: Sequence[TaskSpec]) -> float:
    """Model-selection score: the mean of :func:`task_quality` over ``tasks``, all types alike.

    Every task in ``tasks`` must have scores in ``per_task`` (a missing one is an error,
    never silently dropped).
    """
    missing = [t.task_id for t in tasks if t.task_id not in per_task]
    if missing:
        raise KeyError(f"no scores for task(s) {missing}")
    if not tasks:
        raise ValueError("selection_score needs at least one task")
    return float(np.mean([task_quality(t, per_task[t.task_id]) for t in tasks]))
