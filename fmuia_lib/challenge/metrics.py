"""The challenge metrics, defined exactly as the FM_UIA 2026 evaluator defines them.

Plain numpy / scipy / scikit-learn, so that training-time validation, the submission
scorer (:mod:`fmuia_lib.challenge.evaluate`) and the notebooks all compute the same numbers.

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
from any interior pixel towards the point would be closer). So one distance transform
to the boundary of ``B``, on the crop that holds ``A \\ B`` and that boundary, gives
every distance that matters (OpenCV's exact Euclidean transform, ``DIST_MASK_PRECISE``).
Pixel coordinates are integers, so every distance is the square root of an integer
``n``; the transform returns it in float32, from which ``n`` is recovered exactly (for
``n < 2**21``, i.e. distances below 1448 px; larger ones are measured point by point)
and ``sqrt(n)`` taken in float64: the values are identical, bit for bit, to SimpleITK's
(the tests check this). HD95 uses the same transform between the two boundaries.

Only numpy and OpenCV are used: the scorer is imported by ``fmuia evaluate``, whose
whole run should not wait for importing scikit-learn or torch
(``benchmarks/bench_metrics.py`` times it). The
classification metrics are therefore written out below, by the definitions
scikit-learn implements (the tests check them against scikit-learn on random inputs).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from fmuia_lib.tasks import (CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TASK_TYPES, ManifestError,
                             TaskSpec, load_manifest)

#: Every challenge metric the manifest may name, and whether higher is better.
HIGHER_IS_BETTER: dict[str, bool] = {"DSC": True, "HD": False, "Accuracy": True, "AUC": True, "F1_macro": True,
                                     "F1_weighted": True, "MCC": True, "IoU": True, "MRE": False}


def _challenge_metrics() -> dict[str, tuple[tuple[str, bool], ...]]:
    """The manifest's ``metrics`` column by task type (the challenge scores every task of a type
    alike, so the manifest's tasks of one type must agree), with each metric's direction."""
    per_type: dict[str, tuple[str, ...]] = {}
    for task in load_manifest().values():
        names = per_type.setdefault(task.task_type, task.metrics)
        unknown = [n for n in task.metrics if n not in HIGHER_IS_BETTER]
        if names != task.metrics or unknown:
            raise ManifestError(f"data_manifest.csv, task {task.task_id}: metrics {';'.join(task.metrics)} "
                                + (f"names unknown metrics {unknown}" if unknown else
                                   f"differ from its type's {';'.join(names)}"))
    return {t: tuple((n, HIGHER_IS_BETTER[n]) for n in per_type.get(t, ())) for t in TASK_TYPES}


#: The challenge's metrics of each task type (from the manifest), and whether higher is better.
CHALLENGE_METRICS: dict[str, tuple[tuple[str, bool], ...]] = _challenge_metrics()
#: The one headline number of a task, by type: the first metric the manifest lists
#: (``(name, higher_is_better)``). Margins over baselines and rankings of tasks use it;
#: model selection uses :func:`task_quality`, which combines the type's metrics in [0, 1].
MAIN_METRIC: dict[str, tuple[str, bool]] = {t: m[0] for t, m in CHALLENGE_METRICS.items() if m}

#: What fmuia reports beside them: HD95 (95th percentile of the surface distances) and
#: NMRE (each image's MRE divided by its diagonal, averaged).
EXTRA_METRICS: dict[str, tuple[tuple[str, bool], ...]] = {
    SEGMENTATION: (("HD95", False),), CLASSIFICATION: (), DETECTION: (), REGRESSION: (("NMRE", False),),
}


def reported_metrics(task_type: str) -> tuple[str, ...]:
    """The per-task numbers of a task type, challenge metrics first, then the extras."""
    return tuple(name for name, _ in CHALLENGE_METRICS[task_type] + EXTRA_METRICS[task_type])


#: The leaderboard columns: (column, task type, per-task metric key), e.g.
#: ``("Segmentation_DSC", "segmentation", "DSC")``.
LEADERBOARD_COLUMNS: tuple[tuple[str, str, str], ...] = tuple(
    (f"{kind[0].upper()}{kind[1:]}_{name}", kind, name)
    for kind in TASK_TYPES for name, _ in CHALLENGE_METRICS[kind])

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
    return np.array([_dice(pred == c, gt == c) for c in range(num_classes)], dtype=np.float64)


def _dice(in_pred: np.ndarray, in_gt: np.ndarray) -> float:
    """``2|P∩G| / (|P|+|G|)`` of two boolean masks; 1 when both are empty."""
    total = np.count_nonzero(in_pred) + np.count_nonzero(in_gt)
    return 2.0 * np.count_nonzero(in_pred & in_gt) / total if total else 1.0


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


#: Squared distances below this are recovered exactly from a float32 distance: the
#: float32 value has a relative error of at most 2**-24, so its square is within
#: n * 2**-23 < 0.25 of the integer n.
_EXACT_SQUARED_LIMIT = 2 ** 21


def _nearest_distances(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Exact distance from each row of ``points`` to its nearest row of ``targets`` (pixels),
    by brute force in chunks (only for the rare distances beyond ``_EXACT_SQUARED_LIMIT``)."""
    out = np.empty(len(points), dtype=np.float64)
    targets = targets.astype(np.int64)
    step = max(1, 2_000_000 // max(1, len(targets)))
    for i in range(0, len(points), step):
        diff = points[i:i + step, None, :].astype(np.int64) - targets[None, :, :]
        out[i:i + step] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff).min(axis=1).astype(np.float64))
    return out


def _exact(approx: np.ndarray, points: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """Exact float64 distances from float32 ones between integer pixel positions: ``sqrt(n)``
    with ``n`` recovered by rounding the square, or, beyond ``_EXACT_SQUARED_LIMIT``,
    measured from the rows of ``points`` to the nearest ``True`` pixel of ``edge``."""
    squared = np.square(approx.astype(np.float64))
    exact = np.sqrt(np.rint(squared))
    far = squared >= _EXACT_SQUARED_LIMIT
    if far.any():
        exact[far] = _nearest_distances(points[far], np.argwhere(edge))
    return exact


#: Pixels added around the points whose distances are wanted, for a first, small
#: distance transform (see :func:`_distances_to`).
_CROP_MARGIN = 16


def _transform_at(edge: np.ndarray, rows: slice, cols: slice, query_rc: np.ndarray) -> np.ndarray:
    """float32 distances to the nearest ``edge`` pixel inside the box ``rows x cols``, at the
    (row, column) positions ``query_rc`` (which lie in the box)."""
    crop = edge[rows, cols]
    dist = cv2.distanceTransform((~crop).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist[query_rc[:, 0] - rows.start, query_rc[:, 1] - cols.start]


def _distances_to(edge: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Exact distances (float64) from each ``True`` pixel of ``points`` (row-major order) to
    the nearest ``True`` pixel of ``edge`` (non-empty); both boolean masks of one image.

    Points on ``edge`` are at 0. The others are measured by a distance transform on the
    box around them widened by ``_CROP_MARGIN``: an answer ``d`` found there is the true
    one when no pixel outside the box can be closer, i.e. ``d`` is at most the point's
    distance to the box's sides (those inside the image). The rest are measured on the
    box around them and the whole of ``edge``, which holds every candidate.
    """
    out = np.zeros(int(np.count_nonzero(points)), dtype=np.float64)
    query = points & ~edge
    if not query.any():
        return out
    height, width = edge.shape
    query_rc = np.argwhere(query)
    rows, cols = _bounding_slices(query)
    near_rows = slice(max(0, rows.start - _CROP_MARGIN), min(height, rows.stop + _CROP_MARGIN))
    near_cols = slice(max(0, cols.start - _CROP_MARGIN), min(width, cols.stop + _CROP_MARGIN))
    all_rows, all_cols = _bounding_slices(query | edge)
    near_area = (near_rows.stop - near_rows.start) * (near_cols.stop - near_cols.start)
    all_area = (all_rows.stop - all_rows.start) * (all_cols.stop - all_cols.start)
    if all_area <= 2 * near_area:  # the complete box is hardly larger: use it at once
        approx = _transform_at(edge, all_rows, all_cols, query_rc)
    else:
        approx = _transform_at(edge, near_rows, near_cols, query_rc)
        qr, qc = query_rc[:, 0], query_rc[:, 1]
        inf = np.full(len(qr), np.inf)
        room = np.minimum.reduce([
            qr - near_rows.start + 1.0 if near_rows.start > 0 else inf,
            near_rows.stop - qr * 1.0 if near_rows.stop < height else inf,
            qc - near_cols.start + 1.0 if near_cols.start > 0 else inf,
            near_cols.stop - qc * 1.0 if near_cols.stop < width else inf])
        unsure = approx > room
        if unsure.any():
            approx[unsure] = _transform_at(edge, *_search_box(query_rc[unsure], approx[unsure],
                                                              (all_rows, all_cols)), query_rc[unsure])
    out[query[points]] = _exact(approx, query_rc, edge)
    return out


def _search_box(points: np.ndarray, bound: np.ndarray, whole: tuple[slice, slice]) -> tuple[slice, slice]:
    """The box around ``points`` that holds every pixel within ``bound`` (an upper bound of
    each point's distance to its nearest target) of them, cut to ``whole``; ``whole`` itself
    when a bound is infinite (no target found near the point)."""
    reach = float(bound.max())
    if not np.isfinite(reach) or reach > 1e6:
        return whole
    margin = int(np.ceil(reach)) + 1
    low, high = points.min(axis=0) - margin, points.max(axis=0) + margin + 1
    rows, cols = whole
    return (slice(max(rows.start, int(low[0])), min(rows.stop, int(high[0]))),
            slice(max(cols.start, int(low[1])), min(cols.stop, int(high[1]))))


def _directed_hausdorff(src: np.ndarray, dst: np.ndarray) -> float:
    """``max_{a in src} min_{b in dst} |a - b|`` for non-empty boolean masks, exactly.

    Only ``src`` pixels outside ``dst`` matter, and the nearest ``dst`` pixel of such a
    point is a boundary pixel of ``dst``: one distance transform to that boundary, on the
    box around both sets, gives every distance needed.
    """
    outside = src & ~dst
    if not outside.any():
        return 0.0
    edge = _boundary(dst, edge_is_outside=False)
    rows, cols = _bounding_slices(outside | edge)
    outside, edge = outside[rows, cols], edge[rows, cols]
    dist = cv2.distanceTransform((~edge).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    dist[~outside] = 0.0
    top = float(dist.max())
    # the few points at the maximum (up to float32 rounding), measured exactly
    candidates = np.argwhere(dist >= top * (1 - 1e-6) - 1e-3)
    values = dist[candidates[:, 0], candidates[:, 1]]
    return float(_exact(values, candidates, edge).max())


def _surface_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances from every boundary pixel of ``a`` to the boundary of ``b`` and back, pooled."""
    edge_a = _boundary(a, edge_is_outside=True)
    edge_b = _boundary(b, edge_is_outside=True)
    return np.concatenate([_distances_to(edge_b, edge_a), _distances_to(edge_a, edge_b)])


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
    # Work on the box around both masks, one pixel wider where the image goes on: every
    # pixel of its rim is then outside both masks (or on the image edge, as before), so
    # boundaries and distances are those of the whole image.
    rows, cols = _bounding_slices(a | b)
    height, width = a.shape
    rows = slice(max(0, rows.start - 1), min(height, rows.stop + 1))
    cols = slice(max(0, cols.start - 1), min(width, cols.stop + 1))
    a, b = a[rows, cols], b[rows, cols]
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
def _rank_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of a binary problem: the probability that a positive scores
    above a negative, ties counting one half (the Mann-Whitney statistic), which is the
    trapezoidal area scikit-learn's ``roc_auc_score`` computes. Needs both classes."""
    order = np.argsort(scores, kind="mergesort")
    ranked = scores[order]
    # average rank (1-based) of each run of equal scores
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], len(ranked)]
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    n_pos = int(np.count_nonzero(positive))
    n_neg = len(scores) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _auc(y_true: np.ndarray, probs: np.ndarray | None, num_classes: int) -> tuple[float, str | None]:
    """(AUC, reason it could not be computed or None). A failed AUC counts 0.

    Two classes: the AUC of the class-1 probability. More: the macro mean of the
    one-vs-rest AUCs, defined (as scikit-learn defines it) only when every class occurs
    in ``y_true`` and each row of probabilities sums to 1 (``numpy.allclose``).
    """
    if probs is None:
        return 0.0, "no predicted probabilities"
    if probs.ndim != 2 or probs.shape != (len(y_true), num_classes):
        return 0.0, f"probabilities have shape {probs.shape}, expected ({len(y_true)}, {num_classes})"
    if not np.isfinite(probs).all():
        return 0.0, "probabilities contain NaN or infinity"
    present = np.unique(y_true)
    if len(present) < 2:
        return 0.0, (f"only one class present in y_true (class {present[0]}); "
                     "ROC AUC is not defined")
    if num_classes == 2:
        return _rank_auc(y_true == 1, probs[:, 1]), None
    if len(present) < num_classes:
        absent = sorted(set(range(num_classes)) - set(present.tolist()))
        return 0.0, (f"only {len(present)} of {num_classes} classes present in y_true (absent: "
                     f"{', '.join(map(str, absent))}); one-vs-rest AUC needs every class")
    if not np.allclose(1.0, probs.sum(axis=1)):
        return 0.0, ("Target scores need to be probabilities for multiclass roc_auc, i.e. they should "
                     "sum up to 1.0 over classes")
    return float(np.mean([_rank_auc(y_true == c, probs[:, c]) for c in range(num_classes)])), None


def _f1_scores(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F1 of each label, its support in ``y_true``); F1 = 2TP / (2TP + FP + FN), 0 when
    the label occurs in neither (scikit-learn's ``zero_division=0``)."""
    tp = np.array([np.count_nonzero((y_true == c) & (y_pred == c)) for c in labels], dtype=np.float64)
    true_sum = np.array([np.count_nonzero(y_true == c) for c in labels], dtype=np.float64)
    pred_sum = np.array([np.count_nonzero(y_pred == c) for c in labels], dtype=np.float64)
    denominator = true_sum + pred_sum
    f1 = np.zeros(len(labels), dtype=np.float64)
    nonzero = denominator > 0
    f1[nonzero] = 2.0 * tp[nonzero] / denominator[nonzero]
    return f1, true_sum


def _matthews(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Matthews correlation coefficient of a multi-class confusion matrix (Gorodkin's R_K);
    0 when it is undefined (one label only in the truth or in the predictions)."""
    labels = np.union1d(y_true, y_pred)
    t_sum = np.array([np.count_nonzero(y_true == c) for c in labels], dtype=np.float64)
    p_sum = np.array([np.count_nonzero(y_pred == c) for c in labels], dtype=np.float64)
    n_correct = float(np.count_nonzero(y_true == y_pred))
    n_samples = float(len(y_true))
    cov_ytyp = n_correct * n_samples - np.dot(t_sum, p_sum)
    cov_ypyp = n_samples ** 2 - np.dot(p_sum, p_sum)
    cov_ytyt = n_samples ** 2 - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ypyp * cov_ytyt))


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
    present = np.union1d(y_true, y_pred)
    f1_present, support = _f1_scores(y_true, y_pred, present)
    f1_all, _ = _f1_scores(y_true, y_pred, np.arange(num_classes))
    return {
        "Accuracy": float(np.mean(y_true == y_pred)),
        "AUC": auc,
        "F1_macro": float(np.mean(f1_present)),
        "F1_weighted": float(np.average(f1_present, weights=support)),
        "MCC": _matthews(y_true, y_pred),
        "AUC_error": auc_error,
        "F1_per_class": [float(v) for v in f1_all],
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
    # Written out rather than torchvision.ops.box_iou: importing torchvision (and torch)
    # costs seconds, longer than scoring a whole submission, and these are five lines.
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

    HD95 (not a challenge metric) is measured for the foreground classes only, the
    ones its per-task mean covers; the background's is NaN. (The background's surface
    includes the image border, so its HD95 would cost more than all other classes
    together and say nothing the foreground classes do not.)
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
        _check_pair(pred, gt)
        values = {name: np.full(self.num_classes, np.nan) for name in self.rows}
        for c in range(self.num_classes):
            in_pred, in_gt = pred == c, gt == c
            values["DSC"][c] = _dice(in_pred, in_gt)
            values["HD"][c] = hausdorff_pair(in_pred, in_gt)
            if "HD95" in values and c > 0:
                values["HD95"][c] = hausdorff_pair(in_pred, in_gt, percentile=95)
        for name, row in values.items():
            self.rows[name].append(row)

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
