"""Scoring a submission against ground truth, and checking a submission's form.

:func:`evaluate_submission` reproduces the challenge's scoring (see :mod:`fmuia_lib.metrics`
for the definitions) and adds what the challenge leaves out:

* **coverage**: per task, how many predictions were expected, found, missing, unusable
  or duplicated, and entries for images that are not in the ground truth. Like the
  challenge, a missing prediction is *not scored* (it does not count as a failure), so
  a score only means something together with its coverage; the report says so loudly;
* HD95 and per-class tables (DSC / HD / HD95 of every segmentation class, F1 of every
  classification class);
* the reason behind an AUC of 0 (e.g. only one class present in the labels).

The leaderboard summary is the mean, over the tasks of each type that have at least one
scored image, of the per-task numbers (the challenge's rule).

:func:`validate_submission` checks a submission folder before it is scored or uploaded:
every expected file and entry present, values well formed, nothing duplicated or unknown.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np
import pandas as pd

from fmuia_lib import metrics
from fmuia_lib.data.dataset import image_size
from fmuia_lib.data.layout import LayoutError, read_root
from fmuia_lib.predict import PREDICTION_FILES, SubmissionError, submission_path
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec, load_manifest

#: Per-task metric columns of each type, in report order.
TASK_METRICS = {
    SEGMENTATION: ("DSC", "HD", "HD95"),
    CLASSIFICATION: ("Accuracy", "AUC", "F1_macro", "F1_weighted", "MCC"),
    DETECTION: ("IoU",),
    REGRESSION: ("MRE",),
}
#: The key of each task type's group in the challenge's results JSON.
CHALLENGE_GROUPS = {SEGMENTATION: "segmentation", CLASSIFICATION: "classification",
                    DETECTION: "detection", REGRESSION: "regression"}
#: The entry key holding the scored value(s) of each JSON file.
SCORED_KEYS = {CLASSIFICATION: "predicted_class", DETECTION: "bbox_pixels",
               REGRESSION: "predicted_points_pixels"}
PROB_TOLERANCE = 1e-4


@dataclass
class EvaluationReport:
    """Everything :func:`evaluate_submission` measured.

    ``per_task``: one row per task (type, number of scored images, metrics);
    ``per_class``: one row per task class; ``summary``: the nine leaderboard columns
    (None for a type with no scored task); ``coverage``: expected / found / missing /
    invalid / duplicate / unknown predictions per task (segmentation masks are looked up by
    path, so they cannot be duplicated or unknown); ``challenge``: the numbers in the
    layout of the challenge's results JSON; ``notes``: warnings worth reading.
    """

    per_task: pd.DataFrame
    per_class: pd.DataFrame
    summary: dict[str, float | None]
    coverage: pd.DataFrame
    challenge: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every expected prediction was found and usable."""
        return bool((self.coverage["found"] == self.coverage["expected"]).all()
                    and (self.coverage["unknown"] == 0).all())

    def to_dict(self) -> dict[str, Any]:
        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]

        return {"summary": {k: _plain(v) for k, v in self.summary.items()},
                "per_task": records(self.per_task), "per_class": records(self.per_class),
                "coverage": records(self.coverage), "challenge": self.challenge,
                "complete": self.complete, "notes": list(self.notes)}

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return path

    def format(self) -> str:
        """The report as text: per-task table, per-class table, summary, coverage, notes."""
        def table(frame: pd.DataFrame) -> str:
            if frame.empty:
                return "  (nothing scored)"
            return frame.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")

        metric_cols = [c for c in self.per_task.columns if c != "AUC_error"]
        summary = "\n".join(f"  {name:<28} {'-' if v is None else f'{v:.4f}'}" for name, v in self.summary.items())
        parts = ["Per task", table(self.per_task[metric_cols]),
                 "", "Per class", table(self.per_class),
                 "", "Leaderboard summary (mean over scored tasks of each type)", summary,
                 "", "Coverage", table(self.coverage)]
        if self.notes:
            parts += ["", "Notes"] + [f"  - {n}" for n in self.notes]
        return "\n".join(parts)


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a table cell (NaN -> None, numpy scalars -> Python)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


# --------------------------------------------------------------------------------------
# Reading a submission
# --------------------------------------------------------------------------------------
def _load_json_list(path: Path) -> list:
    """The list in a prediction JSON file; raises SubmissionError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SubmissionError(f"{path}: cannot read JSON: {err}") from None
    if not isinstance(data, list):
        raise SubmissionError(f"{path}: expected a JSON list of predictions, found {type(data).__name__}")
    return data


@dataclass
class _Index:
    """The entries of one prediction file, keyed by (task_id, image_path); the last one wins."""

    entries: dict[tuple[str, str], dict] = field(default_factory=dict)
    duplicates: dict[tuple[str, str], int] = field(default_factory=dict)
    malformed: int = 0


def _index_entries(items: list) -> _Index:
    index = _Index()
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("task_id"), str) \
                or not isinstance(item.get("image_path"), str):
            index.malformed += 1
            continue
        key = (item["task_id"], item["image_path"])
        if key in index.entries:
            index.duplicates[key] = index.duplicates.get(key, 0) + 1
        index.entries[key] = item
    return index


def _number_list(value: Any, length: int | None = None) -> list[float] | None:
    """``value`` as a list of finite floats (of ``length`` when given), or None."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    return [float(v) for v in value]


def _read_mask(path: Path) -> np.ndarray | None:
    """A mask as the challenge reads it (8-bit grayscale), or None when missing or unreadable."""
    if not path.is_file():
        return None
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


# --------------------------------------------------------------------------------------
# Scoring one task
# --------------------------------------------------------------------------------------
@dataclass
class _TaskResult:
    scores: dict[str, Any]          # per-task metrics (empty when nothing was scored)
    per_class: list[dict[str, Any]]
    found: int
    missing: int
    invalid: int


def _score_segmentation(task: TaskSpec, rows: pd.DataFrame, pred_dir: Path) -> _TaskResult:
    scorer = metrics.SegmentationScorer(task.num_classes, hd95=True)
    missing = invalid = 0
    for mask_path, mask_file in zip(rows["mask_path"], rows["mask_file"]):
        gt = _read_mask(Path(mask_file))
        if gt is None:
            raise ValueError(f"ground-truth mask {mask_file} cannot be read")
        pred_file = submission_path(pred_dir, mask_path)
        if not pred_file.is_file():
            missing += 1
            continue
        pred = _read_mask(pred_file)
        if pred is None:
            invalid += 1
            continue
        scorer.add(pred, gt)
    result = _TaskResult({}, [], len(scorer), missing, invalid)
    if len(scorer):
        scores = scorer.result()
        result.scores = {name: scores[name] for name in TASK_METRICS[SEGMENTATION]}
        result.per_class = [{"class_index": c, "class_name": task.class_names[c],
                             **{name: values[c] for name, values in scores["per_class"].items()}}
                            for c in range(task.num_classes)]
    return result


def _score_entries(task: TaskSpec, rows: pd.DataFrame, index: _Index | None) -> _TaskResult:
    """Classification, detection and Regression: look up each row's entry and score."""
    found_rows: list[tuple[Any, dict]] = []
    missing = invalid = 0
    key_name = SCORED_KEYS[task.task_type]
    for image_path, target in zip(rows["image_path"], rows["target"]):
        entry = None if index is None else index.entries.get((task.task_id, image_path))
        if entry is None:
            missing += 1
            continue
        value = entry.get(key_name)
        if task.task_type == CLASSIFICATION:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            length = 4 if task.task_type == DETECTION else 2 * task.num_classes
            ok = _number_list(value, length) is not None
        if not ok:
            invalid += 1
            continue
        found_rows.append((target, entry))
    result = _TaskResult({}, [], len(found_rows), missing, invalid)
    if not found_rows:
        return result
    targets = [t for t, _ in found_rows]
    entries = [e for _, e in found_rows]
    if task.task_type == CLASSIFICATION:
        probs = _probability_matrix(entries, task.num_classes)
        scores = metrics.classification_scores(targets, probs, task.num_classes,
                                               y_pred=[e["predicted_class"] for e in entries])
        if probs is None and scores["AUC_error"] == "no predicted probabilities":
            lacking = sum(_number_list(e.get("predicted_probs"), task.num_classes) is None for e in entries)
            scores["AUC_error"] = f"{lacking} entries lack a list of {task.num_classes} predicted_probs"
        f1 = scores.pop("F1_per_class")
        scores.pop("num_samples")
        result.scores = scores
        result.per_class = [{"class_index": c, "class_name": task.class_names[c], "F1": f1[c]}
                            for c in range(task.num_classes)]
    elif task.task_type == DETECTION:
        iou = metrics.box_iou([e["bbox_pixels"] for e in entries], targets)
        result.scores = {"IoU": float(np.mean(iou))}
    else:
        pred = np.array([e["predicted_points_pixels"] for e in entries], dtype=np.float64)
        mre = metrics.mean_radial_error(pred.reshape(len(entries), -1, 2), np.array(targets, dtype=np.float64))
        result.scores = {"MRE": float(np.mean(mre))}
    return result


def _probability_matrix(entries: list[dict], num_classes: int) -> np.ndarray | None:
    """``(N, C)`` probabilities when every entry has ``num_classes`` of them, else None."""
    rows = [_number_list(e.get("predicted_probs"), num_classes) for e in entries]
    if any(r is None for r in rows):
        return None
    return np.array(rows, dtype=np.float64)


# --------------------------------------------------------------------------------------
# The whole submission
# --------------------------------------------------------------------------------------
def _tasks_in(frame: pd.DataFrame, manifest: Mapping[str, TaskSpec]) -> list[TaskSpec]:
    present = set(frame["task_id"])
    return [t for t in manifest.values() if t.task_id in present]


def evaluate_submission(data_root: str | Path, pred_dir: str | Path,
                        manifest: str | Path | Mapping[str, TaskSpec] | None = None) -> EvaluationReport:
    """Score the submission in ``pred_dir`` against the ground truth of ``data_root``.

    Raises :class:`~fmuia_lib.data.layout.LayoutError` when the ground truth is unusable
    and :class:`~fmuia_lib.predict.SubmissionError` when a prediction JSON cannot be read. Everything else (missing,
    unusable, duplicated or unknown predictions) is counted in ``coverage``.
    """
    tasks_by_id = dict(manifest) if isinstance(manifest, Mapping) else load_manifest(manifest)
    frame = read_root(data_root, tasks_by_id)
    pred_dir = Path(pred_dir)
    tasks = _tasks_in(frame, tasks_by_id)
    indexes: dict[str, _Index | None] = {}
    notes: list[str] = []
    for kind, file_name in PREDICTION_FILES.items():
        path = pred_dir / file_name
        indexes[kind] = _index_entries(_load_json_list(path)) if path.is_file() else None
        if indexes[kind] is None and any(t.task_type == kind for t in tasks):
            notes.append(f"{file_name} is missing: no {kind} task was scored")

    task_rows, class_rows, coverage_rows = [], [], []
    challenge: dict[str, dict[str, Any]] = {}
    for task in tasks:
        rows = frame[frame["task_id"] == task.task_id]
        if task.task_type == SEGMENTATION:
            result = _score_segmentation(task, rows, pred_dir)
            duplicates = unknown = 0
        else:
            index = indexes[task.task_type]
            result = _score_entries(task, rows, index)
            expected_paths = set(rows["image_path"])
            duplicates = sum(n for (tid, _), n in (index.duplicates.items() if index else []) if tid == task.task_id)
            unknown = sum(1 for (tid, path) in (index.entries if index else {}) if tid == task.task_id
                          and path not in expected_paths)
        auc_error = result.scores.get("AUC_error")
        task_rows.append({"task_id": task.task_id, "task_type": task.task_type, "num_samples": result.found,
                          **{m: result.scores.get(m, np.nan) for metric_list in TASK_METRICS.values()
                             for m in metric_list},
                          "AUC_error": auc_error})
        class_rows += [{"task_id": task.task_id, **row} for row in result.per_class]
        coverage_rows.append({"task_id": task.task_id, "task_type": task.task_type, "expected": len(rows),
                              "found": result.found, "missing": result.missing, "invalid": result.invalid,
                              "duplicates": duplicates, "unknown": unknown})
        if auc_error:
            notes.append(f"{task.task_id}: AUC counted as 0 because {auc_error}")
        _add_challenge_entry(challenge, task, result)

    for kind, index in indexes.items():
        if index is None:
            continue
        known = {t.task_id for t in tasks if t.task_type == kind}
        foreign = sorted({tid for tid, _ in index.entries if tid not in known})
        for tid in foreign:
            count = sum(1 for t, _ in index.entries if t == tid)
            coverage_rows.append({"task_id": tid, "task_type": kind, "expected": 0, "found": 0, "missing": 0,
                                  "invalid": 0, "duplicates": 0, "unknown": count})
            notes.append(f"{PREDICTION_FILES[kind]}: {count} entries for task {tid!r}, which the ground truth "
                         f"has no {kind} rows for")
        if index.malformed:
            notes.append(f"{PREDICTION_FILES[kind]}: {index.malformed} entries without a task_id/image_path "
                         "string were ignored")

    per_task = pd.DataFrame(task_rows)
    coverage = pd.DataFrame(coverage_rows, columns=["task_id", "task_type", "expected", "found", "missing",
                                                    "invalid", "duplicates", "unknown"])
    per_class = pd.DataFrame(class_rows, columns=["task_id", "class_index", "class_name", "DSC", "HD",
                                                  "HD95", "F1"])
    incomplete = coverage[coverage["found"] < coverage["expected"]]
    if len(incomplete):
        notes.insert(0, f"INCOMPLETE: {int(incomplete['expected'].sum() - incomplete['found'].sum())} expected "
                        f"predictions in {len(incomplete)} task(s) were missing or unusable and were not "
                        "scored (the challenge skips them too); see Coverage")
    return EvaluationReport(per_task=per_task, per_class=per_class, summary=leaderboard_summary(per_task),
                            coverage=coverage, challenge=challenge, notes=notes)


def _add_challenge_entry(challenge: dict, task: TaskSpec, result: _TaskResult) -> None:
    """The task's numbers in the layout of the challenge's results JSON.

    One deliberate difference: the challenge's per-class F1 of classification lists the
    F1 of the labels *present* in labels or predictions under ``class_0, class_1, ...``
    in order, so when a class is absent the later entries belong to other classes;
    here ``class_c`` is always the F1 of class ``c``. All other numbers are the same.
    """
    group = challenge.setdefault(CHALLENGE_GROUPS[task.task_type], {})
    if task.task_type == SEGMENTATION:
        entry = {"DSC": result.scores.get("DSC", 0.0), "HD": result.scores.get("HD", 0.0),
                 "num_samples": result.found,
                 "per_class": {f"class_{row['class_index']}": {"DSC": row["DSC"], "HD": row["HD"]}
                               for row in result.per_class}}
    elif task.task_type == CLASSIFICATION:
        entry = {m: result.scores.get(m, 0.0) for m in TASK_METRICS[CLASSIFICATION]}
        entry.update(num_samples=result.found,
                     per_class={f"class_{row['class_index']}": {"F1": row["F1"]} for row in result.per_class})
    else:
        metric = TASK_METRICS[task.task_type][0]
        entry = {metric: result.scores.get(metric, 0.0), "num_samples": result.found}
    group[task.task_id] = entry


def leaderboard_summary(per_task: pd.DataFrame) -> dict[str, float | None]:
    """The nine leaderboard columns: per type, the mean over tasks with scored images (None if none)."""
    summary: dict[str, float | None] = {}
    for column, kind, metric in metrics.LEADERBOARD_COLUMNS:
        scored = per_task[(per_task["task_type"] == kind) & (per_task["num_samples"] > 0)] \
            if len(per_task) else per_task
        summary[column] = float(np.mean(scored[metric].to_numpy(dtype=np.float64))) if len(scored) else None
    return summary


# --------------------------------------------------------------------------------------
# Validating the form of a submission
# --------------------------------------------------------------------------------------
def _mask_file_problems(task: TaskSpec, row: pd.Series, pred_dir: Path) -> list[str]:
    where = f"{row['mask_path']} ({task.task_id}, {row['source']})"
    try:
        pred_file = submission_path(pred_dir, row["mask_path"])
    except SubmissionError as err:
        return [f"{where}: {err}"]
    if not pred_file.is_file():
        return [f"{where}: predicted mask missing: {pred_file}"]
    mask = cv2.imread(str(pred_file), cv2.IMREAD_UNCHANGED)
    if mask is None:
        return [f"{where}: predicted mask {pred_file} cannot be read as an image"]
    if mask.ndim != 2:
        return [f"{where}: predicted mask has {mask.shape[2]} channels; write one channel of class indices"]
    problems = []
    expected = image_size(row["image_file"])
    if mask.shape != expected:
        problems.append(f"{where}: predicted mask is {mask.shape[1]}x{mask.shape[0]}, the image is "
                        f"{expected[1]}x{expected[0]} (width x height)")
    if mask.dtype != np.uint8:
        problems.append(f"{where}: predicted mask is {mask.dtype}; write 8-bit class indices")
    if mask.size and int(mask.max()) >= task.num_classes:
        problems.append(f"{where}: predicted mask has value {int(mask.max())} >= num_classes {task.num_classes}")
    return problems


def _coordinate_problems(pixels: list[float], normalised: list[float] | None, size: tuple[int, int],
                         name: str) -> list[str]:
    """Pixel coordinates inside the image and consistent with their normalised twins."""
    height, width = size
    problems = []
    xs, ys = pixels[0::2], pixels[1::2]
    if min(xs) < 0 or max(xs) > width or min(ys) < 0 or max(ys) > height:
        problems.append(f"{name} {pixels} reaches outside the {width}x{height} image")
    if normalised is not None:
        if min(normalised) < 0 or max(normalised) > 1:
            problems.append(f"normalised coordinates {normalised} are not in [0, 1]")
        else:
            back = [v * (width if i % 2 == 0 else height) for i, v in enumerate(normalised)]
            if max(abs(a - b) for a, b in zip(back, pixels)) > 1.0:
                problems.append(f"{name} {pixels} disagree with the normalised coordinates {normalised} "
                                f"(more than 1 pixel apart at {width}x{height})")
    return problems


def _entry_problems(task: TaskSpec, entry: dict, row: pd.Series) -> list[str]:
    """What is wrong with one classification / detection / Regression entry."""
    if task.task_type == CLASSIFICATION:
        problems = []
        label = entry.get("predicted_class")
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < task.num_classes:
            problems.append(f"predicted_class {label!r} is not an integer in [0, {task.num_classes})")
        probs = entry.get("predicted_probs")
        values = _number_list(probs)
        if values is None:
            problems.append(f"predicted_probs {probs!r} is not a list of finite numbers")
        elif len(values) != task.num_classes:
            problems.append(f"{len(values)} predicted_probs, {task.task_id} has {task.num_classes} classes")
        elif min(values) < 0 or max(values) > 1 or abs(sum(values) - 1) > PROB_TOLERANCE:
            problems.append(f"predicted_probs {values} must lie in [0, 1] and sum to 1 "
                            f"(within {PROB_TOLERANCE}); they sum to {sum(values):.6f}")
        return problems
    if task.task_type == DETECTION:
        pixels_key, norm_key, length, name = "bbox_pixels", "bbox_normalized", 4, "box"
    else:
        pixels_key, norm_key = "predicted_points_pixels", "predicted_points_normalized"
        length, name = 2 * task.num_classes, "points"
    problems = []
    pixels = _number_list(entry.get(pixels_key), length)
    normalised = _number_list(entry.get(norm_key), length)
    for key, values in ((pixels_key, pixels), (norm_key, normalised)):
        if values is None:
            problems.append(f"{key} {entry.get(key)!r} is not a list of {length} finite numbers")
    if pixels is None:
        return problems
    if task.task_type == DETECTION and (pixels[0] >= pixels[2] or pixels[1] >= pixels[3]):
        problems.append(f"box {pixels} is not well formed: needs x_min < x_max and y_min < y_max")
    return problems + _coordinate_problems(pixels, normalised, image_size(row["image_file"]), name)


def validate_submission(pred_dir: str | Path, data_root: str | Path,
                        manifest: str | Path | Mapping[str, TaskSpec] | None = None) -> list[str]:
    """Every problem of the submission in ``pred_dir`` (empty list = valid).

    Checks, against the rows of ``data_root``: each segmentation mask exists, is one
    8-bit channel at the original image size with values < num_classes; each JSON file
    that a task type needs exists and is a list; every expected entry is present exactly
    once, no entry is for an unknown task or image; probabilities are num_classes finite
    numbers in [0, 1] summing to 1 (within 1e-4); boxes have 4 and points 2K finite
    numbers, inside the image, consistent with their normalised form, boxes with
    x_min < x_max and y_min < y_max.
    """
    tasks_by_id = dict(manifest) if isinstance(manifest, Mapping) else load_manifest(manifest)
    frame = read_root(data_root, tasks_by_id)
    pred_dir = Path(pred_dir)
    problems: list[str] = []
    if not pred_dir.is_dir():
        return [f"{pred_dir}: submission folder not found"]
    tasks = _tasks_in(frame, tasks_by_id)
    for task in tasks:
        if task.task_type == SEGMENTATION:
            for _, row in frame[frame["task_id"] == task.task_id].iterrows():
                problems += _mask_file_problems(task, row, pred_dir)

    for kind, file_name in PREDICTION_FILES.items():
        kind_rows = frame[frame["task_name"] == kind]
        path = pred_dir / file_name
        if not path.is_file():
            if len(kind_rows):
                problems.append(f"{file_name}: missing ({len(kind_rows)} {kind} predictions expected)")
            continue
        try:
            items = _load_json_list(path)
        except SubmissionError as err:
            problems.append(str(err))
            continue
        rows_by_key = {(row["task_id"], row["image_path"]): row for _, row in kind_rows.iterrows()}
        seen: dict[tuple[str, str], int] = {}
        for position, item in enumerate(items):
            where = f"{file_name}[{position}]"
            if not isinstance(item, dict):
                problems.append(f"{where}: entry is a {type(item).__name__}, not an object")
                continue
            task_id, image_path = item.get("task_id"), item.get("image_path")
            where = f"{where} ({task_id}, {image_path})"
            key = (task_id, image_path)
            if not isinstance(task_id, str) or not isinstance(image_path, str):
                problems.append(f"{where}: task_id and image_path must be strings")
                continue
            if key in seen:
                problems.append(f"{where}: duplicate entry (first at {file_name}[{seen[key]}])")
                continue
            seen[key] = position
            if key not in rows_by_key:
                why = ("unknown task_id" if task_id not in tasks_by_id or tasks_by_id[task_id].task_type != kind
                       else "image not in the ground truth CSVs")
                problems.append(f"{where}: unknown entry ({why})")
                continue
            problems += [f"{where}: {p}" for p in _entry_problems(tasks_by_id[task_id], item, rows_by_key[key])]
        for key, row in rows_by_key.items():
            if key not in seen:
                problems.append(f"{file_name}: missing entry for {key[0]}, {key[1]} ({row['source']})")
    return problems


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def evaluate_main(args) -> int:
    """``fmuia evaluate --data ROOT --pred DIR [--json OUT]`` (exit 2 when it cannot score)."""
    try:
        report = evaluate_submission(args.data, args.pred)
    except (LayoutError, SubmissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.format())
    if args.json:
        print(f"\nwrote {report.to_json(args.json)}")
    return 0


def validate_submission_main(args) -> int:
    """``fmuia validate-submission DIR --data ROOT``: list every problem (exit 1) or say OK.

    Exit 2 when the ground truth itself cannot be read.
    """
    try:
        problems = validate_submission(args.pred, args.data)
    except LayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.pred}: {len(problems)} problem(s)")
        return 1
    print(f"{args.pred}: OK, a complete and well-formed submission for {args.data}")
    return 0
