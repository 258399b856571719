"""The official baseline's validation rule: metrics averaged per mini-batch.

The baseline validates after every epoch, in eval mode (BatchNorm running statistics):

1. The validation rows are read in the split's order, in batches of ``val_batch_size``
   (8), not shuffled, so a batch mixes tasks.
2. Each batch is split by task; for every task in the batch its rows go through the
   model together and give one value per metric:

   ================ ===========================================================
   classification   ``Accuracy`` and ``F1-Score`` (scikit-learn, macro, zero_division=0)
   segmentation     ``Dice``: ``(2 * inter + 1e-6) / (union + 1e-6)`` pooled over the
                    rows and the foreground classes, on the model-frame masks
   detection        ``IoU`` of the normalised boxes, ``+ 1e-6`` in the denominator
                    (box corners as predicted), mean over the rows
   Regression       ``MAE (pixels)``: mean absolute error of the normalised coordinates
                    times the model input size
   ================ ===========================================================

3. A task's metric is the **mean of its per-batch values** (a batch with one row of a
   task weighs as much as one with eight).
4. The selection score is the mean, over the columns ``Accuracy``, ``F1-Score``,
   ``Dice`` and ``IoU``, of each column's mean over the tasks that have it: Regression
   is left out (the baseline keeps every column whose name lacks "MAE"). A checkpoint is
   the best when its score is strictly greater than the best so far.

The model's outputs are read as the baseline reads them (``head.decode``: the grid
detection head's box at the cell of highest objectness, corners not reordered). Each
task also gets ``score``, the mean of its selection columns (NaN for Regression), for
tables that show one number per task; the selection score is not their mean.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader
from fmuia_lib.progress import tqdm

from fmuia_lib.data.dataset import MultiTaskDataset, collate_mixed
from fmuia_lib.model import MultiTaskNet
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION

#: The columns whose means make the selection score.
SELECTION_COLUMNS = ("Accuracy", "F1-Score", "Dice", "IoU")
MAE_COLUMN = "MAE (pixels)"


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(accuracy_score(labels, predicted))


def f1_macro(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(f1_score(labels, predicted, average="macro", zero_division=0))


def pooled_dice(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Dice of the foreground classes (every class but 0), pooled over the batch's pixels:
    ``(2 * |pred == gt, gt > 0| + 1e-6) / (|gt > 0| + |pred > 0| + 1e-6)``."""
    inter = np.count_nonzero((predicted == labels) & (labels > 0))
    union = np.count_nonzero(labels > 0) + np.count_nonzero(predicted > 0)
    return float((2.0 * inter + 1e-6) / (union + 1e-6))


def mae_pixels(points: np.ndarray, predicted: np.ndarray, height: int, width: int) -> float:
    """Mean absolute error of ``(..., 2)`` normalised (x, y) points, x in ``width`` and y in
    ``height`` pixels."""
    scale = np.array([width, height], dtype=np.float64)
    return float(np.mean(np.abs(points.reshape(-1, 2) - predicted.reshape(-1, 2)) * scale))


def mean_box_iou(boxes: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over rows of the baseline's IoU of normalised xyxy boxes: overlap clipped at 0,
    areas as the corners give them, ``inter / (union + 1e-6)``."""
    x_a = np.maximum(boxes[:, 0], predicted[:, 0])
    y_a = np.maximum(boxes[:, 1], predicted[:, 1])
    x_b = np.minimum(boxes[:, 2], predicted[:, 2])
    y_b = np.minimum(boxes[:, 3], predicted[:, 3])
    inter = np.maximum(0.0, x_b - x_a) * np.maximum(0.0, y_b - y_a)
    area_true = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_pred = (predicted[:, 2] - predicted[:, 0]) * (predicted[:, 3] - predicted[:, 1])
    return float(np.mean(inter / (area_true + area_pred - inter + 1e-6)))


def batch_metrics(task_type: str, decoded: dict[str, torch.Tensor], raw: Any, target: torch.Tensor,
                  height: int, width: int) -> dict[str, float]:
    """One task's rows of one batch -> ``{metric: value}`` (the table in the module docstring)."""
    target = target.cpu()
    if task_type == CLASSIFICATION:
        labels, predicted = target.numpy(), raw.float().argmax(dim=1).cpu().numpy()
        return {"Accuracy": accuracy(labels, predicted), "F1-Score": f1_macro(labels, predicted)}
    if task_type == SEGMENTATION:
        return {"Dice": pooled_dice(target.numpy(), raw.float().argmax(dim=1).cpu().numpy())}
    if task_type == DETECTION:
        return {"IoU": mean_box_iou(target.double().numpy(), decoded["boxes"].double().cpu().numpy())}
    if task_type == REGRESSION:
        return {MAE_COLUMN: mae_pixels(target.double().numpy(), decoded["points"].double().cpu().numpy(),
                                       height, width)}
    raise ValueError(f"unknown task type {task_type!r}")


@torch.no_grad()
def validate_per_batch(model: MultiTaskNet, dataset: MultiTaskDataset, device: torch.device | str,
                       batch_size: int = 8, num_workers: int = 0, amp_dtype: torch.dtype | None = None,
                       progress: bool = False) -> dict[str, dict[str, float]]:
    """``{task_id: {metric: mean of per-batch values, "num_batches": n, "score": ...}}`` (module docstring)."""
    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_mixed, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    try:
        # one iterator, made here: tqdm.auto would make a second one, and each draws a seed from
        # torch's generator (the baseline's validation draws one, so its dropout masks follow)
        batches = iter(loader)
        for batch in tqdm(batches, total=len(loader), desc="validate (per batch)", leave=False,
                          disable=not progress):
            images = batch["image"].to(device, non_blocking=True)
            height, width = images.shape[-2:]
            for task_id in dict.fromkeys(batch["task_id"]):  # tasks in order of appearance
                rows = [i for i, t in enumerate(batch["task_id"]) if t == task_id]
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    raw = model(images[rows], task_id)
                decoded = model.heads[task_id].decode(raw)
                target = torch.stack([batch["target"][i] for i in rows])
                for name, value in batch_metrics(model.task(task_id).task_type, decoded, raw, target,
                                                 int(height), int(width)).items():
                    values[task_id][name].append(value)
    finally:
        model.train(was_training)
    results: dict[str, dict[str, float]] = {}
    for task_id in sorted(values):
        row = {name: float(np.mean(v)) for name, v in values[task_id].items()}
        row["num_batches"] = len(next(iter(values[task_id].values())))
        selection = [row[c] for c in SELECTION_COLUMNS if c in row]
        row["score"] = float(np.mean(selection)) if selection else math.nan
        results[task_id] = row
    return results


def per_batch_selection_score(results: dict[str, dict[str, float]]) -> float:
    """Mean over the selection columns present of each column's mean over the tasks that
    have it; 0 when no task has one (the baseline's starting value)."""
    columns = [[row[c] for row in results.values() if c in row] for c in SELECTION_COLUMNS]
    means = [float(np.mean(col)) for col in columns if col]
    return float(np.mean(means)) if means else 0.0
