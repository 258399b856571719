"""Writing a challenge-format submission: from prediction records, or from a model.

The submission folder ``DIR`` holds

* one PNG per segmentation image at ``DIR/<mask_path without its leading ../>``, pixel
  value = class index, at the original image size;
* ``classification_predictions.json``: ``[{image_path, task_id, predicted_class, predicted_probs}]``;
* ``detection_predictions.json``: ``[{image_path, task_id, bbox_normalized, bbox_pixels}]``;
* ``regression_predictions.json``: ``[{image_path, task_id, predicted_points_normalized,
  predicted_points_pixels}]`` with points flattened as ``[x1, y1, x2, y2, ...]``.

``image_path`` is written exactly as in the ground-truth CSV, which is how the scorer
matches predictions to rows.

Two layers, so that the format can be tested without a model:

1. :func:`write_submission` turns plain *prediction records* (dicts, see its docstring)
   into the files above.
2. :func:`predict_to_submission` runs a :class:`~fmuia_lib.model.MultiTaskNet` over a data
   root and makes those records. The model works in its own frame (every image resized
   to ``image_size``); because the evaluation transform resizes the *whole* image, a
   normalised coordinate maps back to the original image by multiplying with its width
   (x) or height (y), and mask probabilities are resized back before the arg-max.
"""
from __future__ import annotations

import json
import posixpath
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np

from fmuia_lib.tasks import (CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec,
                             load_manifest)

#: The prediction file of each non-segmentation task type.
PREDICTION_FILES = {
    CLASSIFICATION: "classification_predictions.json",
    DETECTION: "detection_predictions.json",
    REGRESSION: "regression_predictions.json",
}


class SubmissionError(ValueError):
    """A prediction cannot be written as asked; the message names the record and problem."""


def submission_path(out_dir: str | Path, csv_path: str) -> Path:
    """Where the submission keeps the file that the CSV calls ``csv_path``.

    ``"../Segmentation/Two/x/masks/a.png"`` -> ``out_dir/Segmentation/Two/x/masks/a.png``
    (the leading ``../`` is dropped, as the challenge's scorer does). Raises
    :class:`SubmissionError` when the result would land outside ``out_dir``: an absolute
    path, a drive letter, or ``..`` components that climb out.
    """
    text = str(csv_path).replace("\\", "/")
    relative = text[3:] if text.startswith("../") else text
    first = relative.split("/", 1)[0]
    normal = posixpath.normpath(relative) if relative else ""
    if (not relative or relative.startswith("/") or ":" in first
            or normal == ".." or normal.startswith("../") or normal == "."):
        raise SubmissionError(f"refusing to write {csv_path!r}: the path would land outside the "
                              f"submission folder {out_dir}")
    return Path(out_dir) / normal


def to_pixels(normalised: Sequence[float] | np.ndarray, orig_size: Sequence[int]) -> list[float]:
    """Flat ``[x1, y1, x2, y2, ...]`` in [0, 1] -> original pixels of an image of ``(height, width)``.

    Coordinates are first clipped to [0, 1] (a point outside the image cannot be right).
    """
    values = np.clip(np.asarray(normalised, dtype=np.float64).ravel(), 0.0, 1.0)
    height, width = float(orig_size[0]), float(orig_size[1])
    scale = np.tile([width, height], len(values) // 2)
    return [float(v) for v in values * scale]


def _record_key(record: Mapping[str, Any], index: int) -> tuple[str, str]:
    try:
        return str(record["task_id"]), str(record["image_path"])
    except KeyError as err:
        raise SubmissionError(f"prediction record {index}: missing key {err.args[0]!r}") from None


def _check_probs(probs: np.ndarray, task: TaskSpec, where: str) -> None:
    if probs.shape != (task.num_classes,):
        raise SubmissionError(f"{where}: {probs.size} probabilities, {task.task_id} has {task.num_classes} classes")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1 or abs(probs.sum() - 1) > 1e-4:
        raise SubmissionError(f"{where}: probabilities must be finite, in [0, 1] and sum to 1; got {probs.tolist()}")


def _entry(task: TaskSpec, record: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The JSON entry of one classification/detection/Regression record."""
    entry: dict[str, Any] = {"image_path": record["image_path"], "task_id": task.task_id}
    try:
        if task.task_type == CLASSIFICATION:
            probs = np.asarray(record["probs"], dtype=np.float64).ravel()
            _check_probs(probs, task, where)
            entry["predicted_class"] = int(probs.argmax())
            entry["predicted_probs"] = [float(p) for p in probs]
        elif task.task_type == DETECTION:
            box = np.clip(np.asarray(record["box_normalized"], dtype=np.float64).ravel(), 0.0, 1.0)
            if box.shape != (4,):
                raise SubmissionError(f"{where}: box_normalized needs 4 numbers, got {box.size}")
            entry["bbox_normalized"] = [float(v) for v in box]
            entry["bbox_pixels"] = to_pixels(box, record["orig_size"])
        else:
            points = np.clip(np.asarray(record["points_normalized"], dtype=np.float64).ravel(), 0.0, 1.0)
            if points.shape != (2 * task.num_classes,):
                raise SubmissionError(f"{where}: points_normalized needs {task.num_classes} (x, y) points, "
                                      f"got {points.size} numbers")
            entry["predicted_points_normalized"] = [float(v) for v in points]
            entry["predicted_points_pixels"] = to_pixels(points, record["orig_size"])
    except KeyError as err:
        raise SubmissionError(f"{where}: missing key {err.args[0]!r}") from None
    return entry


def _write_mask(out_dir: Path, task: TaskSpec, record: Mapping[str, Any], where: str) -> Path:
    try:
        mask_path, mask = record["mask_path"], np.asarray(record["mask"])
    except KeyError as err:
        raise SubmissionError(f"{where}: missing key {err.args[0]!r}") from None
    if mask.ndim != 2:
        raise SubmissionError(f"{where}: mask must be a 2-D array of class indices, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() >= task.num_classes):
        raise SubmissionError(f"{where}: mask values must be in [0, {task.num_classes}), "
                              f"got {mask.min()}..{mask.max()}")
    target = submission_path(out_dir, mask_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), mask.astype(np.uint8)):
        raise SubmissionError(f"{where}: could not write {target}")
    return target


def write_submission(out_dir: str | Path, records: Iterable[Mapping[str, Any]],
                     manifest: str | Path | Mapping[str, TaskSpec] | None = None) -> dict[str, int]:
    """Write prediction records as a challenge submission in ``out_dir``; return counts per type.

    Every record has ``task_id`` and ``image_path`` (exactly as in the CSV), plus:

    ==============  ==================================================================
    segmentation    ``mask_path`` (as in the CSV), ``mask`` (H x W class indices at the
                    original image size)
    classification  ``probs`` (C probabilities; ``predicted_class`` is their arg-max)
    detection       ``box_normalized`` ([x_min, y_min, x_max, y_max] in [0, 1]),
                    ``orig_size`` ((height, width) of the original image)
    Regression      ``points_normalized`` (K x 2 or flat 2K, [0, 1]), ``orig_size``
    ==============  ==================================================================

    All three JSON files are always written (an empty list when a type has no
    records). Raises :class:`SubmissionError` on an unknown task, a duplicate record,
    malformed values, or a path that would land outside ``out_dir``.
    """
    tasks = dict(manifest) if isinstance(manifest, Mapping) else load_manifest(manifest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, list[dict[str, Any]]] = {kind: [] for kind in PREDICTION_FILES}
    counts = {kind: 0 for kind in (SEGMENTATION, *PREDICTION_FILES)}
    seen: set[tuple[str, str]] = set()
    for index, record in enumerate(records):
        task_id, image_path = key = _record_key(record, index)
        where = f"prediction record {index} ({task_id}, {image_path})"
        if task_id not in tasks:
            raise SubmissionError(f"{where}: unknown task_id (not in the manifest)")
        if key in seen:
            raise SubmissionError(f"{where}: duplicate prediction for this image")
        seen.add(key)
        task = tasks[task_id]
        if task.task_type == SEGMENTATION:
            _write_mask(out_dir, task, record, where)
        else:
            entries[task.task_type].append(_entry(task, record, where))
        counts[task.task_type] += 1
    for kind, file_name in PREDICTION_FILES.items():
        with (out_dir / file_name).open("w", encoding="utf-8") as fh:
            json.dump(entries[kind], fh, indent=1)
    return counts


def records_from_ground_truth(data_root: str | Path,
                              manifest: str | Path | Mapping[str, TaskSpec] | None = None) -> list[dict[str, Any]]:
    """Prediction records that repeat the ground truth of ``data_root`` (a perfect submission).

    Useful to see the format, and as a check of the whole chain: written with
    :func:`write_submission` and scored, they give DSC 1, HD 0, IoU 1 and MRE 0.
    """
    from PIL import Image

    from fmuia_lib.data.layout import read_root

    tasks = dict(manifest) if isinstance(manifest, Mapping) else load_manifest(manifest)
    frame = read_root(data_root, tasks)
    records: list[dict[str, Any]] = []
    for _, row in frame.iterrows():
        task = tasks[row["task_id"]]
        record: dict[str, Any] = {"task_id": task.task_id, "image_path": row["image_path"]}
        if task.task_type == SEGMENTATION:
            record["mask_path"] = row["mask_path"]
            record["mask"] = cv2.imread(row["mask_file"], cv2.IMREAD_GRAYSCALE)
        elif task.task_type == CLASSIFICATION:
            record["probs"] = np.eye(task.num_classes)[row["target"]]
        else:
            with Image.open(row["image_file"]) as image:
                width, height = image.size
            scale = np.array([width, height], dtype=np.float64)
            coords = np.asarray(row["target"], dtype=np.float64).reshape(-1, 2) / scale
            key = "box_normalized" if task.task_type == DETECTION else "points_normalized"
            record[key] = coords.ravel()
            record["orig_size"] = (height, width)
        records.append(record)
    return records


# --------------------------------------------------------------------------------------
# From a model
# --------------------------------------------------------------------------------------
def _records_for_batch(task: TaskSpec, items: list[dict], rows: list[Mapping[str, Any]],
                       output: dict) -> list[dict[str, Any]]:
    """Model outputs of one batch (model frame) -> prediction records (original frame)."""
    import torch
    import torch.nn.functional as F

    records = []
    for i, (item, row) in enumerate(zip(items, rows)):
        height, width = (int(v) for v in item["orig_size"])
        record: dict[str, Any] = {"task_id": task.task_id, "image_path": item["image_path"]}
        if task.task_type == SEGMENTATION:
            probs = F.interpolate(output["probs"][i:i + 1].float(), size=(height, width),
                                  mode="bilinear", align_corners=False)
            record["mask_path"] = row["mask_path"]
            record["mask"] = probs[0].argmax(dim=0).to("cpu", dtype=torch.uint8).numpy()
        elif task.task_type == CLASSIFICATION:
            probs = output["probs"][i].double().cpu().numpy()
            record["probs"] = probs / probs.sum()  # float32 softmax -> exact float64 sum
        elif task.task_type == DETECTION:
            record["box_normalized"] = output["boxes"][i].double().cpu().numpy()
            record["orig_size"] = (height, width)
        else:
            record["points_normalized"] = output["points"][i].double().cpu().numpy()
            record["orig_size"] = (height, width)
        records.append(record)
    return records


def predict_to_submission(model, data_root: str | Path, out: str | Path, image_size: int | tuple[int, int],
                          batch_size: int = 16, device: str | None = None,
                          progress: bool = True) -> dict[str, int]:
    """Run ``model`` on every row of ``data_root``'s CSVs and write the submission to ``out``.

    Images go through the evaluation transform (``build_transforms(image_size,
    train=False)``: a plain resize), one task at a time in batches of ``batch_size``;
    ``model.predict`` gives model-frame outputs, which are brought back to each image's
    original size. Returns the counts per task type (see :func:`write_submission`).
    """
    import torch
    from tqdm.auto import tqdm

    from fmuia_lib.data.dataset import MultiTaskDataset
    from fmuia_lib.data.transforms import build_transforms

    dataset = MultiTaskDataset(data_root, transforms=build_transforms(image_size, train=False))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device)
    missing = [t.task_id for t in dataset.tasks if t.task_id not in model.task_ids]
    if missing:
        raise SubmissionError(f"the model has no head for task(s) {missing} found in {data_root}")
    records: list[dict[str, Any]] = []
    total = sum(len(dataset.task_indices[t.task_id]) for t in dataset.tasks)
    with tqdm(total=total, desc="predict", unit="img", disable=not progress) as bar:
        for task in dataset.tasks:
            indices = dataset.task_indices[task.task_id]
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                items = [dataset[i] for i in chunk]
                images = torch.stack([item["image"] for item in items]).to(device)
                output = model.predict(images, task.task_id)
                rows = [dataset.frame.iloc[i] for i in chunk]
                records += _records_for_batch(task, items, rows, output)
                bar.update(len(chunk))
    return write_submission(out, records, manifest={t.task_id: t for t in dataset.tasks})


def predict_main(args) -> int:
    """``fmuia predict --checkpoint C --data ROOT --out DIR`` (exit 2 on unusable data or output)."""
    from fmuia_lib.training import load_checkpoint

    from fmuia_lib.data.layout import LayoutError

    model, config, _ = load_checkpoint(args.checkpoint)
    try:
        counts = predict_to_submission(model, args.data, args.out, config.image_size,
                                       batch_size=args.batch_size, device=args.device)
    except (LayoutError, SubmissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    written = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    print(f"wrote a submission to {args.out}: {written or 'nothing (no rows)'}")
    return 0
