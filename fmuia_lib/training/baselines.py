"""Trivial baselines: what a model scores without looking at the image.

A trained model is only interesting where it beats these:

============== ===================================================================
segmentation   the empty mask (every pixel background)
classification the training set's majority class, with probability 1
detection      the mean training box (normalised), in every image
Regression     the mean training landmarks (normalised), in every image
============== ===================================================================

Scores are computed exactly as :func:`fmuia_lib.training.validation.validate` computes them (same
metrics, same frames), so the two tables can be compared row by row.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fmuia_lib import metrics
from fmuia_lib.data.dataset import MultiTaskDataset, image_size
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION


def _targets(dataset: MultiTaskDataset, task_id: str) -> tuple[list[np.ndarray], np.ndarray]:
    """(targets as numpy arrays, ``(N, 2)`` original (height, width)) of one task."""
    items = [dataset[i] for i in dataset.task_indices[task_id]]
    return [item["target"].numpy() for item in items], np.array([item["orig_size"] for item in items], float)


def trivial_baseline_scores(train_set: MultiTaskDataset, val_set: MultiTaskDataset) -> dict[str, dict[str, Any]]:
    """Per validation task: the challenge metrics of its trivial baseline, plus ``score``."""
    results: dict[str, dict[str, Any]] = {}
    for task in val_set.tasks:
        gts, hw = _targets(val_set, task.task_id)
        if task.task_type == SEGMENTATION:
            scores = metrics.task_scores(task, [np.zeros_like(g, dtype=np.uint8) for g in gts],
                                         [g.astype(np.uint8) for g in gts])
        else:
            # Training means come from the labels and image headers (no pixels, no augmentation).
            train_rows = train_set.frame.iloc[train_set.task_indices[task.task_id]]
            if task.task_type == CLASSIFICATION:
                majority = class_counts(train_rows, task.num_classes).argmax()
                probs = np.zeros((len(gts), task.num_classes))
                probs[:, majority] = 1.0
                scores = metrics.task_scores(task, probs, np.array(gts, int))
            elif task.task_type == DETECTION:
                scale = np.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], axis=1)
                mean_box = mean_normalised_target(train_rows).ravel()
                scores = metrics.task_scores(task, mean_box[None] * scale, np.array(gts) * scale)
            elif task.task_type == REGRESSION:
                scale = hw[:, None, ::-1]
                mean_points = mean_normalised_target(train_rows)
                scores = metrics.task_scores(task, mean_points[None] * scale, np.array(gts) * scale,
                                             image_sizes=hw)
            else:
                raise ValueError(f"{task.task_id}: unknown task type {task.task_type!r}")
        scores["score"] = metrics.task_quality(task, scores)
        results[task.task_id] = scores
    return results


def training_priors(train_set: MultiTaskDataset,
                    types: tuple[str, ...] = (CLASSIFICATION, REGRESSION)) -> dict[str, torch.Tensor]:
    """What the trivial baseline predicts for each global task, from the training labels:
    classification class frequencies (add-one smoothed) and Regression mean landmarks
    normalised by image size (``K x 2``). Reads labels and image headers, not pixels.

    ``MultiTaskNet`` heads start from these when ``TrainConfig.head_priors`` is on.
    """
    priors: dict[str, torch.Tensor] = {}
    for task in train_set.tasks:
        if task.task_type not in types:
            continue
        rows = train_set.frame.iloc[train_set.task_indices[task.task_id]]
        if task.task_type == CLASSIFICATION:
            counts = class_counts(rows, task.num_classes) + 1.0
            priors[task.task_id] = torch.tensor(counts / counts.sum(), dtype=torch.float32)
        elif task.task_type == REGRESSION:
            priors[task.task_id] = torch.tensor(mean_normalised_target(rows), dtype=torch.float32)
    return priors


def class_counts(rows, num_classes: int) -> np.ndarray:
    """Images per class among ``rows`` (a slice of a ``read_root`` table holding one
    classification task), ``num_classes`` long."""
    return np.bincount(rows["target"].astype(int), minlength=num_classes)


def mean_normalised_target(rows) -> np.ndarray:
    """Mean of the rows' boxes (``2 x 2``: two corners) or landmarks (``K x 2``), each divided
    by its image's (width, height) read from the image header. ``rows``: a slice of a
    :func:`fmuia_lib.data.layout.read_root` table holding one detection or Regression task."""
    values = [np.asarray(target, float).reshape(-1, 2) / image_size(image_file)[::-1]
              for image_file, target in zip(rows["image_file"], rows["target"])]
    return np.mean(values, axis=0)
