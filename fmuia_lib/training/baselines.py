"""The trivial baseline: what a model predicts without looking at the image, learned from
the training labels (and image headers, no pixels).

============== ===================================================================
segmentation   the empty mask (every pixel background)
classification the training set's class frequencies (:func:`class_counts`)
detection      the mean training box, normalised by image size (:func:`mean_normalised_target`)
Regression     the mean training landmarks, normalised the same way
============== ===================================================================

A trained model is only interesting where it beats it: notebook 04 scores its prediction
records (:func:`fmuia_lib.error_analysis.trivial_baseline_records`) with the one scorer.
:func:`training_priors` starts the global heads at the same prediction, the class
frequencies add-one smoothed so that no class starts at probability 0.
"""
from __future__ import annotations

import numpy as np
import torch

from fmuia_lib.data.dataset import MultiTaskDataset, image_size
from fmuia_lib.tasks import CLASSIFICATION, REGRESSION


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
