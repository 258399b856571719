"""Error analysis of a submission: baselines, per-image and per-class errors, and findings.

A number means little without a reference. Two kinds of *baseline* predict without
looking at the image, learned from the training labels alone:

==============  ===========================================================
trivial         segmentation: the empty mask (all background);
                classification: the training class frequencies as
                probabilities (the majority class is predicted, AUC is 0.5);
                detection: the mean training box (normalised to each image's
                size); Regression: the mean training landmark positions
mean mask       segmentation only: every pixel of the model frame gets the
                class most training masks of the task have there (each mask
                resized to the frame first), resized to each image: where
                the structure *usually is*
==============  ===========================================================

Both are prediction records (:func:`fmuia_lib.challenge.predict.write_submission`'s format),
scored by the one scorer (:mod:`fmuia_lib.challenge.evaluate`), so model and baselines come from
one code path. :func:`compare_to_baselines` puts them side by side, with the margin
to the strongest baseline of every task metric.

:func:`per_image_errors` reads a submission back and scores every image on its own
(what galleries, distributions, the explorer and the per-class tables need); ``error`` is
one number per image where higher is worse, and ``failure`` names the kind of mistake.
Segmentation masks are judged class by class (:func:`class_failure_kind`): a small
class that the model never predicts is *missed*, whatever the other classes do.

The ``*_findings`` functions turn these tables into sentences. Notebook 04 prints them
instead of writing its conclusions by hand, so that what it says always matches the
numbers of the run above it: each sentence's wording is chosen by the numbers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from fmuia_lib.challenge import metrics
from fmuia_lib.data.dataset import image_size, load_image, load_mask
from fmuia_lib.challenge.predict import PREDICTION_FILES, submission_path
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TASK_TYPES, TaskSpec
from fmuia_lib.training.baselines import trivial_baseline_records

#: A class with a DSC (or F1) below this is *near 0*; a task's other class at or above GOOD is *high*.
NEAR_ZERO = 0.1
GOOD = 0.5
#: Fewest images for a rank correlation to be reported.
MIN_RANKED = 5
#: Order of the per-class failure kinds, worst first.
CLASS_FAILURES = ("missed", "false alarm", "misplaced", "under-segmented", "over-segmented", "ok")


# -- baselines -----------------------------------------------------------------------------------
# trivial_baseline_records: the one definition is in fmuia_lib.training.baselines (imported above).


def _training_rows(train: pd.DataFrame, task_id: str) -> pd.DataFrame:
    source = train[train["task_id"] == task_id]
    if source.empty:
        raise ValueError(f"{task_id}: no training rows, so no baseline can be learned")
    return source


def majority_mask(masks: Iterable[np.ndarray], num_classes: int, frame: tuple[int, int]) -> np.ndarray:
    """The per-pixel majority class of ``masks``, each resized (nearest) to ``frame`` =
    (height, width) first; a tie goes to the lower class index (background first)."""
    votes = np.zeros((num_classes, *frame), dtype=np.int64)
    rows, cols = np.indices(frame)
    count = 0
    for mask in masks:
        small = np.clip(metrics.resize_nearest(np.asarray(mask), frame), 0, num_classes - 1)
        np.add.at(votes, (small.astype(np.int64), rows, cols), 1)
        count += 1
    if not count:
        raise ValueError("no masks to vote")
    return votes.argmax(axis=0).astype(np.uint8)


def mean_mask_records(train: pd.DataFrame, val: pd.DataFrame, tasks: Mapping[str, TaskSpec],
                      frame: int | tuple[int, int]) -> Iterator[dict[str, Any]]:
    """Prediction records of the mean-mask baseline for the segmentation rows of ``val``:
    :func:`majority_mask` of the task's training masks at the model frame (``frame``: the
    model's ``image_size``), resized to each validation image (nearest). An iterator, so
    that the scorer takes the full-size masks one at a time."""
    frame = (frame, frame) if isinstance(frame, (int, np.integer)) else tuple(frame)
    for task_id, rows in val.groupby("task_id", sort=False):
        task = tasks[task_id]
        if task.task_type != SEGMENTATION:
            continue
        source = _training_rows(train, task_id)
        vote = majority_mask((load_mask(f) for f in source["mask_file"]), task.num_classes, frame)
        for row in rows.itertuples():
            yield {"task_id": task_id, "image_path": row.image_path, "mask_path": row.mask_path,
                   "mask": metrics.resize_nearest(vote, image_size(row.image_file))}


def compare_to_baselines(model: pd.DataFrame, baselines: Mapping[str, pd.DataFrame],
                         tasks: Mapping[str, TaskSpec]) -> pd.DataFrame:
    """One row per task and challenge metric: the model beside every baseline.

    ``model`` and the values of ``baselines`` (name -> table) are ``EvaluationReport.per_task``
    frames; a baseline without a score for a task (NaN, e.g. the mean mask outside
    segmentation) is left out of that task's comparison. Columns: task_id, task_type,
    metric, higher_is_better, model, one column per baseline, ``baseline`` (the strongest
    baseline's value), ``best_baseline`` (its name; the first named wins a tie),
    ``margin`` (how much better the model is: positive when better, in the metric's unit),
    ``relative_margin`` (margin / |baseline|, NaN for a baseline of 0) and ``beats_baseline``
    (margin > 0: a tie is not a win).
    """
    tables = {name: frame.set_index("task_id") for name, frame in baselines.items()}
    rows = []
    for rec in model.to_dict("records"):
        task = tasks[rec["task_id"]]
        for metric, higher in metrics.CHALLENGE_METRICS[task.task_type]:
            value = float(rec[metric])
            row = {"task_id": task.task_id, "task_type": task.task_type, "metric": metric,
                   "higher_is_better": higher, "model": value}
            best_name, best = None, np.nan
            for name, table in tables.items():
                score = float(table.loc[task.task_id, metric]) if task.task_id in table.index else np.nan
                row[name] = score
                if not np.isnan(score) and (best_name is None or (score > best if higher else score < best)):
                    best_name, best = name, score
            margin = (value - best) if higher else (best - value)
            row.update(baseline=best, best_baseline=best_name, margin=margin,
                       relative_margin=margin / abs(best) if best else np.nan, beats_baseline=bool(margin > 0))
            rows.append(row)
    return pd.DataFrame(rows)


def baseline_findings(comparison: pd.DataFrame, narrowest: int = 3, shown: int = 12) -> list[str]:
    """Sentences on :func:`compare_to_baselines`: where the model is no better than its
    strongest baseline, with the margin (the ``shown`` largest relative losses first, then
    how many more), and the ``narrowest`` smallest relative wins."""
    tasks = comparison["task_id"].nunique()
    losing = comparison[~comparison["beats_baseline"]]
    lines = []
    if losing.empty:
        lines.append(f"The model beats its strongest baseline on all {len(comparison)} metrics of the "
                     f"{tasks} tasks.")
    else:
        lines.append(f"The model is no better than its strongest baseline on {len(losing)} of "
                     f"{len(comparison)} task metrics ({losing['task_id'].nunique()} of {tasks} tasks):")
        for r in losing.sort_values(["relative_margin", "margin"]).head(shown).itertuples():
            lines.append(f"  {r.task_id} {r.metric}: {r.model:.4g} vs {r.baseline:.4g} ({r.best_baseline} "
                         f"baseline), {_margin_text(r)}")
        if len(losing) > shown:
            ties = int((losing["margin"] == 0).sum())
            lines.append(f"  ... and {len(losing) - shown} more ({ties} of all {len(losing)} are ties); "
                         "the table below marks every one")
    winning = comparison[comparison["beats_baseline"]].sort_values("relative_margin").head(narrowest)
    if not winning.empty:
        lines.append(f"The {len(winning)} narrowest wins, relative to the baseline:")
        for r in winning.itertuples():
            lines.append(f"  {r.task_id} {r.metric}: {r.model:.4g} vs {r.baseline:.4g} ({r.best_baseline} "
                         f"baseline), {_margin_text(r)}")
    return lines


def _margin_text(r: Any) -> str:
    if r.margin == 0:
        return "a tie"
    word = "better" if r.margin > 0 else "worse"
    relative = "" if np.isnan(r.relative_margin) else f" ({abs(r.relative_margin):.1%})"
    return f"{abs(r.margin):.3g} {word}{relative}"


# -- per-image errors ------------------------------------------------------------------------------
def class_failure_kind(true_pixels: int, pred_pixels: int, overlap: int) -> str:
    """What happened to one class in one image, from its true, predicted and shared pixels.

    ``absent`` (in neither mask), ``false alarm`` (predicted, not there), ``missed``
    (there, and nothing of it found: no prediction, or only one under half its size
    elsewhere), ``ok`` (DSC >= 0.5), else, for DSC < 0.5: ``under-segmented`` /
    ``over-segmented`` (less than half / more than twice the true area), ``misplaced``
    (about the right area in the wrong place).
    """
    if true_pixels == 0:
        return "false alarm" if pred_pixels else "absent"
    if pred_pixels == 0 or (overlap == 0 and pred_pixels < 0.5 * true_pixels):
        return "missed"
    if 2 * overlap / (true_pixels + pred_pixels) >= GOOD:
        return "ok"
    if pred_pixels < 0.5 * true_pixels:
        return "under-segmented"
    if pred_pixels > 2 * true_pixels:
        return "over-segmented"
    return "misplaced"


def class_pixels(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class ``0..num_classes-1``: true pixels, predicted pixels, and pixels of that
    class in both masks (what :func:`class_failure_kind` reads); values >= num_classes
    count for no class."""
    def count(values: np.ndarray) -> np.ndarray:
        values = values[values < num_classes].astype(np.int64)
        return np.bincount(values, minlength=num_classes)[:num_classes]

    return count(gt.ravel()), count(pred.ravel()), count(gt[gt == pred])


def _entries(pred_dir: Path, kind: str) -> dict[tuple[str, str], dict]:
    path = pred_dir / PREDICTION_FILES[kind]
    if not path.is_file():
        return {}
    return {(e["task_id"], e["image_path"]): e for e in json.loads(path.read_text(encoding="utf-8"))}


def _segmentation_row(task: TaskSpec, row: Any, pred_dir: Path) -> dict[str, Any]:
    pred_file = submission_path(pred_dir, row.mask_path)
    if not pred_file.is_file():
        raise FileNotFoundError(f"{row.source}: no predicted mask {pred_file}")
    gt = load_mask(row.mask_file)
    pred = metrics.resize_nearest(load_mask(pred_file), gt.shape)
    true_px, pred_px, both = class_pixels(pred, gt, task.num_classes)
    dsc = metrics.dice_per_class(pred, gt, task.num_classes)
    kinds = {c: class_failure_kind(int(true_px[c]), int(pred_px[c]), int(both[c]))
             for c in range(1, task.num_classes)}
    return {"mask_file": row.mask_file, "pred_file": str(pred_file), "DSC": float(dsc[1:].mean()),
            "HD": float(metrics.hausdorff_per_class(pred, gt, task.num_classes)[1:].mean()),
            "true_fraction": float((gt > 0).mean()), "pred_fraction": float((pred > 0).mean()),
            "pixels": int(gt.size), "class_DSC": dsc, "class_true_pixels": true_px,
            "class_pred_pixels": pred_px, "class_failures": {c: k for c, k in kinds.items() if k != "absent"}}


def per_image_errors(val: pd.DataFrame, pred_dir: str | Path, tasks: Mapping[str, TaskSpec]) -> pd.DataFrame:
    """One row per validation image with its own scores, an ``error`` and a ``failure`` label.

    Columns by type (besides task_id, task_type, image_path, image_file, source):
    segmentation DSC and HD (mean over foreground classes), true/predicted foreground
    fraction, ``pixels``, and per class (arrays indexed by class) ``class_DSC``,
    ``class_true_pixels``, ``class_pred_pixels``, with ``class_failures`` ({class index:
    :func:`class_failure_kind`} of the classes present in either mask); classification
    true, predicted, p_true, confidence, probs; detection IoU, box_area_fraction, truth,
    prediction (pixel boxes); Regression MRE (pixels), NMRE, truth, prediction (pixel
    points), size (height, width). ``error``: 1-DSC, 1-p_true, 1-IoU, NMRE. A missing
    prediction is an error.
    """
    pred_dir = Path(pred_dir)
    entries = {kind: _entries(pred_dir, kind) for kind in PREDICTION_FILES}
    rows = []
    for row in val.itertuples():
        task = tasks[row.task_id]
        out: dict[str, Any] = {"task_id": task.task_id, "task_type": task.task_type,
                               "image_path": row.image_path, "image_file": row.image_file, "source": row.source}
        if task.task_type == SEGMENTATION:
            out.update(_segmentation_row(task, row, pred_dir))
            out["error"] = 1 - out["DSC"]
        else:
            entry = entries[task.task_type].get((task.task_id, row.image_path))
            if entry is None:
                raise KeyError(f"{row.source}: no prediction for {row.image_path} in {pred_dir}")
            if task.task_type == CLASSIFICATION:
                probs = np.asarray(entry["predicted_probs"], dtype=np.float64)
                truth = int(row.target)
                out.update(true=truth, predicted=int(entry["predicted_class"]), p_true=float(probs[truth]),
                           confidence=float(probs.max()), probs=probs)
                out["error"] = 1 - out["p_true"]
            elif task.task_type == DETECTION:
                height, width = image_size(row.image_file)
                truth, pred = np.asarray(row.target, float), np.asarray(entry["bbox_pixels"], float)
                out.update(IoU=float(metrics.box_iou(pred, truth)[0]), truth=truth, prediction=pred,
                           box_area_fraction=float((truth[2] - truth[0]) * (truth[3] - truth[1]) / (height * width)))
                out["error"] = 1 - out["IoU"]
            else:
                height, width = image_size(row.image_file)
                truth = np.asarray(row.target, float)
                pred = np.asarray(entry["predicted_points_pixels"], float).reshape(-1, 2)
                mre = float(metrics.mean_radial_error(pred[None], truth[None])[0])
                out.update(MRE=mre, NMRE=mre / float(np.hypot(height, width)), truth=truth, prediction=pred,
                           size=(height, width))
                out["error"] = out["NMRE"]
        out["failure"] = failure_kind(task, out)
        rows.append(out)
    return pd.DataFrame(rows)


def failure_kind(task: TaskSpec, r: Mapping[str, Any]) -> str:
    """A coarse name for what went wrong on one image (``"ok"`` when nothing did).

    segmentation: the :func:`class_failure_kind` of the image's worst class (lowest DSC
    among the classes present in either mask), ``ok`` when every class is ok;
    classification: ``confident error`` (wrong with confidence >= 0.8), ``error``, ``ok``;
    detection: ``missed`` (IoU 0), ``poorly localised`` (IoU < 0.5), ``ok``;
    Regression: ``far`` (mean error > 10% of the image diagonal), ``ok``.
    """
    if task.task_type == SEGMENTATION:
        failing = {c: k for c, k in r["class_failures"].items() if k != "ok"}
        if not failing:
            return "ok"
        worst = min(failing, key=lambda c: (r["class_DSC"][c], c))
        return failing[worst]
    if task.task_type == CLASSIFICATION:
        if r["predicted"] == r["true"]:
            return "ok"
        return "confident error" if r["confidence"] >= 0.8 else "error"
    if task.task_type == DETECTION:
        if r["IoU"] == 0:
            return "missed"
        return "poorly localised" if r["IoU"] < 0.5 else "ok"
    return "far" if r["NMRE"] > 0.1 else "ok"


def failure_taxonomy(per_image: pd.DataFrame) -> pd.DataFrame:
    """Counts of each image-level failure kind per task type (rows): the shape of the mistakes."""
    return (per_image.groupby(["task_type", "failure"]).size().unstack(fill_value=0)
            .reindex(columns=sorted(set(per_image["failure"]), key=lambda k: (k != "ok", k))))


def taxonomy_findings(taxonomy: pd.DataFrame) -> list[str]:
    """One sentence per row of a failure table (:func:`failure_taxonomy` or
    :func:`class_failure_table`): how many of its cases failed, and the most frequent kind."""
    lines = []
    for key, row in taxonomy.iterrows():
        name = "/".join(key) if isinstance(key, tuple) else key
        failures = row.drop(labels=["ok", "absent"], errors="ignore")
        total = int(row.drop(labels=["absent"], errors="ignore").sum())
        if failures.sum() == 0:
            lines.append(f"{name}: no failure in {total} cases.")
            continue
        top = failures.idxmax()
        lines.append(f"{name}: {int(failures.sum())} of {total} cases fail; most often {top} ({int(failures[top])}).")
    return lines


# -- per class -----------------------------------------------------------------------------------
def segmentation_classes(per_class: pd.DataFrame, per_image: pd.DataFrame,
                         tasks: Mapping[str, TaskSpec]) -> pd.DataFrame:
    """One row per foreground class of every segmentation task.

    ``per_class`` is an ``EvaluationReport.per_class`` table (the scorer's DSC and HD);
    ``per_image`` is :func:`per_image_errors`. Columns: task_id, class_index, class_name,
    DSC, HD, images (of the task), present (images with the class in the truth),
    ``area_share`` (the class's mean share of the image area where present), and the count
    of every :func:`class_failure_kind` over the images.
    """
    seg = per_image[per_image["task_type"] == SEGMENTATION]
    scores = per_class.set_index(["task_id", "class_index"])
    rows = []
    for task_id, part in seg.groupby("task_id", sort=False):
        task = tasks[task_id]
        true_px = np.stack(part["class_true_pixels"].to_list())
        pixels = part["pixels"].to_numpy(float)
        for c in range(1, task.num_classes):
            present = true_px[:, c] > 0
            kinds = pd.Series([f.get(c, "absent") for f in part["class_failures"]]).value_counts()
            rows.append({"task_id": task_id, "class_index": c, "class_name": task.class_names[c],
                         "DSC": float(scores.loc[(task_id, c), "DSC"]), "HD": float(scores.loc[(task_id, c), "HD"]),
                         "images": len(part), "present": int(present.sum()),
                         "area_share": float((true_px[present, c] / pixels[present]).mean()) if present.any()
                         else 0.0,
                         **{k: int(kinds.get(k, 0)) for k in CLASS_FAILURES}})
    return pd.DataFrame(rows, columns=["task_id", "class_index", "class_name", "DSC", "HD", "images", "present",
                                       "area_share", *CLASS_FAILURES])


def classification_classes(per_class: pd.DataFrame, per_image: pd.DataFrame,
                           tasks: Mapping[str, TaskSpec]) -> pd.DataFrame:
    """One row per class of every classification task: task_id, class_index, class_name,
    F1 (the scorer's), support (validation images of that class), predicted (images
    predicted as it)."""
    cls = per_image[per_image["task_type"] == CLASSIFICATION]
    scores = per_class.set_index(["task_id", "class_index"])
    rows = []
    for task_id, part in cls.groupby("task_id", sort=False):
        task = tasks[task_id]
        for c in range(task.num_classes):
            rows.append({"task_id": task_id, "class_index": c, "class_name": task.class_names[c],
                         "F1": float(scores.loc[(task_id, c), "F1"]), "support": int((part["true"] == c).sum()),
                         "predicted": int((part["predicted"] == c).sum())})
    return pd.DataFrame(rows, columns=["task_id", "class_index", "class_name", "F1", "support", "predicted"])


def weakest_findings(per_task: pd.DataFrame, seg_classes: pd.DataFrame, cls_classes: pd.DataFrame,
                     k: int = 3) -> list[str]:
    """Sentences: the weakest task of each type (by its headline metric, ``metrics.MAIN_METRIC``), against the type's
    mean, with its classes' scores; the ``k`` lowest per-class DSC and F1."""
    lines = []
    for kind in TASK_TYPES:
        part = per_task[(per_task["task_type"] == kind) & (per_task["num_samples"] > 0)]
        if part.empty:
            continue
        metric, higher = metrics.MAIN_METRIC[kind]
        worst = part.sort_values(metric, ascending=higher, kind="stable").iloc[0]
        line = (f"Weakest {kind} task by {metric}: {worst['task_id']} at {worst[metric]:.3g} "
                + (f"(the only {kind} task)" if len(part) == 1 else
                   f"(mean of the {len(part)} {kind} tasks {part[metric].mean():.3g})"))
        classes = {SEGMENTATION: (seg_classes, "DSC"), CLASSIFICATION: (cls_classes, "F1")}.get(kind)
        if classes is not None and not classes[0].empty:
            table, score = classes
            own = table[table["task_id"] == worst["task_id"]]
            line += "; per class " + ", ".join(f"{r.class_name} {getattr(r, score):.2f}" for r in own.itertuples())
        lines.append(line + ".")
    for table, score, what in ((seg_classes, "DSC", "segmentation"), (cls_classes, "F1", "classification")):
        if table.empty:
            continue
        low = table.nsmallest(k, score)
        lines.append(f"Lowest {what} class {score}: " + "; ".join(
            f"{r.task_id}/{r.class_name} {getattr(r, score):.2f}" for r in low.itertuples()) + ".")
    return lines


def missed_small_classes(seg_classes: pd.DataFrame, near_zero: float = NEAR_ZERO,
                         good: float = GOOD) -> pd.DataFrame:
    """Classes with DSC below ``near_zero`` in tasks where another class reaches ``good``:
    the rows of :func:`segmentation_classes` with the task's best class (``best_class``,
    ``best_DSC``, ``best_area_share``) added, lowest DSC first."""
    rows = []
    for task_id, part in seg_classes.groupby("task_id", sort=False):
        for r in part.to_dict("records"):
            others = part[part["class_index"] != r["class_index"]]
            if r["DSC"] >= near_zero or others.empty or others["DSC"].max() < good:
                continue
            best = others.iloc[others["DSC"].to_numpy().argmax()]
            rows.append({**r, "best_class": best["class_name"], "best_DSC": float(best["DSC"]),
                         "best_area_share": float(best["area_share"])})
    columns = [*seg_classes.columns, "best_class", "best_DSC", "best_area_share"]
    return pd.DataFrame(rows, columns=columns).sort_values("DSC", kind="stable").reset_index(drop=True)


def small_class_findings(missed: pd.DataFrame, near_zero: float = NEAR_ZERO, good: float = GOOD) -> list[str]:
    """Sentences on :func:`missed_small_classes`: each class with its size and how often it
    was missed outright; or that there is none."""
    if missed.empty:
        return [f"No segmentation class scores DSC below {near_zero} in a task whose other classes reach {good}."]
    lines = [f"{len(missed)} class(es) score DSC below {near_zero} while another class of the task reaches {good}:"]
    for r in missed.itertuples():
        size = ("smaller than" if r.area_share < r.best_area_share else "at least as large as")
        lines.append(f"  {r.task_id}/{r.class_name}: DSC {r.DSC:.2f} ({r.best_class} {r.best_DSC:.2f}); "
                     f"{r.area_share:.2%} of the image where present ({r.best_class} {r.best_area_share:.2%}, "
                     f"so {size} it); missed outright in {r.missed} of the {r.present} images that contain it.")
    return lines


def class_failure_table(seg_classes: pd.DataFrame) -> pd.DataFrame:
    """Counts of each per-class failure kind (columns) per segmentation task and class (rows)."""
    return seg_classes.set_index(["task_id", "class_name"])[list(CLASS_FAILURES)]


# -- landmarks and boxes ---------------------------------------------------------------------------
def _normalised(points: pd.Series, sizes: pd.Series) -> np.ndarray:
    """``(N, K, 2)`` points in fractions of each image's width (x) and height (y)."""
    scale = np.array([[w, h] for h, w in sizes], dtype=float)[:, None, :]
    return np.stack(points.to_list()) / scale


def spread(points: np.ndarray) -> np.ndarray:
    """Per landmark, the root-mean-square distance of ``(N, K, 2)`` points to their mean
    position over the N images: how widely that landmark moves from image to image."""
    points = np.asarray(points, dtype=float)
    return np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=2).mean(axis=0))


def landmark_spread(per_image: pd.DataFrame, tasks: Mapping[str, TaskSpec]) -> pd.DataFrame:
    """One row per landmark of every Regression task: task_id, landmark, true_spread and
    pred_spread (:func:`spread` in fractions of the image size) and ``ratio`` =
    pred / true (1: predictions move as much as the truth; near 0: they collapse onto
    one position, e.g. the mean). NaN when the truth does not move."""
    reg = per_image[per_image["task_type"] == REGRESSION]
    rows = []
    for task_id, part in reg.groupby("task_id", sort=False):
        true_s = spread(_normalised(part["truth"], part["size"]))
        pred_s = spread(_normalised(part["prediction"], part["size"]))
        for k, name in enumerate(tasks[task_id].class_names):
            rows.append({"task_id": task_id, "landmark": name, "images": len(part), "true_spread": true_s[k],
                         "pred_spread": pred_s[k], "ratio": pred_s[k] / true_s[k] if true_s[k] > 0 else np.nan})
    return pd.DataFrame(rows, columns=["task_id", "landmark", "images", "true_spread", "pred_spread", "ratio"])


def _spread_words(ratio: float) -> str:
    if np.isnan(ratio):
        return "cannot be compared (the true landmarks do not move)"
    if ratio < 0.5:
        return "collapse toward one position"
    if ratio < 0.8:
        return "vary less than the truth"
    if ratio <= 1.25:
        return "vary about as much as the truth"
    return "scatter more than the truth"


def landmark_findings(spreads: pd.DataFrame, comparison: pd.DataFrame) -> list[str]:
    """Sentences per Regression task: the spread ratio of its landmarks and what it means,
    beside the task's MRE against its strongest baseline (from :func:`compare_to_baselines`)."""
    lines = []
    mre = comparison[comparison["metric"] == "MRE"].set_index("task_id")
    for task_id, part in spreads.groupby("task_id", sort=False):
        ratio = float(part["ratio"].mean())
        line = (f"{task_id}: the predicted landmarks spread {ratio:.2f}x as widely as the true ones ("
                + ", ".join(f"{r.landmark} {r.ratio:.2f}x" for r in part.itertuples())
                + f"): the predictions {_spread_words(ratio)}")
        if task_id in mre.index:
            r = mre.loc[task_id]
            line += (f"; MRE {r['model']:.1f} px vs {r['baseline']:.1f} px for the {r['best_baseline']} baseline, "
                     f"{_margin_text(r)}")
        lines.append(line + ".")
    return lines


def iou_by_box_size(per_image: pd.DataFrame, bins: int = 3) -> pd.DataFrame:
    """Detection IoU by box size: per task, the images split into ``bins`` groups of equal
    count by the true box's share of the image area (fewer bins when a task has fewer
    images). Columns: task_id, size_bin (1 = smallest), bins, images, area_min, area_max,
    mean_IoU, below_half (images with IoU < 0.5)."""
    det = per_image[per_image["task_type"] == DETECTION]
    rows = []
    for task_id, part in det.groupby("task_id", sort=False):
        n = min(bins, len(part))
        if n < 2:
            continue
        order = part["box_area_fraction"].rank(method="first").to_numpy()
        groups = np.minimum(((order - 1) * n // len(part)).astype(int), n - 1)
        for b in range(n):
            inside = part[groups == b]
            rows.append({"task_id": task_id, "size_bin": b + 1, "bins": n, "images": len(inside),
                         "area_min": inside["box_area_fraction"].min(), "area_max": inside["box_area_fraction"].max(),
                         "mean_IoU": inside["IoU"].mean(), "below_half": int((inside["IoU"] < 0.5).sum())})
    return pd.DataFrame(rows, columns=["task_id", "size_bin", "bins", "images", "area_min", "area_max",
                                       "mean_IoU", "below_half"])


def box_size_findings(by_size: pd.DataFrame, per_image: pd.DataFrame) -> list[str]:
    """Sentences per detection task: IoU of its smallest boxes against its largest, and the
    rank correlation of box area with IoU (Spearman)."""
    from scipy.stats import spearmanr

    lines = []
    det = per_image[per_image["task_type"] == DETECTION]
    for task_id, part in by_size.groupby("task_id", sort=False):
        small, large = part.iloc[0], part.iloc[-1]
        images = det[det["task_id"] == task_id]
        rho = (spearmanr(images["box_area_fraction"], images["IoU"]).statistic
               if len(images) >= MIN_RANKED and images["IoU"].nunique() > 1 else np.nan)
        diff = large["mean_IoU"] - small["mean_IoU"]
        verdict = ("smaller boxes are found worse" if diff > 0.05 else
                   "larger boxes are found worse" if diff < -0.05 else "box size makes little difference")
        lines.append(f"{task_id}: {_box_group(small, 'smallest', True)} vs {_box_group(large, 'largest', False)}: "
                     f"{verdict}" + ("" if np.isnan(rho) else f"; Spearman rho(area, IoU) {rho:.2f}") + ".")
    return lines


def _box_group(group: pd.Series, which: str, first: bool) -> str:
    image = " of the image" if first else ""
    if group["images"] == 1:
        return f"IoU {group['mean_IoU']:.2f} on its {which} box ({group['area_min']:.1%}{image})"
    return (f"mean IoU {group['mean_IoU']:.2f} on its {group['images']} {which} boxes ({group['area_min']:.1%}-"
            f"{group['area_max']:.1%}{image}; {group['below_half']} below IoU 0.5)")


# -- drawing one image -------------------------------------------------------------------------------
def overlay_item(row: pd.Series | Mapping[str, Any], tasks: Mapping[str, TaskSpec]) -> dict[str, Any]:
    """What :func:`fmuia_lib.notebook.viz.overlay` draws for one row of :func:`per_image_errors`."""
    task = tasks[row["task_id"]]
    item: dict[str, Any] = {"image": load_image(row["image_file"]), "title": f"{task.task_id}\nerror {row['error']:.3g}"}
    if task.task_type == SEGMENTATION:
        item["truth"] = load_mask(row["mask_file"])
        item["prediction"] = metrics.resize_nearest(load_mask(row["pred_file"]), item["truth"].shape)
    elif task.task_type == CLASSIFICATION:
        item["truth"], item["prediction"] = row["true"], row["predicted"]
    else:
        item["truth"], item["prediction"] = row["truth"], row["prediction"]
    return item
