"""Scoring a submission against ground truth, and checking a submission's form.

One scorer, :func:`score`, takes the ground truth of a data root (:class:`GroundTruth`)
and a :class:`~fmuia_lib.challenge.submission.Submission` (read from a folder, or made in memory
from prediction records). ``fmuia evaluate`` (:func:`evaluate_submission`), training-time
validation (``training.validation.validate_whole_set``, through :func:`evaluate_records`) and the
error analysis all go through it, so a number means the same everywhere. It reproduces
the challenge's scoring (see :mod:`fmuia_lib.challenge.metrics` for the definitions) and adds what
the challenge leaves out:

* **coverage**: per task, how many predictions were expected, found, missing, unusable
  or duplicated, and entries for images that are not in the ground truth. Like the
  challenge, a missing prediction is *not scored* (it does not count as a failure), so
  a score only means something together with its coverage; the report says so loudly.
  A prediction the scorer cannot use (``submission.entry_problems``: a class out of
  range, probabilities that are not a distribution, an inverted box or one wholly
  outside the image) is *invalid*: not scored, listed in ``invalid`` with its reason,
  and the submission is not complete. A mask pixel whose value is no class is scored as
  the challenge scores it (it belongs to no class), with a warning;
* HD95 and NMRE, and per-class tables (DSC / HD / HD95 of every segmentation class, F1
  of every classification class);
* the reason behind an AUC of 0 (e.g. only one class present in the labels).

The leaderboard summary is the mean, over the tasks of each type that have at least one
scored image, of the per-task numbers (the challenge's rule).

:func:`check_submission` (``fmuia validate-submission``) checks a submission folder
before it is scored or uploaded: errors (what the scorer cannot use, missing or
duplicated predictions, paths outside the submission) apart from warnings (what is
scored, but differently than it may look, or differently by the challenge's scorer).

This module imports neither torch nor pandas (tables are made when asked for), so that
``fmuia evaluate`` starts at once; ``benchmarks/bench_metrics.py`` times it and writes
``results/bench_metrics.md``.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from fmuia_lib.challenge import metrics
from fmuia_lib.data.images import ImageReadError, Mask, image_size, mask_fit_problem, read_mask
from fmuia_lib.data.layout import CSV_DIR, LayoutError, Problem, read_rows, resolve_tasks
from fmuia_lib.challenge.submission import (PREDICTION_FILES, SCORED_KEYS, EntryIndex, Submission, SubmissionError,
                                  entry_problems, load_json_list, mask_output_path, number_list,
                                  read_mask_problems, submission_folder, submission_relpath)
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TASK_TYPES, TaskSpec

if TYPE_CHECKING:
    import pandas as pd

#: Per-task metric columns of each type, in report order (``metrics.reported_metrics``).
TASK_METRICS = {kind: metrics.reported_metrics(kind) for kind in TASK_TYPES}
#: The key of each task type's group in the challenge's results JSON.
CHALLENGE_GROUPS = {SEGMENTATION: "segmentation", CLASSIFICATION: "classification",
                    DETECTION: "detection", REGRESSION: "regression"}
#: Findings printed in a report before "... and N more".
SHOWN_FINDINGS = 20


TASK_COLUMNS = ["task_id", "task_type", "num_samples",
                *[m for kind in TASK_TYPES for m in TASK_METRICS[kind]], "AUC_error"]
CLASS_COLUMNS = ["task_id", "class_index", "class_name", "DSC", "HD", "HD95", "F1"]
COVERAGE_COLUMNS = ["task_id", "task_type", "expected", "found", "missing", "invalid", "duplicates", "unknown"]


class EvaluationReport:
    """Everything :func:`score` measured.

    ``per_task``: one row per task (type, number of scored images, metrics);
    ``per_class``: one row per task class; ``summary``: the nine leaderboard columns
    (None for a type with no scored task); ``coverage``: expected / found / missing /
    invalid / duplicate / unknown predictions per task (segmentation masks are looked up by
    path, so they cannot be duplicated or unknown); ``challenge``: the numbers in the
    layout of the challenge's results JSON; ``invalid``: every prediction that could not
    be scored, with its reason; ``warnings``: every scored prediction with something off
    (``fmuia validate-submission`` explains them); ``notes``: what is worth reading first.

    The three tables are pandas DataFrames, made when first asked for (scoring itself
    does not import pandas); ``task_rows``, ``class_rows`` and ``coverage_rows`` hold the
    same rows as dicts.
    """

    def __init__(self, task_rows: list[dict], class_rows: list[dict], coverage_rows: list[dict],
                 challenge: dict[str, dict[str, Any]], notes: list[str] | None = None,
                 invalid: list[str] | None = None, warnings: list[str] | None = None) -> None:
        self.task_rows, self.class_rows, self.coverage_rows = task_rows, class_rows, coverage_rows
        self.challenge = challenge
        self.notes, self.invalid, self.warnings = list(notes or []), list(invalid or []), list(warnings or [])
        self.summary: dict[str, float | None] = leaderboard_summary(task_rows)

    @cached_property
    def per_task(self) -> "pd.DataFrame":
        return _frame(self.task_rows, TASK_COLUMNS)

    @cached_property
    def per_class(self) -> "pd.DataFrame":
        return _frame(self.class_rows, CLASS_COLUMNS)

    @cached_property
    def coverage(self) -> "pd.DataFrame":
        return _frame(self.coverage_rows, COVERAGE_COLUMNS)

    @property
    def complete(self) -> bool:
        """True when every expected prediction was found once and usable, and nothing unknown,
        duplicated or malformed was given."""
        return (all(r["found"] == r["expected"] and r["unknown"] == 0 and r["duplicates"] == 0
                    for r in self.coverage_rows) and not self.invalid)

    def task_results(self) -> dict[str, dict[str, Any]]:
        """Per task: its metrics (``TASK_METRICS``), ``num_samples`` and the per-class lists
        (segmentation ``per_class = {DSC, HD, HD95: [C values]}``, classification
        ``AUC_error`` and ``F1_per_class``), for tasks with at least one scored image."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.task_rows:
            if not row["num_samples"]:
                continue
            kind = row["task_type"]
            scores: dict[str, Any] = {m: float(row[m]) for m in TASK_METRICS[kind]}
            scores["num_samples"] = int(row["num_samples"])
            classes = sorted((r for r in self.class_rows if r["task_id"] == row["task_id"]),
                             key=lambda r: r["class_index"])
            if kind == SEGMENTATION:
                scores["per_class"] = {m: [float(r[m]) for r in classes] for m in ("DSC", "HD", "HD95")}
            elif kind == CLASSIFICATION:
                scores["AUC_error"] = row["AUC_error"]
                scores["F1_per_class"] = [float(r["F1"]) for r in classes]
            out[row["task_id"]] = scores
        return out

    def to_dict(self) -> dict[str, Any]:
        def records(rows: list[dict], columns: list[str]) -> list[dict[str, Any]]:
            return [{c: _plain(row.get(c)) for c in columns} for row in rows]

        return {"summary": {k: _plain(v) for k, v in self.summary.items()},
                "per_task": records(self.task_rows, TASK_COLUMNS),
                "per_class": records(self.class_rows, CLASS_COLUMNS),
                "coverage": records(self.coverage_rows, COVERAGE_COLUMNS), "challenge": self.challenge,
                "complete": self.complete, "notes": list(self.notes), "invalid": list(self.invalid),
                "warnings": list(self.warnings)}

    def to_json(self, path: str | Path) -> Path:
        from fmuia_lib.paths import atomic_write

        return atomic_write(path, json.dumps(self.to_dict(), indent=2))  # whole or not at all

    def format(self) -> str:
        """The report as text: per-task table, per-class table, summary, coverage, notes,
        and the first unusable predictions."""
        summary = "\n".join(f"  {name:<28} {'-' if v is None else f'{v:.4f}'}" for name, v in self.summary.items())
        parts = ["Per task", _table(self.task_rows, TASK_COLUMNS[:-1]),
                 "", "Per class", _table(self.class_rows, CLASS_COLUMNS),
                 "", "Leaderboard summary (mean over scored tasks of each type)", summary,
                 "", "Coverage", _table(self.coverage_rows, COVERAGE_COLUMNS)]
        if self.notes:
            parts += ["", "Notes"] + [f"  - {n}" for n in self.notes]
        if self.invalid:
            parts += ["", f"Unusable predictions, not scored ({len(self.invalid)})"]
            parts += [f"  - {p}" for p in self.invalid[:SHOWN_FINDINGS]]
            if len(self.invalid) > SHOWN_FINDINGS:
                parts.append(f"  ... and {len(self.invalid) - SHOWN_FINDINGS} more (all of them in --json)")
        return "\n".join(parts)


def _frame(rows: list[dict], columns: list[str]) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}"
    return str(value)


def _table(rows: list[dict], columns: list[str]) -> str:
    """Rows as a right-aligned text table (4 decimals, ``-`` for no value)."""
    if not rows:
        return "  (nothing scored)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    return "\n".join(" ".join(v.rjust(w) for v, w in zip(line, widths)) for line in [columns, *cells])


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a table cell (NaN -> None, numpy scalars -> Python)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


# --------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------
class GroundTruth:
    """The labelled rows of a data root, with what scoring needs read from disk once.

    Labels, boxes and points come from the CSVs (:func:`~fmuia_lib.data.layout.read_root`);
    image sizes are read from image headers when first needed and kept (cheap); masks
    are read at their original size each time :meth:`mask` is called (the scorer calls it
    once per row and scoring run), with :func:`~fmuia_lib.data.images.read_mask`'s rules.
    A file that cannot be used raises :class:`~fmuia_lib.data.layout.LayoutError`
    naming the CSV line.
    """

    def __init__(self, rows: "pd.DataFrame | list[dict]",
                 manifest: Mapping[str, TaskSpec] | str | Path | None = None) -> None:
        self.specs = resolve_tasks(dict(manifest) if isinstance(manifest, Mapping) else manifest)
        records = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
        present = {row["task_id"] for row in records}
        self.tasks: list[TaskSpec] = [t for t in self.specs.values() if t.task_id in present]
        self.rows: dict[str, list[dict]] = {t.task_id: [] for t in self.tasks}
        for row in records:
            self.rows[row["task_id"]].append(row)
        self._sizes: dict[str, tuple[int, int]] = {}

    @classmethod
    def from_root(cls, data_root: str | Path,
                  manifest: Mapping[str, TaskSpec] | str | Path | None = None) -> "GroundTruth":
        specs = resolve_tasks(dict(manifest) if isinstance(manifest, Mapping) else manifest)
        return cls(read_rows(data_root, specs)[1], specs)

    @staticmethod
    def _error(row: Mapping[str, Any], path: str, message: str) -> LayoutError:
        return LayoutError(str(Problem(f"{CSV_DIR}/{row['csv_file']}", row["csv_line"], path, message)))

    def size(self, row: Mapping[str, Any]) -> tuple[int, int]:
        """``(height, width)`` of the row's image, from its header (read once)."""
        key = row["image_file"]
        if key not in self._sizes:
            try:
                self._sizes[key] = image_size(key)
            except ImageReadError as err:
                raise self._error(row, row["image_path"], f"ground-truth image: {err.reason}") from None
        return self._sizes[key]

    def mask(self, row: Mapping[str, Any], task: TaskSpec) -> Mask:
        """The row's ground-truth mask at its original size (checked: class indices only)."""
        try:
            mask = read_mask(row["mask_file"])
        except ImageReadError as err:
            raise self._error(row, row["mask_path"], f"ground-truth {err.reason}") from None
        problem = mask_fit_problem(mask.values, self.size(row), task.num_classes)
        if problem:  # e.g. "mask is 100x80 but its image is 415x309": the ground truth's fault, not the prediction's
            raise self._error(row, row["mask_path"], f"ground-truth {problem}")
        return mask


# --------------------------------------------------------------------------------------
# Scoring one task
# --------------------------------------------------------------------------------------
@dataclass
class _TaskResult:
    scores: dict[str, Any]          # per-task metrics (empty when nothing was scored)
    per_class: list[dict[str, Any]]
    found: int = 0
    missing: int = 0
    invalid: int = 0
    duplicates: int = 0
    unknown: int = 0


def _score_segmentation(task: TaskSpec, truth: GroundTruth, submission: Submission,
                        invalid: list[str], warnings: list[str]) -> _TaskResult:
    scorer = metrics.SegmentationScorer(task.num_classes, hd95=True)
    result = _TaskResult({}, [])
    for row in truth.rows[task.task_id]:
        gt = truth.mask(row, task)
        where = f"{row['mask_path']} ({task.task_id}, {row['source']})"
        try:
            pred, errors, notes = read_mask_problems(task, submission, row["mask_path"], gt.shape)
        except SubmissionError as err:
            pred, errors, notes = None, [str(err)], []
        invalid += [f"{where}: {e}" for e in errors]
        warnings += [f"{where}: {w}" for w in notes]
        if errors:
            result.invalid += 1
        elif pred is None:
            result.missing += 1
        else:
            scorer.add(pred.values, gt.values)
    result.found = len(scorer)
    if len(scorer):
        scores = scorer.result()
        result.scores = {name: scores[name] for name in TASK_METRICS[SEGMENTATION]}
        result.per_class = [{"class_index": c, "class_name": task.class_names[c],
                             **{name: values[c] for name, values in scores["per_class"].items()}}
                            for c in range(task.num_classes)]
    return result


def _score_entries(task: TaskSpec, truth: GroundTruth, index: EntryIndex | None,
                   invalid: list[str], warnings: list[str]) -> _TaskResult:
    """Classification, detection and Regression: look up each row's entry, judge it, score."""
    file_name = PREDICTION_FILES[task.task_type]
    rows = truth.rows[task.task_id]
    result = _TaskResult({}, [])
    found: list[tuple[dict, dict]] = []
    for row in rows:
        key = (task.task_id, row["image_path"])
        entry = None if index is None else index.entries.get(key)
        if entry is None:
            result.missing += 1
            continue
        size = truth.size(row) if task.task_type == DETECTION else None
        errors, notes = entry_problems(task, entry, size)
        where = f"{file_name}[{index.position[key]}] ({task.task_id}, {row['image_path']})"
        invalid += [f"{where}: {e}" for e in errors]
        warnings += [f"{where}: {w}" for w in notes]
        if errors:
            result.invalid += 1
        else:
            found.append((row, entry))
    if index is not None:
        expected = {row["image_path"] for row in rows}
        result.duplicates = sum(len(p) - 1 for (tid, _), p in index.duplicates.items() if tid == task.task_id)
        result.unknown = sum(1 for tid, path in index.entries if tid == task.task_id and path not in expected)
    result.found = len(found)
    if not found:
        return result
    targets = [row["target"] for row, _ in found]
    entries = [entry for _, entry in found]
    key = SCORED_KEYS[task.task_type]
    if task.task_type == CLASSIFICATION:
        probs = [number_list(e.get("predicted_probs"), task.num_classes) for e in entries]
        lacking = sum(p is None for p in probs)
        scores = metrics.classification_scores(targets, None if lacking else np.array(probs, dtype=np.float64),
                                               task.num_classes, y_pred=[e[key] for e in entries])
        if lacking:
            scores["AUC_error"] = f"{lacking} entries lack a list of {task.num_classes} predicted_probs"
        f1 = scores.pop("F1_per_class")
        scores.pop("num_samples")
        result.scores = scores
        result.per_class = [{"class_index": c, "class_name": task.class_names[c], "F1": f1[c]}
                            for c in range(task.num_classes)]
    elif task.task_type == DETECTION:
        iou = metrics.box_iou([e[key] for e in entries], targets)
        result.scores = {"IoU": float(np.mean(iou))}
    else:
        pred = np.array([e[key] for e in entries], dtype=np.float64).reshape(len(entries), -1, 2)
        sizes = [truth.size(row) for row, _ in found]
        scores = metrics.task_scores(task, pred, np.array(targets, dtype=np.float64), image_sizes=sizes)
        result.scores = {"MRE": scores["MRE"], "NMRE": scores["NMRE"]}
    return result


# --------------------------------------------------------------------------------------
# The whole submission
# --------------------------------------------------------------------------------------
def score(truth: GroundTruth, submission: Submission) -> EvaluationReport:
    """Score ``submission`` against ``truth``: the one scorer (see the module docstring).

    Raises :class:`~fmuia_lib.data.layout.LayoutError` when the ground truth cannot be
    used. Everything wrong with the predictions is counted in ``coverage`` and listed.
    """
    notes: list[str] = []
    invalid: list[str] = []
    warnings: list[str] = []
    for kind, file_name in PREDICTION_FILES.items():
        if submission.entries.get(kind) is None and any(t.task_type == kind for t in truth.tasks):
            notes.append(f"{file_name} is missing: no {kind} task was scored")

    task_rows, class_rows, coverage_rows = [], [], []
    challenge: dict[str, dict[str, Any]] = {}
    for task in truth.tasks:
        if task.task_type == SEGMENTATION:
            result = _score_segmentation(task, truth, submission, invalid, warnings)
        else:
            result = _score_entries(task, truth, submission.entries.get(task.task_type), invalid, warnings)
        auc_error = result.scores.get("AUC_error")
        task_rows.append({"task_id": task.task_id, "task_type": task.task_type, "num_samples": result.found,
                          **{m: result.scores.get(m, np.nan) for metric_list in TASK_METRICS.values()
                             for m in metric_list},
                          "AUC_error": auc_error})
        class_rows += [{"task_id": task.task_id, **row} for row in result.per_class]
        coverage_rows.append({"task_id": task.task_id, "task_type": task.task_type,
                              "expected": len(truth.rows[task.task_id]), "found": result.found,
                              "missing": result.missing, "invalid": result.invalid,
                              "duplicates": result.duplicates, "unknown": result.unknown})
        if auc_error:
            notes.append(f"{task.task_id}: AUC counted as 0 because {auc_error}")
        _add_challenge_entry(challenge, task, result)

    for kind, index in submission.entries.items():
        if index is None:
            continue
        known = {t.task_id for t in truth.tasks if t.task_type == kind}
        foreign = sorted({tid for tid, _ in index.entries if tid not in known})
        for tid in foreign:
            count = sum(1 for t, _ in index.entries if t == tid)
            coverage_rows.append({"task_id": tid, "task_type": kind, "expected": 0, "found": 0, "missing": 0,
                                  "invalid": 0, "duplicates": 0, "unknown": count})
            notes.append(f"{PREDICTION_FILES[kind]}: {count} entries for task {tid!r}, which the ground truth "
                         f"has no {kind} rows for")
        invalid += [f"{PREDICTION_FILES[kind]}[{position}]: {why}" for position, why in index.malformed]

    incomplete = [r for r in coverage_rows if r["found"] < r["expected"]]
    if incomplete:
        notes.insert(0, f"INCOMPLETE: {sum(r['expected'] - r['found'] for r in incomplete)} expected "
                        f"predictions in {len(incomplete)} task(s) were missing or unusable and were not "
                        "scored (the challenge skips them too); see Coverage")
    if invalid:
        notes.append(f"{len(invalid)} prediction(s) could not be scored; they are listed under "
                     "'Unusable predictions'")
    if warnings:
        notes.append(f"{len(warnings)} scored prediction(s) have warnings (first: {warnings[0]}); "
                     "`fmuia validate-submission` lists them all")
    return EvaluationReport(task_rows, class_rows, coverage_rows, challenge, notes=notes, invalid=invalid,
                            warnings=warnings)


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


def leaderboard_summary(per_task: "pd.DataFrame | list[dict]") -> dict[str, float | None]:
    """The nine leaderboard columns: per type, the mean over tasks with scored images (None if none).
    ``per_task``: a report's ``per_task`` table or ``task_rows``."""
    rows = per_task.to_dict("records") if hasattr(per_task, "to_dict") else per_task
    summary: dict[str, float | None] = {}
    for column, kind, metric in metrics.LEADERBOARD_COLUMNS:
        values = [float(r[metric]) for r in rows if r["task_type"] == kind and r["num_samples"] > 0]
        summary[column] = float(np.mean(values)) if values else None
    return summary


def _same_folder(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def evaluate_submission(data_root: str | Path, pred_dir: str | Path,
                        manifest: str | Path | Mapping[str, TaskSpec] | None = None) -> EvaluationReport:
    """Score the submission folder ``pred_dir`` against the ground truth of ``data_root``.

    Raises :class:`~fmuia_lib.data.layout.LayoutError` when the ground truth is unusable
    and :class:`~fmuia_lib.challenge.submission.SubmissionError` when the folder does not exist, is
    the data root itself, or a prediction JSON cannot be read.
    """
    submission = Submission.from_folder(pred_dir)
    if _same_folder(data_root, pred_dir):
        raise SubmissionError(f"the submission folder {pred_dir} is the data root: its masks are the ground "
                              "truth itself")
    return score(GroundTruth.from_root(data_root, manifest), submission)


def evaluate_records(truth: GroundTruth | str | Path, records: Iterable[Mapping[str, Any]],
                     manifest: str | Path | Mapping[str, TaskSpec] | None = None) -> EvaluationReport:
    """Score prediction records in memory (``predict.write_submission``'s format) with the
    same scorer, exactly as if they had been written and read back."""
    if not isinstance(truth, GroundTruth):
        truth = GroundTruth.from_root(truth, manifest)
    return score(truth, Submission.from_records(records, truth.specs))


# --------------------------------------------------------------------------------------
# Checking the form of a submission
# --------------------------------------------------------------------------------------
@dataclass
class SubmissionCheck:
    """What :func:`check_submission` found: ``errors`` (predictions missing or unusable, files
    unreadable, paths outside the submission) and ``warnings`` (scored, but see the message)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_submission(pred_dir: str | Path, data_root: str | Path,
                     manifest: str | Path | Mapping[str, TaskSpec] | None = None) -> SubmissionCheck:
    """Every error and warning of the submission in ``pred_dir`` for the rows of ``data_root``.

    The data root needs only the four common CSV columns (a test set will do): no label
    is read. Each image header is read once. A submission passes (no errors) exactly
    when ``fmuia evaluate`` would score every prediction; the rules are
    :mod:`fmuia_lib.challenge.submission`'s. Also reported: missing files and entries, duplicates,
    entries for unknown tasks or images, unreadable JSON.
    Raises :class:`SubmissionError` when ``pred_dir`` is not a folder.
    """
    tasks_by_id = resolve_tasks(dict(manifest) if isinstance(manifest, Mapping) else manifest)
    _, rows = read_rows(data_root, tasks_by_id, labels=False)
    pred_dir = submission_folder(pred_dir)
    check = SubmissionCheck()
    sizes: dict[str, tuple[int, int]] = {}

    def size_of(row: Mapping[str, Any]) -> tuple[int, int] | None:
        if row["image_file"] not in sizes:
            try:
                sizes[row["image_file"]] = image_size(row["image_file"])
            except ImageReadError as err:
                check.errors.append(f"{row['image_path']} ({row['source']}): cannot check against the image: "
                                    f"{err.reason}")
                return None
        return sizes[row["image_file"]]

    submission = Submission(entries={}, folder=pred_dir, label=str(pred_dir))
    for row in rows:
        task = tasks_by_id[row["task_id"]]
        if task.task_type != SEGMENTATION:
            continue
        mask_path = mask_output_path(row["image_path"], row.get("mask_path"))
        where = f"{mask_path} ({task.task_id}, {row['source']})"
        try:
            pred_file = pred_dir / submission_relpath(mask_path)
        except SubmissionError as err:
            check.errors.append(f"{where}: {err}")
            continue
        if not pred_file.exists():
            check.errors.append(f"{where}: predicted mask missing: {pred_file}")
            continue
        _, errors, notes = read_mask_problems(task, submission, mask_path, size_of(row))
        check.errors += [f"{where}: {e}" for e in errors]
        check.warnings += [f"{where}: {w}" for w in notes]

    for kind, file_name in PREDICTION_FILES.items():
        kind_rows = [r for r in rows if tasks_by_id[r["task_id"]].task_type == kind]
        path = pred_dir / file_name
        if not path.exists():  # a named pipe or folder there is an error (load_json_list), not a missing file
            if kind_rows:
                check.errors.append(f"{file_name}: missing ({len(kind_rows)} {kind} predictions expected)")
            continue
        try:
            index = EntryIndex.of(load_json_list(path))
        except SubmissionError as err:
            check.errors.append(str(err))
            continue
        check.errors += [f"{file_name}[{position}]: {why}" for position, why in index.malformed]
        for key, positions in index.duplicates.items():
            for position in positions[1:]:
                check.errors.append(f"{file_name}[{position}] ({key[0]}, {key[1]}): duplicate entry "
                                    f"(first at {file_name}[{positions[0]}])")
        rows_by_key = {(r["task_id"], r["image_path"]): r for r in kind_rows}
        for key, entry in index.entries.items():
            where = f"{file_name}[{index.position[key]}] ({key[0]}, {key[1]})"
            if key not in rows_by_key:
                task = tasks_by_id.get(key[0])
                why = ("unknown task_id" if task is None or task.task_type != kind
                       else "image not in the ground truth CSVs")
                check.errors.append(f"{where}: unknown entry ({why})")
                continue
            task = tasks_by_id[key[0]]
            size = size_of(rows_by_key[key]) if task.task_type != CLASSIFICATION else None
            errors, notes = entry_problems(task, entry, size)
            check.errors += [f"{where}: {e}" for e in errors]
            check.warnings += [f"{where}: {w}" for w in notes]
        for key, row in rows_by_key.items():
            if key not in index.entries:
                check.errors.append(f"{file_name}: missing entry for {key[0]}, {key[1]} ({row['source']})")
    return check


def validate_submission(pred_dir: str | Path, data_root: str | Path,
                        manifest: str | Path | Mapping[str, TaskSpec] | None = None) -> list[str]:
    """Every finding of :func:`check_submission` as text, errors first, then warnings
    (an empty list: complete and well formed). A missing submission folder is one finding."""
    try:
        check = check_submission(pred_dir, data_root, manifest)
    except SubmissionError as err:
        return [str(err)]
    return check.errors + check.warnings


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def _json_target_problem(path: str | None) -> str | None:
    """Why ``--json PATH`` cannot be written (None when it can), checked before scoring."""
    if path is None:
        return None
    target = Path(path)
    if target.is_dir():
        return f"--json {path} is a folder; give a file name"
    parent = target.parent if str(target.parent) else Path(".")
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                return f"--json {path}: {folder} is a file, so no folder can be made there"
            if not os.access(folder, os.W_OK):
                return f"--json {path}: {folder} is not writable"
            return None
    return None


def evaluate_main(args) -> int:
    """``fmuia evaluate --data ROOT --pred DIR [--json OUT]``.

    Exit 0 when every prediction found could be scored (missing ones are reported, as
    the challenge skips them); 2 when the input cannot be scored (data root, submission
    folder, JSON files, ``--json``) or when some predictions are unusable: the report is
    still printed (and written), and one message names the first unusable entry."""
    from fmuia_lib.paths import output_problem

    problem = _json_target_problem(args.json)
    if problem is None and args.json:  # never into a data root, never into or over the submission scored
        problem = output_problem(args.json, name="--json", what="the report", file=True,
                                 inputs=[(args.data, "the data root"), (args.pred, "the submission folder")])
    if problem:
        print(f"fmuia evaluate: error: {problem}", file=sys.stderr)
        return 2
    report = evaluate_submission(args.data, args.pred)  # LayoutError, SubmissionError: bad input (cli.main)
    print(report.format())
    if args.json:
        print(f"\nwrote {report.to_json(args.json)}")  # a failed write: OutputError, bad input (cli.main)
    if report.invalid:
        more = f" (and {len(report.invalid) - 1} more, listed in the report)" if len(report.invalid) > 1 else ""
        print(f"fmuia evaluate: error: {len(report.invalid)} prediction(s) could not be scored: "
              f"{report.invalid[0]}{more}", file=sys.stderr)
        return 2
    return 0


def validate_submission_main(args) -> int:
    """``fmuia validate-submission DIR --data ROOT``: errors (exit 1), warnings only (exit 0),
    or unusable input (exit 2: the data root, or the submission folder, cannot be read)."""
    check = check_submission(args.pred, args.data)  # LayoutError, SubmissionError: bad input (cli.main)
    for error in check.errors:
        print(f"ERROR {error}")
    for warning in check.warnings:
        print(f"WARNING {warning}")
    if check.errors:
        print(f"{args.pred}: {len(check.errors)} error(s), {len(check.warnings)} warning(s)")
        return 1
    if check.warnings:
        print(f"{args.pred}: complete and scorable for {args.data}, with {len(check.warnings)} warning(s)")
        return 0
    print(f"{args.pred}: OK, a complete and well-formed submission for {args.data}")
    return 0
