"""Trivial baselines: what a model scores without looking at the image.

A trained model is only interesting where it beats these. Each is the best prediction that
ignores the image, learned from the training labels alone (the one definition, used by
training, the margin tables of :mod:`fmuia_lib.experiments.margins` and ``error_analysis``):

============== ===================================================================
segmentation   the empty mask (every pixel background)
classification the training class frequencies as probabilities (so the majority
               class is predicted, and AUC is 0.5)
detection      the mean training box (normalised to each image's size), in every image
Regression     the mean training landmarks (normalised likewise), in every image
============== ===================================================================

:func:`trivial_baseline_records` writes it as prediction records (the format of
``predict.write_submission``); :func:`trivial_baseline_scores` scores those records with the
scorer ``fmuia evaluate`` and whole-set validation use (``evaluate.score``), so a model's
number and its baseline's come from one code path.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from fmuia_lib.challenge import metrics
from fmuia_lib.data.dataset import MultiTaskDataset, image_size
from fmuia_lib.challenge.evaluate import score
from fmuia_lib.challenge.submission import Submission
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec


def trivial_baseline_records(train: pd.DataFrame, val: pd.DataFrame,
                             tasks: Mapping[str, TaskSpec]) -> list[dict[str, Any]]:
    """Prediction records (``write_submission`` format) of the trivial baseline for ``val``.

    ``train`` and ``val`` are tables from :func:`fmuia_lib.data.layout.read_root`. A task
    in ``val`` without training rows is an error (its baseline cannot be learned).
    """
    records: list[dict[str, Any]] = []
    for task_id, rows in val.groupby("task_id", sort=False):
        task = tasks[task_id]
        source = train[train["task_id"] == task_id]
        if source.empty:
            raise ValueError(f"{task_id}: no training rows, so no trivial baseline can be learned")
        if task.task_type == CLASSIFICATION:
            counts = class_counts(source, task.num_classes)
            probs = counts / counts.sum()
        elif task.task_type in (DETECTION, REGRESSION):
            mean = mean_normalised_target(source).ravel()
        for row in rows.itertuples():
            record: dict[str, Any] = {"task_id": task_id, "image_path": row.image_path}
            if task.task_type == SEGMENTATION:
                record.update(mask_path=row.mask_path, mask=np.zeros(image_size(row.image_file), np.uint8))
            elif task.task_type == CLASSIFICATION:
                record["probs"] = probs
            elif task.task_type == DETECTION:
                record.update(box_normalized=mean, orig_size=image_size(row.image_file))
            else:
                record.update(points_normalized=mean, orig_size=image_size(row.image_file))
            records.append(record)
    return records


def trivial_baseline_scores(train_set: MultiTaskDataset, val_set: MultiTaskDataset) -> dict[str, dict[str, Any]]:
    """Per validation task: the challenge metrics of its trivial baseline, plus ``score``
    (``metrics.task_quality``), as :func:`fmuia_lib.training.validation.validate_whole_set` reports a model's."""
    from fmuia_lib.training.validation import ground_truth  # validation imports the model stack

    truth = ground_truth(val_set)
    records = trivial_baseline_records(train_set.frame, val_set.frame, val_set.specs)
    results = score(truth, Submission.from_records(records, truth.specs)).task_results()
    for task_id, scores in results.items():
        scores["score"] = metrics.task_quality(truth.specs[task_id], scores)
    return results


def training_priors(train_set: MultiTaskDataset) -> dict[str, torch.Tensor]:
    """What the trivial baseline predicts for each Regression task, from the training labels:
    its mean landmarks normalised by image size (``K x 2``). Reads labels and image headers,
    not pixels.

    ``MultiTaskNet``'s landmark heads start from these when ``TrainConfig.head_priors`` is on.
    """
    return {task.task_id: torch.tensor(mean_normalised_target(
                train_set.frame.iloc[train_set.task_indices[task.task_id]]), dtype=torch.float32)
            for task in train_set.tasks if task.task_type == REGRESSION}


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
