"""Error analysis of a submission: trivial baselines, per-image errors, a failure taxonomy.

A number means little without a reference. For every task the *trivial baseline* is the
best prediction that ignores the image, learned from the training labels alone
(:mod:`fmuia_lib.training.baselines` holds its one definition):

==============  ===========================================================
segmentation    the empty mask (all background)
classification  the training class frequencies as probabilities (so the
                majority class is predicted, and AUC is 0.5)
detection       the mean training box (normalised to each image's size)
Regression      the mean training landmark positions (normalised likewise)
==============  ===========================================================

The baseline is written as an ordinary submission (:func:`fmuia_lib.predict.write_submission`)
and scored by the same scorer as the model (:func:`fmuia_lib.evaluate.evaluate_submission`),
so both columns of the comparison come from one code path.

:func:`per_image_errors` reads a submission back and scores every image on its own,
which is what galleries, distributions and the explorer need; ``error`` is one number
per image where higher is worse, and ``failure`` names the kind of mistake.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from fmuia_lib import metrics
from fmuia_lib.data.dataset import image_size, load_image, load_mask
from fmuia_lib.predict import PREDICTION_FILES, submission_path
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, SEGMENTATION, TaskSpec
from fmuia_lib.training.baselines import trivial_baseline_records

__all__ = ["trivial_baseline_records", "compare_to_baseline", "per_image_errors", "failure_kind",
           "failure_taxonomy", "overlay_item"]


# -- trivial baselines ---------------------------------------------------------------------------
# trivial_baseline_records (imported above) is the one definition, in fmuia_lib.training.baselines


def compare_to_baseline(model: pd.DataFrame, baseline: pd.DataFrame,
                        tasks: Mapping[str, TaskSpec]) -> pd.DataFrame:
    """Tidy table from two ``EvaluationReport.per_task`` frames: one row per task and metric.

    Columns: task_id, task_type, metric, higher_is_better, model, baseline, beats_baseline
    (strictly better; a tie is not a win).
    """
    rows = []
    base = baseline.set_index("task_id")
    for rec in model.to_dict("records"):
        task = tasks[rec["task_id"]]
        for metric, higher in metrics.CHALLENGE_METRICS[task.task_type]:
            m, b = float(rec[metric]), float(base.loc[rec["task_id"], metric])
            rows.append({"task_id": task.task_id, "task_type": task.task_type, "metric": metric,
                         "higher_is_better": higher, "model": m, "baseline": b,
                         "beats_baseline": bool(m > b if higher else m < b)})
    return pd.DataFrame(rows)


# -- per-image errors ------------------------------------------------------------------------------
def _entries(pred_dir: Path, kind: str) -> dict[tuple[str, str], dict]:
    path = pred_dir / PREDICTION_FILES[kind]
    if not path.is_file():
        return {}
    return {(e["task_id"], e["image_path"]): e for e in json.loads(path.read_text(encoding="utf-8"))}


def per_image_errors(val: pd.DataFrame, pred_dir: str | Path, tasks: Mapping[str, TaskSpec]) -> pd.DataFrame:
    """One row per validation image with its own scores, an ``error`` and a ``failure`` label.

    Columns by type (besides task_id, task_type, image_path, image_file, source):
    segmentation DSC, HD, true/predicted foreground fraction; classification true,
    predicted, p_true, confidence, probs; detection IoU, box_area_fraction, truth,
    prediction (pixel boxes); Regression MRE (pixels), NMRE, truth, prediction (pixel
    points). ``error``: 1-DSC, 1-p_true, 1-IoU, NMRE. A missing prediction is an error.
    """
    pred_dir = Path(pred_dir)
    entries = {kind: _entries(pred_dir, kind) for kind in PREDICTION_FILES}
    rows = []
    for row in val.itertuples():
        task = tasks[row.task_id]
        out: dict[str, Any] = {"task_id": task.task_id, "task_type": task.task_type,
                               "image_path": row.image_path, "image_file": row.image_file, "source": row.source}
        if task.task_type == SEGMENTATION:
            pred_file = submission_path(pred_dir, row.mask_path)
            if not pred_file.is_file():
                raise FileNotFoundError(f"{row.source}: no predicted mask {pred_file}")
            gt = load_mask(row.mask_file)
            pred = metrics.resize_nearest(load_mask(pred_file), gt.shape)
            out.update(mask_file=row.mask_file, pred_file=str(pred_file),
                       DSC=float(metrics.dice_per_class(pred, gt, task.num_classes)[1:].mean()),
                       HD=float(metrics.hausdorff_per_class(pred, gt, task.num_classes)[1:].mean()),
                       true_fraction=float((gt > 0).mean()), pred_fraction=float((pred > 0).mean()))
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

    segmentation: ``missed`` (nothing predicted where there is something),
    ``false alarm`` (something predicted on an empty image), ``under-segmented`` /
    ``over-segmented`` (DSC < 0.5 with less than half / more than twice the true area),
    ``misplaced`` (DSC < 0.5, area about right), ``ok``;
    classification: ``confident error`` (wrong with confidence >= 0.8), ``error``, ``ok``;
    detection: ``missed`` (IoU 0), ``poorly localised`` (IoU < 0.5), ``ok``;
    Regression: ``far`` (mean error > 10% of the image diagonal), ``ok``.
    """
    if task.task_type == SEGMENTATION:
        true_area, pred_area = r["true_fraction"], r["pred_fraction"]
        if true_area > 0 and pred_area == 0:
            return "missed"
        if true_area == 0 and pred_area > 0:
            return "false alarm"
        if r["DSC"] >= 0.5:
            return "ok"
        if pred_area < 0.5 * true_area:
            return "under-segmented"
        if pred_area > 2 * true_area:
            return "over-segmented"
        return "misplaced"
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
    """Counts of each failure kind per task type (rows) — the shape of the mistakes."""
    return (per_image.groupby(["task_type", "failure"]).size().unstack(fill_value=0)
            .reindex(columns=sorted(set(per_image["failure"]), key=lambda k: (k != "ok", k))))


def overlay_item(row: pd.Series | Mapping[str, Any], tasks: Mapping[str, TaskSpec]) -> dict[str, Any]:
    """What :func:`fmuia_lib.viz.overlay` draws for one row of :func:`per_image_errors`."""
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
