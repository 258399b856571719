"""The task list: `data_manifest.csv` read into :class:`TaskSpec` objects.

This module is the only place that knows which subtasks exist. Heads, loaders,
metrics, the phantom and the notebooks all ask it; nothing else keeps a task list.

Task types are spelled as the challenge spells them in its CSVs:
``segmentation``, ``classification``, ``detection`` and ``Regression``.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

SEGMENTATION = "segmentation"
CLASSIFICATION = "classification"
DETECTION = "detection"
REGRESSION = "Regression"
TASK_TYPES: tuple[str, ...] = (SEGMENTATION, CLASSIFICATION, DETECTION, REGRESSION)
#: Task types whose targets are dense maps (segmentation masks, a box on the map). Which
#: features a head reads is the head type's (``heads.reads_fpn``): the heat-map landmark head
#: reads the FPN map too.
DENSE_TYPES: frozenset[str] = frozenset({SEGMENTATION, DETECTION})

#: Image folder of each task type in the challenge layout.
TYPE_FOLDERS = {
    SEGMENTATION: "Segmentation",
    CLASSIFICATION: "Classification",
    DETECTION: "Detection",
    REGRESSION: "Regression",
}
#: Segmentation sub-folder by number of classes (background included).
SEG_FOLDERS = {2: "Two", 3: "Three", 4: "Four", 5: "Five"}

REQUIRED_COLUMNS = (
    "task_id", "task_name", "num_classes", "class_names", "anatomy", "seg_folder",
    "metrics", "phantom_recipe", "phantom_probe", "phantom_width", "phantom_height",
    "phantom_class_weights", "public_dataset", "real_us_folder",
)

#: The packaged manifest; in a source checkout this is a link to the top-level
#: ``data_manifest.csv``, so there is one file to edit.
DEFAULT_MANIFEST = Path(__file__).with_name("data_manifest.csv")


class ManifestError(ValueError):
    """The manifest is malformed; the message names the file, line and problem."""


@dataclass(frozen=True)
class TaskSpec:
    """One subtask, as one row of the manifest describes it."""

    task_id: str
    task_type: str  # segmentation | classification | detection | Regression (the CSVs' task_name column)
    num_classes: int  # Regression: number of landmarks; detection: 1
    class_names: tuple[str, ...]
    anatomy: str
    seg_folder: str
    metrics: tuple[str, ...]
    phantom_recipe: str
    phantom_probe: str
    phantom_size: tuple[int, int]  # (width, height) of phantom images
    phantom_class_weights: tuple[float, ...] | None
    public_dataset: str
    real_us_folder: str
    index: int = field(default=0, compare=False)  # row order in the manifest

    @property
    def is_dense(self) -> bool:
        """True for segmentation and detection (dense targets); routing is ``heads.reads_fpn``."""
        return self.task_type in DENSE_TYPES

    @property
    def num_points(self) -> int:
        if self.task_type != REGRESSION:
            raise AttributeError(f"{self.task_id} is a {self.task_type} task, not Regression")
        return self.num_classes

    @property
    def folder(self) -> str:
        """Image folder of this task relative to a split root, e.g. ``Segmentation/Two/cervix``."""
        if self.task_type == SEGMENTATION:
            return f"{TYPE_FOLDERS[SEGMENTATION]}/{self.seg_folder}/{self.task_id}"
        return f"{TYPE_FOLDERS[self.task_type]}/{self.task_id}"

    def class_index(self, name: str) -> int:
        try:
            return self.class_names.index(name)
        except ValueError:
            raise KeyError(f"{self.task_id}: unknown class name {name!r}; "
                           f"known: {', '.join(self.class_names)}") from None


def _parse_row(row: dict, path: Path, line: int) -> TaskSpec:
    where = f"{path}, line {line}"

    def need(col: str) -> str:
        val = (row.get(col) or "").strip()
        if not val:
            raise ManifestError(f"{where}: column {col!r} is empty")
        return val

    task_id = need("task_id")
    task_name = need("task_name")
    if task_name not in TASK_TYPES:
        raise ManifestError(f"{where}: task_name {task_name!r} of {task_id} is not one of {TASK_TYPES}")
    try:
        num_classes = int(need("num_classes"))
    except ValueError:
        raise ManifestError(f"{where}: num_classes of {task_id} is not an integer") from None
    class_names = tuple(s.strip() for s in need("class_names").split(";"))
    if task_name == DETECTION:
        if num_classes != 1:
            raise ManifestError(f"{where}: detection task {task_id} must have num_classes 1 (one box per image)")
    elif len(class_names) != num_classes:
        raise ManifestError(f"{where}: {task_id} has num_classes {num_classes} but {len(class_names)} class_names")
    seg_folder = (row.get("seg_folder") or "").strip()
    if task_name == SEGMENTATION:
        expected = SEG_FOLDERS.get(num_classes)
        if seg_folder != expected:
            raise ManifestError(f"{where}: {task_id} has {num_classes} classes, so seg_folder must be "
                                f"{expected!r}, not {seg_folder!r}")
    elif seg_folder:
        raise ManifestError(f"{where}: seg_folder is only for segmentation tasks ({task_id})")
    weights_txt = (row.get("phantom_class_weights") or "").strip()
    weights = None
    if weights_txt:
        try:
            weights = tuple(float(w) for w in weights_txt.split(";"))
        except ValueError:
            raise ManifestError(f"{where}: phantom_class_weights of {task_id} are not numbers") from None
        if len(weights) != num_classes or any(w <= 0 for w in weights):
            raise ManifestError(f"{where}: phantom_class_weights of {task_id} need {num_classes} positive numbers")
    try:
        size = (int(need("phantom_width")), int(need("phantom_height")))
    except ValueError:
        raise ManifestError(f"{where}: phantom_width/phantom_height of {task_id} are not integers") from None
    return TaskSpec(
        task_id=task_id,
        task_type=task_name,
        num_classes=num_classes,
        class_names=class_names,
        anatomy=need("anatomy"),
        seg_folder=seg_folder,
        metrics=tuple(need("metrics").split(";")),
        phantom_recipe=need("phantom_recipe"),
        phantom_probe=need("phantom_probe"),
        phantom_size=size,
        phantom_class_weights=weights,
        public_dataset=(row.get("public_dataset") or "").strip(),
        real_us_folder=(row.get("real_us_folder") or "").strip(),
    )


def load_manifest(path: str | Path | None = None) -> dict[str, TaskSpec]:
    """Read a manifest into ``{task_id: TaskSpec}`` in file order.

    ``path`` defaults to the packaged ``data_manifest.csv``. Raises
    :class:`ManifestError` naming file and line on any problem.
    """
    path = Path(path) if path is not None else DEFAULT_MANIFEST
    return _load_manifest_cached(str(path.resolve()))


@lru_cache(maxsize=8)
def _load_manifest_cached(path_str: str) -> dict[str, TaskSpec]:
    from fmuia_lib.paths import not_regular_problem

    path = Path(path_str)
    if not path.exists():
        raise ManifestError(f"manifest not found: {path}")
    problem = not_regular_problem(path)
    if problem:
        raise ManifestError(f"manifest {path} {problem}")
    tasks: dict[str, TaskSpec] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ManifestError(f"{path}: missing columns {missing}")
            for i, row in enumerate(reader):
                spec = _parse_row(row, path, line=i + 2)
                if spec.task_id in tasks:
                    raise ManifestError(f"{path}, line {i + 2}: duplicate task_id {spec.task_id!r}")
                tasks[spec.task_id] = TaskSpec(**{**spec.__dict__, "index": len(tasks)})
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ManifestError(f"manifest {path} cannot be read as a UTF-8 CSV file: {err}") from None
    if not tasks:
        raise ManifestError(f"{path}: no tasks")
    return tasks


def select_tasks(task_ids: Iterable[str] | None = None,
                 manifest: str | Path | None = None) -> list[TaskSpec]:
    """The TaskSpecs for ``task_ids`` in manifest order (all tasks when None)."""
    tasks = load_manifest(manifest)
    if task_ids is None:
        return list(tasks.values())
    wanted = set(task_ids)
    unknown = sorted(wanted - set(tasks))
    if unknown:
        raise KeyError(f"unknown task_id(s) {unknown}: not in the manifest")
    return [t for t in tasks.values() if t.task_id in wanted]


def manifest_hash(task_ids: Sequence[str] | None = None, manifest: str | Path | None = None) -> str:
    """A short hash of the task definitions (id, type, classes) that a model depends on.

    Stored in checkpoints, so a checkpoint built for other tasks is refused.
    """
    h = hashlib.sha256()
    for t in select_tasks(task_ids, manifest):
        h.update(f"{t.task_id}|{t.task_type}|{t.num_classes}|{';'.join(t.class_names)}\n".encode())
    return h.hexdigest()[:16]
