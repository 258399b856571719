"""Whole-set validation: per-task challenge metrics over the whole validation set.

The selection score covers every task type (``metrics.task_quality``,
``metrics.selection_score``)::

    selection score = mean over tasks of q(task), each q in [0, 1]
      segmentation   q = DSC (foreground classes)
      classification q = mean(Accuracy, F1_macro, AUC)  (AUC dropped when undefined)
      detection      q = IoU
      Regression     q = max(0, 1 - MRE / image diagonal)

This is switch ``whole_set_validation``; the baseline's rule is
``training.per_batch_validation``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fmuia_lib import metrics
from fmuia_lib.data.dataset import MultiTaskDataset
from fmuia_lib.model import MultiTaskNet
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION
from fmuia_lib.training.data import _loader, sequential_task_batches


@torch.no_grad()
def validate(model: MultiTaskNet, loader_or_dataset: DataLoader | MultiTaskDataset,
             device: torch.device | str, batch_size: int = 16, num_workers: int = 0,
             amp_dtype: torch.dtype | None = None, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Per-task challenge metrics over the whole set, plus ``score`` (the task's quality in [0, 1]).

    Segmentation is scored on the model-frame masks; boxes and points are taken back to
    original pixels with each image's ``orig_size`` (so MRE is in original pixels, and
    ``NMRE`` divides by each image's diagonal).
    """
    device = torch.device(device)
    if isinstance(loader_or_dataset, DataLoader):
        loader = loader_or_dataset
    else:
        loader = _loader(loader_or_dataset, sequential_task_batches(loader_or_dataset.task_indices, batch_size),
                         num_workers, seed=0, device=device)
    was_training = model.training
    model.eval()
    preds: dict[str, list] = {}
    gts: dict[str, list] = {}
    sizes: dict[str, list] = {}
    for batch in tqdm(loader, desc="validate", leave=False, disable=not progress):
        task_id = batch_task_id(batch)
        task = model.task(task_id)
        images = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model.predict(images, task_id)
        target = batch["target"]
        hw = orig_sizes(batch)
        if task.task_type == SEGMENTATION:
            pred = out["probs"].argmax(dim=1).to(torch.uint8).cpu().numpy()
            preds.setdefault(task_id, []).extend(pred)
            gts.setdefault(task_id, []).extend(target.numpy().astype(np.uint8))
        elif task.task_type == CLASSIFICATION:
            preds.setdefault(task_id, []).append(out["probs"].cpu().numpy())
            gts.setdefault(task_id, []).append(target.numpy())
        elif task.task_type == DETECTION:
            scale = np.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], axis=1)
            preds.setdefault(task_id, []).append(out["boxes"].cpu().numpy() * scale)
            gts.setdefault(task_id, []).append(target.numpy() * scale)
        elif task.task_type == REGRESSION:
            scale = hw[:, None, ::-1]  # (x, y) scale = (width, height)
            preds.setdefault(task_id, []).append(out["points"].cpu().numpy() * scale)
            gts.setdefault(task_id, []).append(target.numpy() * scale)
        sizes.setdefault(task_id, []).append(hw)
    model.train(was_training)
    results: dict[str, dict[str, Any]] = {}
    for task_id in preds:
        task = model.task(task_id)
        if task.task_type == SEGMENTATION:
            scores = metrics.task_scores(task, preds[task_id], gts[task_id])
        else:
            scores = metrics.task_scores(task, np.concatenate(preds[task_id]), np.concatenate(gts[task_id]),
                                         image_sizes=np.concatenate(sizes[task_id]))
        scores["score"] = metrics.task_quality(task, scores)
        results[task_id] = scores
    return results


def batch_task_id(batch: dict[str, Any]) -> str:
    """The one task of a task-homogeneous batch."""
    task_id = batch["task_id"]
    if isinstance(task_id, str):
        return task_id
    ids = set(task_id)
    if len(ids) != 1:
        raise ValueError(f"a batch must hold one task, got {sorted(ids)}")
    return ids.pop()


def orig_sizes(batch: dict[str, Any]) -> np.ndarray:
    """``(B, 2)`` array of ``(height, width)`` on disk."""
    sizes = batch["orig_size"]
    if isinstance(sizes, torch.Tensor):
        return sizes.cpu().numpy().reshape(-1, 2).astype(np.float64)
    return np.asarray([[float(h), float(w)] for h, w in sizes], dtype=np.float64)
