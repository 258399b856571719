"""A submission in memory, and the rules that say which of its predictions can be scored.

A challenge submission is a folder ``DIR`` holding

* one PNG per segmentation image at ``DIR/<mask_path without its leading ../>``, pixel
  value = class index, at the original image size;
* ``classification_predictions.json``: ``[{image_path, task_id, predicted_class, predicted_probs}]``;
* ``detection_predictions.json``: ``[{image_path, task_id, bbox_normalized, bbox_pixels}]``;
* ``regression_predictions.json``: ``[{image_path, task_id, predicted_points_normalized,
  predicted_points_pixels}]`` with points flattened as ``[x1, y1, x2, y2, ...]``.

:class:`Submission` holds the same content in memory, read from such a folder
(:meth:`Submission.from_folder`) or made from prediction records without writing
anything (:meth:`Submission.from_records`, through :func:`entry_from_record`, the very
conversion the writer uses). The scorer (``fmuia_lib.challenge.evaluate``) only ever sees a
``Submission``, so files and records are scored by one code path.

The rules for one prediction (:func:`entry_problems`, :func:`mask_problems`) return
*errors* (the scorer cannot use the prediction: it counts as invalid, is reported, and
the submission is not complete) and *warnings* (the prediction is scored, but something
is off, or the challenge's own scorer would read it differently). Only the pixel
coordinates (``bbox_pixels``, ``predicted_points_pixels``) and ``predicted_class`` /
``predicted_probs`` are scored, as in the challenge; the normalised coordinates are
checked for consistency only.

=========================  ==========================================================
error (not scored)         ``predicted_class`` not an integer in ``[0, C)``;
                           ``predicted_probs`` present but not C finite numbers in
                           [0, 1] summing to 1 within ``PROB_SUM_LIMIT``; pixel
                           coordinates not a list of 4 / 2K finite numbers; an
                           inverted box (``x_min > x_max`` or ``y_min > y_max``), or one
                           wholly outside the image; a mask that is missing, unreadable,
                           in colour, or holds a value that is no class index
warning (scored)           probabilities summing to 1 only within ``PROB_SUM_LIMIT``
                           (a multi-class AUC then counts 0, as scikit-learn refuses
                           them); no ``predicted_probs`` (AUC counts 0);
                           ``predicted_class`` not the arg-max of ``predicted_probs``;
                           a box of zero width or height (IoU 0); a box reaching
                           partly, or a point lying, outside the image;
                           normalised coordinates missing, outside [0, 1] or more than
                           a pixel away from the pixel ones; a mask at another
                           resolution (resized with nearest neighbour, as the challenge
                           does); a 16-bit or multi-channel mask (see
                           ``data.images.Mask.challenge_reading``)
=========================  ==========================================================
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import cv2
import numpy as np

from fmuia_lib.data.images import ImageReadError, Mask, mask_value_problem, read_mask
from fmuia_lib.data.layout import default_mask_path
from fmuia_lib.paths import contained_path
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec

#: The prediction file of each non-segmentation task type.
PREDICTION_FILES = {
    CLASSIFICATION: "classification_predictions.json",
    DETECTION: "detection_predictions.json",
    REGRESSION: "regression_predictions.json",
}
#: The entry key the challenge scores, per type.
SCORED_KEYS = {CLASSIFICATION: "predicted_class", DETECTION: "bbox_pixels",
               REGRESSION: "predicted_points_pixels"}
#: The normalised twin of the scored coordinates (checked, not scored).
NORMALISED_KEYS = {DETECTION: "bbox_normalized", REGRESSION: "predicted_points_normalized"}
#: Probabilities whose sum is further than this from 1 are not a distribution (an error).
PROB_SUM_LIMIT = 1e-2
#: Normalised and pixel coordinates may differ by this many pixels (rounding) before a warning.
PIXEL_TOLERANCE = 1.0


class SubmissionError(ValueError):
    """A submission cannot be read or written as asked; the message names the file or record."""


def submission_relpath(csv_path: str) -> str:
    """Where a submission keeps the file a CSV calls ``csv_path``, relative to the submission.

    ``"../Segmentation/Two/x/masks/a.png"`` -> ``"Segmentation/Two/x/masks/a.png"`` (the
    leading ``../`` is dropped, as the challenge's scorer does). Raises
    :class:`SubmissionError` when the result would leave the submission folder.
    """
    text = str(csv_path).replace("\\", "/")
    relative = contained_path(text[3:] if text.startswith("../") else text)
    if relative is None:
        raise SubmissionError(f"refusing the path {csv_path!r}: it would land outside the submission folder")
    return relative


def submission_path(out_dir: str | Path, csv_path: str) -> Path:
    """``out_dir / submission_relpath(csv_path)`` (see :func:`submission_relpath`)."""
    return Path(out_dir) / submission_relpath(csv_path)


def mask_output_path(image_path: str, mask_path: str | None) -> str:
    """The CSV-style path of the mask a submission holds for one segmentation row.

    The CSV's ``mask_path`` when it has one (how the challenge's scorer finds the
    prediction). A CSV without it (a test set's four columns) gets the name the
    challenge's own Docker inference code writes: ``image_path`` with ``img`` replaced
    by ``mask`` and ``IMG`` by ``MASK``. Either way the file lands at
    :func:`submission_relpath` of this path, inside the submission folder.
    """
    return mask_path or default_mask_path(image_path)


# --------------------------------------------------------------------------------------
# Prediction records -> entries (what the writer writes, and what is scored in memory)
# --------------------------------------------------------------------------------------
def to_pixels(normalised: Any, orig_size: Any) -> np.ndarray:
    """Normalised ``[x, y, ...]`` in [0, 1] -> original pixels: x times the width, y times the
    height. The one conversion from the model frame back to the image on disk.

    ``normalised``: flat ``(2K,)`` or ``(N, 2K)`` / ``(N, K, 2)`` (x, y alternating on the
    last axis); ``orig_size``: ``(height, width)`` of one image, or ``(N, 2)`` of N images.
    Values are clipped to [0, 1] first (a coordinate outside the image cannot be right).
    The evaluation transform resizes the whole image, so this holds for any model size.
    """
    values = np.clip(np.asarray(normalised, dtype=np.float64), 0.0, 1.0)
    sizes = np.asarray(orig_size, dtype=np.float64)
    scale = sizes[..., ::-1]  # (width, height)
    if values.ndim == 1:
        return (values.reshape(-1, 2) * scale).ravel()
    if values.ndim == 2:  # (N, 2K)
        return (values.reshape(len(values), -1, 2) * scale.reshape(-1, 1, 2)).reshape(values.shape)
    return values * scale.reshape(-1, 1, 2)


def _check_probs(probs: np.ndarray, task: TaskSpec, where: str) -> None:
    if probs.shape != (task.num_classes,):
        raise SubmissionError(f"{where}: {probs.size} probabilities, {task.task_id} has {task.num_classes} classes")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1 or abs(probs.sum() - 1) > 1e-4:
        raise SubmissionError(f"{where}: probabilities must be finite, in [0, 1] and sum to 1; got {probs.tolist()}")


def entry_from_record(task: TaskSpec, record: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The JSON entry of one classification / detection / Regression prediction record
    (see ``predict.write_submission`` for the record keys)."""
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
            entry["bbox_pixels"] = [float(v) for v in to_pixels(box, record["orig_size"])]
        else:
            points = np.clip(np.asarray(record["points_normalized"], dtype=np.float64).ravel(), 0.0, 1.0)
            if points.shape != (2 * task.num_classes,):
                raise SubmissionError(f"{where}: points_normalized needs {task.num_classes} (x, y) points, "
                                      f"got {points.size} numbers")
            entry["predicted_points_normalized"] = [float(v) for v in points]
            entry["predicted_points_pixels"] = [float(v) for v in to_pixels(points, record["orig_size"])]
    except KeyError as err:
        raise SubmissionError(f"{where}: missing key {err.args[0]!r}") from None
    return entry


def mask_from_record(task: TaskSpec, record: Mapping[str, Any], where: str) -> tuple[str, np.ndarray]:
    """``(submission-relative path, uint8 H x W mask)`` of one segmentation record."""
    try:
        mask_path, mask = record["mask_path"], np.asarray(record["mask"])
    except KeyError as err:
        raise SubmissionError(f"{where}: missing key {err.args[0]!r}") from None
    if mask.ndim != 2:
        raise SubmissionError(f"{where}: mask must be a 2-D array of class indices, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() >= task.num_classes):
        raise SubmissionError(f"{where}: mask values must be in [0, {task.num_classes}), "
                              f"got {mask.min()}..{mask.max()}")
    return submission_relpath(mask_path), mask.astype(np.uint8)


def encode_mask(mask: np.ndarray) -> bytes:
    """A uint8 class-index mask as the PNG bytes the writer saves."""
    ok, data = cv2.imencode(".png", mask)
    if not ok:
        raise SubmissionError(f"cannot encode a {mask.shape} mask as PNG")
    return data.tobytes()


def decode_mask(data: bytes) -> Mask:
    """What :func:`~fmuia_lib.data.images.read_mask` reads from those bytes."""
    return Mask(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), 8, 1)


def record_key(record: Mapping[str, Any], index: int) -> tuple[str, str]:
    try:
        return str(record["task_id"]), str(record["image_path"])
    except KeyError as err:
        raise SubmissionError(f"prediction record {index}: missing key {err.args[0]!r}") from None


def iter_records(records: Iterable[Mapping[str, Any]], tasks: Mapping[str, TaskSpec]):
    """``(index, task, record, where)`` for each record, refusing unknown tasks and duplicates."""
    seen: set[tuple[str, str]] = set()
    for index, record in enumerate(records):
        key = record_key(record, index)
        where = f"prediction record {index} ({key[0]}, {key[1]})"
        if key[0] not in tasks:
            raise SubmissionError(f"{where}: unknown task_id {key[0]!r}")
        if key in seen:
            raise SubmissionError(f"{where}: duplicate prediction for this task and image")
        seen.add(key)
        yield index, tasks[key[0]], record, where


# --------------------------------------------------------------------------------------
# The submission in memory
# --------------------------------------------------------------------------------------
@dataclass
class EntryIndex:
    """The entries of one prediction file, keyed by (task_id, image_path); the last one wins,
    as in the challenge. ``position`` keeps each key's index in the file (for messages)."""

    entries: dict[tuple[str, str], dict] = field(default_factory=dict)
    position: dict[tuple[str, str], int] = field(default_factory=dict)
    duplicates: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (position, why)

    @classmethod
    def of(cls, items: list) -> "EntryIndex":
        index = cls()
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                index.malformed.append((position, f"entry is a {type(item).__name__}, not an object"))
                continue
            if not isinstance(item.get("task_id"), str) or not isinstance(item.get("image_path"), str):
                index.malformed.append((position, "task_id and image_path must be strings"))
                continue
            key = (item["task_id"], item["image_path"])
            if key in index.entries:
                index.duplicates.setdefault(key, [index.position[key]]).append(position)
            index.entries[key] = item
            index.position[key] = position
        return index


#: Integers in a prediction file longer than this many digits are read as the float they
#: round to (inf beyond ~308 digits), which the rules then refuse as not finite: Python's
#: ``int()`` refuses 4,300+ digits with a ValueError and ``float()`` of 309+ digits overflows.
LONG_INTEGER = 30


def _json_int(text: str) -> int | float:
    return int(text) if len(text) <= LONG_INTEGER else float(text)


def load_json_list(path: Path) -> list:
    """The list in a prediction JSON file; raises :class:`SubmissionError` naming the file."""
    from fmuia_lib.paths import not_regular_problem

    problem = not_regular_problem(path)
    if problem:
        raise SubmissionError(f"{path} {problem}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_int=_json_int)
    except (OSError, UnicodeDecodeError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        raise SubmissionError(f"{path}: cannot read JSON: {err}") from None
    except RecursionError:
        raise SubmissionError(f"{path}: cannot read JSON: lists or objects nested too deeply") from None
    if not isinstance(data, list):
        raise SubmissionError(f"{path}: expected a JSON list of predictions, found {type(data).__name__}")
    return data


def submission_folder(pred_dir: str | Path) -> Path:
    """``pred_dir`` as a Path; :class:`SubmissionError` when it is not an existing folder."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        what = "is a file, not a folder" if pred_dir.exists() else "not found"
        raise SubmissionError(f"submission folder {pred_dir} {what}")
    return pred_dir


class Submission:
    """The predictions of a submission: JSON entries per task type and masks by path.

    ``entries[kind]`` is an :class:`EntryIndex`, or None when the file is absent;
    :meth:`mask` reads a mask (None when there is none).
    """

    def __init__(self, entries: dict[str, EntryIndex | None], masks: Mapping[str, bytes] | None = None,
                 folder: Path | None = None, label: str = "the submission") -> None:
        self.entries, self._masks, self.folder, self.label = entries, dict(masks or {}), folder, label

    @classmethod
    def from_folder(cls, pred_dir: str | Path) -> "Submission":
        """Read the JSON files of a submission folder (masks are read when asked for).

        Raises :class:`SubmissionError` when the folder does not exist or a JSON file
        cannot be read as a list.
        """
        pred_dir = submission_folder(pred_dir)
        entries: dict[str, EntryIndex | None] = {}
        for kind, name in PREDICTION_FILES.items():
            path = pred_dir / name
            entries[kind] = EntryIndex.of(load_json_list(path)) if path.exists() else None
        return cls(entries, folder=pred_dir, label=str(pred_dir))

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], tasks: Mapping[str, TaskSpec]) -> "Submission":
        """What :func:`fmuia_lib.challenge.predict.write_submission` would write for ``records``, in memory."""
        items: dict[str, list] = {kind: [] for kind in PREDICTION_FILES}
        masks: dict[str, bytes] = {}
        for _, task, record, where in iter_records(records, tasks):
            if task.task_type == SEGMENTATION:
                relative, mask = mask_from_record(task, record, where)
                masks[relative] = encode_mask(mask)  # the file's bytes: small, and read back alike
            else:
                items[task.task_type].append(entry_from_record(task, record, where))
        return cls({kind: EntryIndex.of(found) for kind, found in items.items()}, masks,
                   label="the prediction records")

    def mask_file(self, mask_path: str) -> Path | None:
        """The file a folder submission holds for ``mask_path`` (None for records)."""
        return None if self.folder is None else self.folder / submission_relpath(mask_path)

    def mask(self, mask_path: str) -> Mask | None:
        """The predicted mask for a CSV ``mask_path``; None when the submission has none.

        Raises :class:`SubmissionError` for a path outside the submission and
        :class:`~fmuia_lib.data.images.ImageReadError` for an unreadable file.
        """
        relative = submission_relpath(mask_path)
        if self.folder is None:
            data = self._masks.get(relative)
            return None if data is None else decode_mask(data)
        path = self.folder / relative
        if not path.exists():
            return None
        if contained_path(relative, root=self.folder) is None:
            raise ImageReadError(path, f"the mask is a symbolic link to {os.path.realpath(path)}, outside the "
                                       "submission folder; masks are read only inside it")
        return read_mask(path)


# --------------------------------------------------------------------------------------
# Rules for one prediction
# --------------------------------------------------------------------------------------
def number_list(value: Any, length: int | None = None) -> list[float] | None:
    """``value`` as a list of finite floats (of ``length`` when given), or None."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    return [float(v) for v in value]


def _probability_problems(task: TaskSpec, entry: dict) -> tuple[list[str], list[str]]:
    errors, warnings = [], []
    label = entry.get("predicted_class")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < task.num_classes:
        errors.append(f"predicted_class {label!r} is not an integer in [0, {task.num_classes})")
    if "predicted_probs" not in entry or entry["predicted_probs"] is None:
        warnings.append("no predicted_probs: the task's AUC counts 0")
        return errors, warnings
    probs = entry["predicted_probs"]
    values = number_list(probs)
    if values is None:
        errors.append(f"predicted_probs {probs!r} is not a list of finite numbers")
    elif len(values) != task.num_classes:
        errors.append(f"{len(values)} predicted_probs, {task.task_id} has {task.num_classes} classes")
    elif min(values) < 0 or max(values) > 1 or abs(sum(values) - 1) > PROB_SUM_LIMIT:
        errors.append(f"predicted_probs {values} are not a distribution: they must lie in [0, 1] and sum to 1 "
                      f"(within {PROB_SUM_LIMIT}); they sum to {sum(values):.6f}")
    else:
        total = math.fsum(values)
        if not np.isclose(total, 1.0, rtol=1e-5, atol=1e-8):
            note = " (the challenge then counts this task's AUC as 0)" if task.num_classes > 2 else ""
            warnings.append(f"predicted_probs sum to {total:.6f}, not 1{note}")
        if not errors and values[label] < max(values):
            warnings.append(f"predicted_class {label} is not the arg-max of predicted_probs "
                            f"(class {int(np.argmax(values))}); accuracy, F1 and MCC score predicted_class, "
                            "AUC the probabilities")
    return errors, warnings


def _coordinate_warnings(task: TaskSpec, entry: dict, pixels: list[float], size: tuple[int, int] | None
                         ) -> list[str]:
    """Outside the image, and disagreement with the normalised twin (all warnings)."""
    warnings = []
    name = "box" if task.task_type == DETECTION else "points"
    key = NORMALISED_KEYS[task.task_type]
    if size is not None:
        height, width = size
        xs, ys = pixels[0::2], pixels[1::2]
        if min(xs) < 0 or max(xs) > width or min(ys) < 0 or max(ys) > height:
            warnings.append(f"{name} {pixels} reaches outside the {width}x{height} image")
    normalised = number_list(entry.get(key), len(pixels))
    if normalised is None:
        warnings.append(f"{key} {entry.get(key)!r} is not a list of {len(pixels)} finite numbers "
                        "(not scored, but expected)")
    elif min(normalised) < 0 or max(normalised) > 1:
        warnings.append(f"normalised coordinates {normalised} are not in [0, 1]")
    elif size is not None:
        height, width = size
        back = [v * (width if i % 2 == 0 else height) for i, v in enumerate(normalised)]
        if max(abs(a - b) for a, b in zip(back, pixels)) > PIXEL_TOLERANCE:
            warnings.append(f"{name} {pixels} disagree with the normalised coordinates {normalised} "
                            f"(more than {PIXEL_TOLERANCE:g} pixel apart at {width}x{height})")
    return warnings


def entry_problems(task: TaskSpec, entry: dict, size: tuple[int, int] | None) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` of one classification / detection / Regression entry.

    ``size`` is the image's ``(height, width)`` (None skips the checks that need it).
    See the module docstring for the rules.
    """
    if task.task_type == CLASSIFICATION:
        return _probability_problems(task, entry)
    length = 4 if task.task_type == DETECTION else 2 * task.num_classes
    key = SCORED_KEYS[task.task_type]
    pixels = number_list(entry.get(key), length)
    if pixels is None:
        return [f"{key} {entry.get(key)!r} is not a list of {length} finite numbers"], []
    warnings = []
    if task.task_type == DETECTION:
        if pixels[0] > pixels[2] or pixels[1] > pixels[3]:
            return [f"box {pixels} is not well formed (inverted): needs x_min <= x_max and y_min <= y_max"], []
        if size is not None:
            height, width = size
            if pixels[2] < 0 or pixels[3] < 0 or pixels[0] > width or pixels[1] > height:
                return [f"box {pixels} lies wholly outside the {width}x{height} image"], []
        if pixels[0] == pixels[2] or pixels[1] == pixels[3]:
            warnings.append(f"box {pixels} has no area: it scores IoU 0")
    return [], warnings + _coordinate_warnings(task, entry, pixels, size)


def mask_problems(task: TaskSpec, mask: Mask, size: tuple[int, int]) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` of a predicted mask that was read; ``size`` = ground-truth
    ``(height, width)``. Missing and unreadable files are errors the caller reports."""
    warnings = []
    problem = mask_value_problem(mask.values, task.num_classes)
    if problem:
        # The challenge's scorer compares pixels with each class index, so it scores such a
        # mask: pixels of other values belong to no class. A warning, not an error.
        warnings.append(f"predicted {problem}: scored as the challenge does, its pixels of values >= "
                        f"{task.num_classes} belong to no class (a class index is 0..{task.num_classes - 1}; "
                        "a mask saved as 0/255 needs its 255 written as 1)")
    if mask.shape != tuple(size):
        warnings.append(f"predicted mask is {mask.shape[1]}x{mask.shape[0]}, the image is {size[1]}x{size[0]} "
                        "(width x height): it is resized with nearest neighbour before scoring, as the "
                        "challenge does")
    reading = mask.challenge_reading()
    if reading:
        warnings.append(f"predicted mask: {reading}")
    return [], warnings


def read_mask_problems(task: TaskSpec, submission: Submission, mask_path: str, size: tuple[int, int] | None
                       ) -> tuple[Mask | None, list[str], list[str]]:
    """Read one predicted mask and judge it: ``(mask or None, errors, warnings)``.

    A missing mask gives ``(None, [], [])`` (the caller counts it as missing); an
    unreadable one an error. ``size`` None skips the resolution check.
    """
    try:
        mask = submission.mask(mask_path)
    except ImageReadError as err:
        return None, [f"predicted mask {err.path}: {err.reason}"], []
    if mask is None:
        return None, [], []
    errors, warnings = mask_problems(task, mask, size if size is not None else mask.shape)
    return (None if errors else mask), errors, warnings
