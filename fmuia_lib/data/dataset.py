"""Datasets: a data root (or a table of its rows) as torch Datasets.

``MultiTaskDataset`` (training and validation) reads images with their labels;
``PredictionDataset`` reads images only (prediction on a data root without labels).

A ``MultiTaskDataset`` item is a dict (the contract in ``docs/architecture.md``)::

    image       float32 3 x H x W, ImageNet-normalised, in the model frame
    task_id     str;  task_type: "segmentation" | "classification" | "detection" | "Regression"
    target      segmentation int64 H x W | classification int64 scalar |
                detection float32 (4,) xyxy in [0, 1] | Regression float32 (K, 2) xy in [0, 1]
    orig_size   (height, width) of the image on disk
    image_path  as written in the CSV;  source: "<csv file>:<line>"

Boxes and points are normalised by the size of the *transformed* image, so
``target * [W, H]`` of any image size gives pixels in that frame; ``predict``
multiplies by the original size to go back to the disk frame.

The dataset never skips or replaces a sample: a missing or broken file raises a
:class:`~fmuia_lib.data.layout.LayoutError` naming the CSV line and the file. Its content
rules are ``fmuia data check``'s: images and masks through :mod:`fmuia_lib.data.images`
(PNG/JPEG by their bytes, whole files), masks that fit their image and task
(:func:`~fmuia_lib.data.images.mask_fit_problem`), boxes and points inside the image.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from fmuia_lib.data.images import ImageReadError, image_size, mask_fit_problem, read_image, read_mask
from fmuia_lib.data.layout import (CSV_DIR, LayoutError, Problem, read_root, resolve_tasks,
                                   target_outside_image)
from fmuia_lib.data.transforms import JointTransform, normalize_image
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec


#: The readers live in :mod:`fmuia_lib.data.images`; the notebooks import them from here.
load_image = read_image
__all__ = ["MultiTaskDataset", "PredictionDataset", "collate", "task_batches", "image_size", "load_image",
           "load_mask"]


def load_mask(path: str | Path) -> np.ndarray:
    """A class-index mask as an ``H x W`` integer array (:func:`images.read_mask`'s rules)."""
    return read_mask(path).values


def _select_tasks(frame: pd.DataFrame, specs: dict[str, TaskSpec],
                  tasks: Iterable[str | TaskSpec] | None) -> tuple[pd.DataFrame, list[TaskSpec], dict[str, list[int]]]:
    """Rows of ``tasks`` only (re-indexed from 0), the TaskSpecs present (manifest order), and
    task id -> item indices."""
    if tasks is not None:
        wanted = {t if isinstance(t, str) else t.task_id for t in tasks}
        unknown = sorted(wanted - set(specs))
        if unknown:
            raise KeyError(f"unknown task_id(s) {unknown}: not in the manifest")
        frame = frame[frame["task_id"].isin(wanted)]
    frame = frame.reset_index(drop=True)
    present = set(frame["task_id"])
    present_tasks = [t for t in specs.values() if t.task_id in present]
    indices = {t.task_id: np.flatnonzero(frame["task_id"].to_numpy() == t.task_id).tolist()
               for t in present_tasks}
    return frame, present_tasks, indices


def task_batches(task_indices: dict[str, list[int]], batch_size: int) -> list[list[int]]:
    """Every item once, in task order, in task-homogeneous batches of at most ``batch_size``
    (the batch sampler of validation and prediction)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    return [idx[i:i + batch_size] for idx in task_indices.values() for i in range(0, len(idx), batch_size)]


class MultiTaskDataset(Dataset):
    """The rows of a data root as model-ready items (see the module docstring).

    ``root_or_frame`` is a data root or a table from :func:`~fmuia_lib.data.layout.read_root`
    (or a subset of its rows, e.g. after :func:`~fmuia_lib.data.sampler.stratified_split`).
    ``transforms`` is a :class:`~fmuia_lib.data.transforms.JointTransform` (or any
    ``(sample, task) -> sample`` callable); without one, images keep their size.
    ``tasks`` keeps only these tasks (ids or TaskSpecs). Attributes: ``frame`` (rows, re-indexed from
    0), ``tasks`` (TaskSpecs present, manifest order), ``task_indices`` (task id ->
    item indices), the input of :class:`~fmuia_lib.data.sampler.TaskBatchSampler`.
    """

    def __init__(self, root_or_frame: str | Path | pd.DataFrame, transforms: JointTransform | None = None,
                 tasks: Iterable[str | TaskSpec] | None = None, manifest=None):
        specs = resolve_tasks(manifest)
        frame = (root_or_frame if isinstance(root_or_frame, pd.DataFrame)
                 else read_root(root_or_frame, specs))
        self.frame, self.tasks, self.task_indices = _select_tasks(frame, specs, tasks)
        self.transforms = transforms
        self._specs = specs
        self._rows = self.frame.to_dict("records")  # plain dicts: fast to index, cheap to pickle
        self.cache = None  #: a data.cache.DataCache of these rows at the transforms' size (with_cache)

    @property
    def specs(self) -> dict[str, TaskSpec]:
        """The manifest the dataset was read with (``{task_id: TaskSpec}``)."""
        return self._specs

    def with_transforms(self, transforms: JointTransform | None) -> "MultiTaskDataset":
        """The same rows and tasks with other transforms (no files or manifest read again);
        a data cache stays only when the new transforms resize to its size."""
        other = copy.copy(self)
        other.transforms = transforms
        if other.cache is not None and getattr(transforms, "size", None) != (other.cache.size,) * 2:
            other.cache = None
        return other

    def with_cache(self, cache) -> "MultiTaskDataset":
        """The same rows read from ``cache`` (:class:`~fmuia_lib.data.cache.DataCache`, or None
        for none): each item's resized image (and mask) comes from it, the rest of the
        transform runs as usual, so items are equal to the decoded ones."""
        return _with_cache(self, cache)

    def __len__(self) -> int:
        return len(self._rows)

    def _fail(self, row: dict, path: str, message: str) -> LayoutError:
        return LayoutError(str(Problem(f"{CSV_DIR}/{row['csv_file']}", row["csv_line"], path, message)))

    def _load_sample(self, row: dict, task: TaskSpec) -> tuple[dict, tuple[int, int]]:
        """The untransformed sample as tv_tensors, and the image's (height, width)."""
        try:
            image = read_image(row["image_file"])
        except ImageReadError as err:
            raise self._fail(row, row["image_path"], err.reason) from None
        height, width = image.shape[:2]
        sample = {"image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))}
        target = row["target"]
        if task.task_type == SEGMENTATION:
            try:
                mask = read_mask(row["mask_file"]).values
            except ImageReadError as err:
                raise self._fail(row, row["mask_path"], err.reason) from None
            problem = mask_fit_problem(mask, (height, width), task.num_classes)
            if problem:
                raise self._fail(row, row["mask_path"], problem)
            sample["mask"] = tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64)))
        elif task.task_type in (DETECTION, REGRESSION):
            problem = target_outside_image(task, target, width, height)
            if problem:
                raise self._fail(row, row["image_path"], problem)
            coords = torch.tensor(target, dtype=torch.float32)
            if task.task_type == DETECTION:
                sample["boxes"] = tv_tensors.BoundingBoxes(coords[None], format="XYXY",
                                                           canvas_size=(height, width))
            else:
                sample["points"] = tv_tensors.KeyPoints(coords, canvas_size=(height, width))
        return sample, (height, width)

    def _cached_sample(self, row: dict, task: TaskSpec) -> tuple[dict, tuple[int, int]]:
        """The resized sample from the cache: image and mask as stored, boxes and points
        resized here by the transform's own resize (from the CSV's pixels)."""
        image, mask, (height, width) = self.cache.item(row["source"])
        sample = {"image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))}
        if task.task_type == SEGMENTATION:
            sample["mask"] = tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64)))
        elif task.task_type in (DETECTION, REGRESSION):
            coords = torch.tensor(row["target"], dtype=torch.float32)
            if task.task_type == DETECTION:
                sample["boxes"] = self.transforms.resize(
                    tv_tensors.BoundingBoxes(coords[None], format="XYXY", canvas_size=(height, width)))
            else:
                sample["points"] = self.transforms.resize(tv_tensors.KeyPoints(coords, canvas_size=(height, width)))
        return sample, (height, width)

    def __getitem__(self, index: int) -> dict:
        row = self._rows[index]
        task = self._specs[row["task_id"]]
        if self.cache is not None:
            sample, orig_size = self._cached_sample(row, task)
            sample = self.transforms.augment(sample, task)
        else:
            sample, orig_size = self._load_sample(row, task)
            if self.transforms is not None:
                sample = self.transforms(sample, task)
        image = normalize_image(sample["image"])
        height, width = image.shape[-2:]
        if task.task_type == SEGMENTATION:
            target = sample["mask"].as_subclass(torch.Tensor).long()
        elif task.task_type == CLASSIFICATION:
            target = torch.tensor(row["target"], dtype=torch.int64)
        elif self.transforms is None or not self.transforms.warps(task):
            target = _unwarped_target(task, row["target"], orig_size, (height, width))
        elif task.task_type == DETECTION:
            target = sample["boxes"].as_subclass(torch.Tensor)[0] / torch.tensor([width, height] * 2)
        else:
            target = sample["points"].as_subclass(torch.Tensor) / torch.tensor([width, height])
        return {"image": image, "task_id": task.task_id, "task_type": task.task_type,
                "target": target.float() if target.is_floating_point() else target,
                "orig_size": orig_size, "image_path": row["image_path"], "source": row["source"]}


def _unwarped_target(task: TaskSpec, target, orig_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The normalised box or landmarks of an image that was only resized, rounded as the baseline
    rounds them: a box as albumentations carries it through a resize (float64 ``x / W_orig``,
    times the new width, to float32, then divided by it in float32), landmarks as its dataset
    divides them (float32 coordinates by the original width and height)."""
    (orig_h, orig_w), (h, w) = orig_size, size
    if task.task_type == DETECTION:
        scale = np.array([w, h, w, h], dtype=np.float64)
        box = (np.asarray(target, dtype=np.float64) / np.array([orig_w, orig_h] * 2) * scale).astype(np.float32)
        return torch.from_numpy(box / scale.astype(np.float32))
    return torch.tensor(target, dtype=torch.float32) / torch.tensor([orig_w, orig_h], dtype=torch.float32)


class PredictionDataset(Dataset):
    """The rows of a data root as model inputs, without labels: what prediction reads.

    ``root_or_frame`` is a data root, read with ``read_root(root, labels=False)`` (only the
    four common CSV columns are needed; annotation columns are ignored and no mask is
    ever opened), or a table from :func:`~fmuia_lib.data.layout.read_root` (labelled or
    not; its labels are not used). ``transforms`` is the evaluation transform
    (``build_transforms(size, train=False)``); images of any size and mode are read
    with :func:`~fmuia_lib.data.images.read_image`. An item is a dict::

        image       float32 3 x H x W, ImageNet-normalised, in the model frame
        task_id, task_type, image_path (as in the CSV), source ("<csv file>:<line>")
        orig_size   (height, width) of the image on disk
        mask_path   the CSV's mask_path, or None when the CSV has none (segmentation
                    rows only; ``predict.mask_output_path`` names the file to write)

    Attributes as :class:`MultiTaskDataset`: ``frame``, ``tasks``, ``task_indices``.

    ``unreadable`` says what an image that cannot be read does: ``"error"`` (the default,
    fmuia's reading) raises a :class:`~fmuia_lib.data.layout.LayoutError` naming the CSV
    line; ``"fallback"`` (the exported container's) reads images by content as the
    challenge's code does (``read_image(by_content=True)``), and an image that still cannot
    be read becomes a black image of its header's size (``FALLBACK_SIZE`` when even that is
    unknown), so that it gets a prediction of the right form; its item's ``unreadable``
    holds the reason (None for every readable image).
    """

    #: ``(height, width)`` of the stand-in for an unreadable image whose size is unknown.
    FALLBACK_SIZE = (512, 512)

    def __init__(self, root_or_frame: str | Path | pd.DataFrame, transforms: JointTransform | None = None,
                 tasks: Iterable[str | TaskSpec] | None = None, manifest=None, unreadable: str = "error"):
        if unreadable not in ("error", "fallback"):
            raise ValueError(f"unreadable must be 'error' or 'fallback', got {unreadable!r}")
        self.unreadable = unreadable
        specs = resolve_tasks(manifest)
        frame = (root_or_frame if isinstance(root_or_frame, pd.DataFrame)
                 else read_root(root_or_frame, specs, labels=False))
        self.frame, self.tasks, self.task_indices = _select_tasks(frame, specs, tasks)
        self.transforms = transforms
        self._specs = specs
        columns = ["task_id", "image_path", "image_file", "source", "csv_file", "csv_line"]
        mask_paths = (self.frame["mask_path"] if "mask_path" in self.frame.columns
                      else pd.Series([None] * len(self.frame), dtype=object))
        self._rows = [{**row, "mask_path": value or None}  # "" and NaN-free None alike
                      for row, value in zip(self.frame[columns].to_dict("records"), mask_paths)]
        self.cache = None  #: a data.cache.DataCache of these rows at the transforms' size (with_cache)

    def with_cache(self, cache) -> "PredictionDataset":
        """The same rows with their resized images read from ``cache`` (see
        :meth:`MultiTaskDataset.with_cache`)."""
        return _with_cache(self, cache)

    @property
    def specs(self) -> dict[str, TaskSpec]:
        """The manifest the dataset was read with (``{task_id: TaskSpec}``)."""
        return self._specs

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict:
        row = self._rows[index]
        task = self._specs[row["task_id"]]
        reason = None
        if self.cache is not None:
            image, _, orig_size = self.cache.item(row["source"])
            sample = {"image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))}
            return self._item(row, task, self.transforms.augment(sample, task), orig_size, reason)
        try:
            image = read_image(row["image_file"], by_content=self.unreadable == "fallback")
        except ImageReadError as err:
            if self.unreadable == "error":
                where = Problem(f"{CSV_DIR}/{row['csv_file']}", row["csv_line"], row["image_path"], err.reason)
                raise LayoutError(str(where)) from None
            reason = err.reason
            image = np.zeros((*self._stand_in_size(row["image_file"]), 3), np.uint8)
        orig_size = image.shape[:2]
        sample = {"image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))}
        if self.transforms is not None:
            sample = self.transforms(sample, task)
        return self._item(row, task, sample, orig_size, reason)

    def _item(self, row: dict, task: TaskSpec, sample: dict, orig_size, reason: str | None) -> dict:
        item = {"image": normalize_image(sample["image"]), "task_id": task.task_id, "task_type": task.task_type,
                "orig_size": orig_size, "image_path": row["image_path"], "source": row["source"],
                "mask_path": row["mask_path"] if task.task_type == SEGMENTATION else None}
        if self.unreadable == "fallback":
            item["unreadable"] = reason
        return item

    def _stand_in_size(self, image_file: str) -> tuple[int, int]:
        """``(height, width)`` of an unreadable image from its header when Pillow can read
        one (whatever the format), else :attr:`FALLBACK_SIZE`."""
        from PIL import Image

        try:
            with Image.open(image_file) as im:
                width, height = im.size
            if width > 0 and height > 0:
                return int(height), int(width)
        except Exception:  # noqa: BLE001 - any failure means: no size to be had
            pass
        return self.FALLBACK_SIZE


def _with_cache(dataset, cache):
    """A copy of ``dataset`` reading through ``cache`` (None: from the files): the cache must
    hold every row, at the size the dataset's transform resizes to."""
    other = copy.copy(dataset)
    other.cache = cache
    if cache is None:
        return other
    size = getattr(dataset.transforms, "size", None)
    if size != (cache.size, cache.size):
        raise ValueError(f"the data cache {cache.folder} holds images at {cache.size} px; the dataset's transform "
                         f"resizes to {size}")
    if getattr(dataset, "unreadable", "error") != "error":
        raise ValueError("a data cache holds readable images only; read unreadable='fallback' data from its files")
    for row in dataset._rows:
        cache.index(row["source"])  # every row present (a CacheError names the first that is not)
    return other


def collate(batch: list[dict]) -> dict:
    """Stack a one-task batch: ``image`` (B,3,H,W), ``target`` (B, ...; when the items have
    one), ``orig_size`` (B, 2) int64; ``task_id``/``task_type`` as single strings;
    ``image_path``/``source`` (and ``mask_path`` of prediction items) as lists."""
    task_ids = {item["task_id"] for item in batch}
    if len(task_ids) != 1:
        raise ValueError(f"a batch must hold one task, got {sorted(task_ids)} "
                         f"(rows {[item['source'] for item in batch]}); use TaskBatchSampler")
    out = {
        "image": torch.stack([item["image"] for item in batch]),
        "task_id": batch[0]["task_id"],
        "task_type": batch[0]["task_type"],
        "orig_size": torch.tensor([item["orig_size"] for item in batch], dtype=torch.int64),
        "image_path": [item["image_path"] for item in batch],
        "source": [item["source"] for item in batch],
    }
    if "target" in batch[0]:
        out["target"] = torch.stack([item["target"] for item in batch])
    if "mask_path" in batch[0]:
        out["mask_path"] = [item["mask_path"] for item in batch]
    if "unreadable" in batch[0]:
        out["unreadable"] = [item["unreadable"] for item in batch]
    return out


def collate_mixed(batch: list[dict]) -> dict:
    """Stack a batch that may mix tasks (the baseline's validation batches): ``image``
    (B,3,H,W); ``target``, ``task_id``, ``task_type``, ``orig_size`` and ``source`` as lists."""
    return {
        "image": torch.stack([item["image"] for item in batch]),
        "target": [item["target"] for item in batch],
        "task_id": [item["task_id"] for item in batch],
        "task_type": [item["task_type"] for item in batch],
        "orig_size": [item["orig_size"] for item in batch],
        "source": [item["source"] for item in batch],
    }
