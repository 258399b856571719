"""``MultiTaskDataset``: one data root (or a table of its rows) as a torch Dataset.

An item is a dict (the contract in ``docs/architecture.md``)::

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
:class:`~fmuia_lib.data.layout.LayoutError` naming the CSV line and the file.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from fmuia_lib.data.layout import (CSV_DIR, LayoutError, Problem, read_root, resolve_tasks,
                                   target_outside_image)
from fmuia_lib.data.transforms import JointTransform, normalize_image
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec


def load_image(path: str | Path) -> np.ndarray:
    """Read a PNG/JPEG as an ``H x W x 3`` uint8 RGB array (grayscale is repeated to 3 channels).

    EXIF orientation is ignored, so sizes and coordinates match the file as stored.
    Raises FileNotFoundError or ValueError naming the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ValueError(f"unreadable image: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image as stored, read from its header (no pixels decoded)."""
    from PIL import Image

    with Image.open(path) as im:
        width, height = im.size
    return height, width


def load_mask(path: str | Path) -> np.ndarray:
    """Read a single-channel class-index mask as an ``H x W`` integer array; raises naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mask file not found: {path}")
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ValueError(f"unreadable mask: {path}")
    if mask.ndim != 2:
        raise ValueError(f"mask is not single-channel ({mask.shape[2]} channels): {path}")
    return mask


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
        if tasks is not None:
            wanted = {t if isinstance(t, str) else t.task_id for t in tasks}
            unknown = sorted(wanted - set(specs))
            if unknown:
                raise KeyError(f"unknown task_id(s) {unknown}: not in the manifest")
            frame = frame[frame["task_id"].isin(wanted)]
        self.frame = frame.reset_index(drop=True)
        self.transforms = transforms
        self._specs = specs
        present = set(self.frame["task_id"])
        self.tasks: list[TaskSpec] = [t for t in specs.values() if t.task_id in present]
        self.task_indices: dict[str, list[int]] = {
            t.task_id: np.flatnonzero(self.frame["task_id"].to_numpy() == t.task_id).tolist()
            for t in self.tasks}
        self._rows = self.frame.to_dict("records")  # plain dicts: fast to index, cheap to pickle

    def with_transforms(self, transforms: JointTransform | None) -> "MultiTaskDataset":
        """The same rows and tasks with other transforms (no files or manifest read again)."""
        other = copy.copy(self)
        other.transforms = transforms
        return other

    def __len__(self) -> int:
        return len(self._rows)

    def _fail(self, row: dict, path: str, message: str) -> LayoutError:
        return LayoutError(str(Problem(f"{CSV_DIR}/{row['csv_file']}", row["csv_line"], path, message)))

    def _load_sample(self, row: dict, task: TaskSpec) -> tuple[dict, tuple[int, int]]:
        """The untransformed sample as tv_tensors, and the image's (height, width)."""
        try:
            image = load_image(row["image_file"])
        except (OSError, ValueError) as err:
            raise self._fail(row, row["image_path"], str(err)) from None
        height, width = image.shape[:2]
        sample = {"image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))}
        target = row["target"]
        if task.task_type == SEGMENTATION:
            try:
                mask = load_mask(row["mask_file"])
            except (OSError, ValueError) as err:
                raise self._fail(row, row["mask_path"], str(err)) from None
            if mask.shape != (height, width):
                raise self._fail(row, row["mask_path"], f"mask is {mask.shape[1]}x{mask.shape[0]} but "
                                 f"its image is {width}x{height}")
            if int(mask.max()) >= task.num_classes:
                raise self._fail(row, row["mask_path"], f"mask has value {int(mask.max())} >= "
                                 f"num_classes {task.num_classes}")
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

    def __getitem__(self, index: int) -> dict:
        row = self._rows[index]
        task = self._specs[row["task_id"]]
        sample, orig_size = self._load_sample(row, task)
        if self.transforms is not None:
            sample = self.transforms(sample, task)
        image = normalize_image(sample["image"])
        height, width = image.shape[-2:]
        if task.task_type == SEGMENTATION:
            target = sample["mask"].as_subclass(torch.Tensor).long()
        elif task.task_type == CLASSIFICATION:
            target = torch.tensor(row["target"], dtype=torch.int64)
        elif task.task_type == DETECTION:
            target = sample["boxes"].as_subclass(torch.Tensor)[0] / torch.tensor([width, height] * 2)
        else:
            target = sample["points"].as_subclass(torch.Tensor) / torch.tensor([width, height])
        return {"image": image, "task_id": task.task_id, "task_type": task.task_type,
                "target": target.float() if target.is_floating_point() else target,
                "orig_size": orig_size, "image_path": row["image_path"], "source": row["source"]}


def collate(batch: list[dict]) -> dict:
    """Stack a one-task batch: ``image`` (B,3,H,W), ``target`` (B, ...), ``orig_size`` (B, 2)
    int64; ``task_id``/``task_type`` as single strings; ``image_path``/``source`` as lists."""
    task_ids = {item["task_id"] for item in batch}
    if len(task_ids) != 1:
        raise ValueError(f"a batch must hold one task, got {sorted(task_ids)} "
                         f"(rows {[item['source'] for item in batch]}); use TaskBatchSampler")
    return {
        "image": torch.stack([item["image"] for item in batch]),
        "target": torch.stack([item["target"] for item in batch]),
        "task_id": batch[0]["task_id"],
        "task_type": batch[0]["task_type"],
        "orig_size": torch.tensor([item["orig_size"] for item in batch], dtype=torch.int64),
        "image_path": [item["image_path"] for item in batch],
        "source": [item["source"] for item in batch],
    }


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
