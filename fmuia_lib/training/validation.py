"""Training-time validation: the whole validation set, scored as a submission would be.

:func:`validate` predicts every validation image with the path ``fmuia predict`` uses
(``predict.predict_records``: model outputs brought back to each image's original size)
and scores the records in memory with the scorer ``fmuia evaluate`` uses
(``evaluate.score``), so a validation number is the number the submission of that
checkpoint would get: segmentation at the original resolution, boxes and points in
original pixels. Nothing is written to disk.

The ground truth of a validation set is kept between validations for what is cheap
(labels, boxes, points, image sizes); masks are read at their original size once per
validation.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils.data import DataLoader

from fmuia_lib.challenge import metrics
from fmuia_lib.data.dataset import MultiTaskDataset, PredictionDataset
from fmuia_lib.challenge.evaluate import GroundTruth, score
from fmuia_lib.challenge.predict import predict_records
from fmuia_lib.challenge.submission import Submission

#: validation dataset -> (its frame, its GroundTruth): image sizes are read once per run
_GROUND_TRUTH: "weakref.WeakKeyDictionary[Any, tuple[Any, GroundTruth]]" = weakref.WeakKeyDictionary()


def ground_truth(dataset: MultiTaskDataset) -> GroundTruth:
    """The :class:`~fmuia_lib.challenge.evaluate.GroundTruth` of a labelled dataset's rows, kept for reuse."""
    frame, truth = _GROUND_TRUTH.get(dataset, (None, None))
    if truth is None or frame is not dataset.frame:
        truth = GroundTruth(dataset.frame, dataset.specs)
        _GROUND_TRUTH[dataset] = (dataset.frame, truth)
    return truth


@torch.no_grad()
def validate_whole_set(model, loader_or_dataset: DataLoader | MultiTaskDataset, device: torch.device | str,
             batch_size: int = 16, num_workers: int = 0, amp_dtype: torch.dtype | None = None,
             progress: bool = False) -> dict[str, dict[str, Any]]:
    """Per-task challenge metrics over the whole set, plus ``score`` (the task's quality in [0, 1]).

    ``loader_or_dataset`` is the validation :class:`~fmuia_lib.data.dataset.MultiTaskDataset`
    (with the evaluation transform); given a DataLoader, its dataset and worker count are
    used. Per task (tasks with at least one image): segmentation ``DSC, HD, HD95,
    per_class={DSC, HD, HD95: [C values]}``; classification ``Accuracy, AUC, F1_macro,
    F1_weighted, MCC, AUC_error, F1_per_class``; detection ``IoU``; Regression ``MRE``
    (original pixels) and ``NMRE`` (divided by each image's diagonal); all with
    ``num_samples`` and ``score = metrics.task_quality``. The numbers are exactly those
    of ``evaluate_submission`` on the submission ``predict_to_submission`` writes for the
    same model and images.
    """
    if isinstance(loader_or_dataset, DataLoader):
        dataset, num_workers = loader_or_dataset.dataset, loader_or_dataset.num_workers
    else:
        dataset = loader_or_dataset
    inputs = PredictionDataset(dataset.frame, transforms=dataset.transforms, manifest=dataset.specs)
    if getattr(dataset, "cache", None) is not None:
        inputs = inputs.with_cache(dataset.cache)  # the validation set's prepared form
    truth = ground_truth(dataset)
    records = predict_records(model, inputs, batch_size=batch_size, device=device, num_workers=num_workers,
                              amp_dtype=amp_dtype, progress=progress)
    report = score(truth, Submission.from_records(records, truth.specs))
    results = report.task_results()
    for task_id, scores in results.items():
        scores["score"] = metrics.task_quality(model.task(task_id), scores)
    return results
