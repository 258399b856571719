"""The challenge layout: writing, reading and checking a *data root*.

A data root is a folder holding ``csv_files/*.csv`` and the image folders the CSVs
point to. Every CSV row names one image (``image_path``, relative to ``csv_files/``,
so it starts with ``../``) and its task (``task_id``, ``task_name``, ``num_classes``),
plus the annotation columns of its task type:

=================  ==========================================================
segmentation       ``mask_path``: single-channel PNG, pixel value = class index
classification     ``mask``: the integer class label
detection          ``x_min, y_min, x_max, y_max`` in original pixels
Regression         ``point_1_xy`` ... ``point_K_xy``: JSON ``[x, y]`` in original pixels
=================  ==========================================================

Three levels of trust:

* :func:`write_task_csv` writes one task's CSV (used by the phantom and the converters);
* :func:`read_root` parses every CSV into one table and refuses rows that cannot be
  used (bad columns, values, paths) without opening any image; with ``labels=False``
  it needs only the four common columns (what prediction reads from a test set);
  :func:`read_rows` gives the same rows as plain dicts;
* :func:`validate_root` additionally decodes every image and every mask (both through
  :mod:`fmuia_lib.data.images`, the readers training and prediction use), and returns
  *all* problems instead of stopping at the first (``fmuia data check``).

Reading stays inside the data root: a path a CSV writes must not climb out of it, and
neither may the file it names once symbolic links are resolved (an image, or a folder
such as ``imgs/``, that links elsewhere), and only regular files are read. The rules of
reading and writing, for every command, are :mod:`fmuia_lib.paths`'.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from fmuia_lib.paths import CSV_DIR, contained_path, not_regular_problem, resolves_outside
from fmuia_lib.data.images import ImageReadError, image_size, mask_fit_problem, read_image, read_mask
from fmuia_lib.tasks import (CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TASK_TYPES, TaskSpec,
                             load_manifest)

if TYPE_CHECKING:
    import pandas as pd

#: The data roots a source (the phantom, a converter) writes under its output folder.
SPLIT_FOLDERS = ("train", "val")
COMMON_COLUMNS = ("image_path", "task_id", "task_name", "num_classes")
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")


class Problem(NamedTuple):
    """One thing wrong with a data root, located as precisely as possible."""

    csv_file: str  # relative to the data root, e.g. "csv_files/breast_lesion.csv"
    line: int | None  # 1-based line in the CSV (header = 1); None for file-level problems
    path: str | None  # the image/mask path concerned, as written in the CSV
    message: str

    def __str__(self) -> str:
        where = self.csv_file if self.line is None else f"{self.csv_file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class LayoutError(ValueError):
    """A data root (or an output folder beside one) cannot be used; the message names the
    CSV file, line and problem, or the folder."""


def point_columns(num_points: int) -> list[str]:
    """``["point_1_xy", ..., "point_K_xy"]``."""
    return [f"point_{k}_xy" for k in range(1, num_points + 1)]


def task_columns(task: TaskSpec) -> list[str]:
    """All CSV columns of ``task``'s rows: the common four, then its annotation columns."""
    extra = {
        SEGMENTATION: ["mask_path"],
        CLASSIFICATION: ["mask"],
        DETECTION: list(BOX_COLUMNS),
        REGRESSION: point_columns(task.num_classes),
    }[task.task_type]
    return [*COMMON_COLUMNS, *extra]


def _inside_root(csv_relative: str) -> str | None:
    """The root-relative form of a path written in a CSV, or None when it leaves the data root.

    ``"../Classification/x.png"`` -> ``"Classification/x.png"``; absolute paths
    (``/x``, ``C:/x``) and paths climbing above the root (``../../x``) give None.
    """
    return contained_path(csv_relative, CSV_DIR)


def rel_path(root: Path | str, file: Path | str) -> str:
    """``file`` as the CSVs write it: relative to ``ROOT/csv_files``, so it starts with ``../``.

    Raises :class:`LayoutError` when ``file`` is not inside ``root``.
    """
    root_abs = Path(os.path.abspath(root))
    file_abs = Path(os.path.abspath(file))
    try:
        inside = file_abs.relative_to(root_abs)
    except ValueError:
        raise LayoutError(f"{file_abs} is not inside the data root {root_abs}") from None
    return "../" + inside.as_posix()


def default_mask_path(image_path: str) -> str:
    """The mask path that goes with ``image_path`` when a CSV names none: ``img`` -> ``mask``
    and ``IMG`` -> ``MASK``, the rule the challenge's own Docker inference code names a
    predicted mask by when a test CSV has no ``mask_path`` column."""
    return image_path.replace("img", "mask").replace("IMG", "MASK")


def sample_files(root: Path | str, task: TaskSpec, file_name: str) -> tuple[Path, Path]:
    """Where a written data root (the phantom, the real-data converters) keeps one sample:
    ``<task folder>/imgs/<file_name>`` and, for segmentation, the mask at
    :func:`default_mask_path` of it (``<task folder>/masks/...``). So a copy of the root
    without its ``mask_path`` column, as a test set may come, gets its predicted masks at
    the paths its labelled original names, and can be scored against it."""
    image = Path(root) / task.folder / "imgs" / file_name
    inside = image.relative_to(root).as_posix()
    return image, Path(root) / default_mask_path(inside)


def _format_record(task: TaskSpec, record: dict, index: int) -> dict[str, str]:
    """One CSV row (all text) from a writer record, checked as the reader will check it."""
    where = f"{task.task_id} record {index} ({record.get('image_path', '?')})"
    row = {"image_path": record.get("image_path"), "task_id": task.task_id,
           "task_name": task.task_type, "num_classes": str(task.num_classes)}
    for key in ["image_path"] + (["mask_path"] if task.task_type == SEGMENTATION else []):
        value = record.get(key)
        if not isinstance(value, str) or not value.startswith("../") or _inside_root(value) is None:
            raise LayoutError(f"{where}: {key} {value!r} must be a '../...' path inside the data root "
                              f"(build it with rel_path)")
        row[key] = value
    try:
        if task.task_type == CLASSIFICATION:
            row["mask"] = str(record["mask"])
        elif task.task_type == DETECTION:
            row.update({c: repr(float(record[c])) for c in BOX_COLUMNS})
        elif task.task_type == REGRESSION:
            points = record["points"]
            if len(points) != task.num_classes or any(len(p) != 2 for p in points):
                raise ValueError(f"needs {task.num_classes} points of [x, y], got {points!r}")
            row.update({c: json.dumps([float(x), float(y)]) for c, (x, y) in
                        zip(point_columns(task.num_classes), points)})
        _parse_target(task, row)  # the reader's checks: integer labels, proper boxes, ...
    except KeyError as err:
        raise LayoutError(f"{where}: missing key {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise LayoutError(f"{where}: {err}") from None
    return row


def write_task_csv(root: Path | str, task: TaskSpec, records: list[dict]) -> Path:
    """Write ``ROOT/csv_files/<task_id>.csv`` for one task and return its path.

    Each record holds ``image_path`` (and ``mask_path`` for segmentation) already in
    CSV form (see :func:`rel_path`), and the annotation: ``mask`` (int label) for
    classification, ``x_min``...``y_max`` for detection, ``points`` (``[[x, y], ...]``)
    for Regression. Rows are sorted by ``image_path`` so equal inputs give equal files.
    """
    rows = sorted((_format_record(task, r, i) for i, r in enumerate(records)),
                  key=lambda row: row["image_path"])
    out = Path(root) / CSV_DIR / f"{task.task_id}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=task_columns(task), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out


# -- reading --------------------------------------------------------------------------------

def resolve_tasks(manifest: str | Path | dict[str, TaskSpec] | None) -> dict[str, TaskSpec]:
    """``manifest`` as ``{task_id: TaskSpec}``: a loaded dict, a manifest path, or None (packaged)."""
    return manifest if isinstance(manifest, dict) else load_manifest(manifest)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _parse_point(text: str) -> tuple[float, float]:
    """``"[x, y]"`` -> ``(x, y)``; raises ValueError with a readable reason."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{text!r} is not JSON") from None
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{text!r} is not a JSON [x, y] pair of numbers")
    return _finite(str(value[0])), _finite(str(value[1]))


def _parse_target(task: TaskSpec, row: dict[str, str]):
    """The annotation of one row in original pixels (None for segmentation: it is the mask file).

    classification -> int; detection -> [x_min, y_min, x_max, y_max];
    Regression -> [[x, y], ...]. Raises ValueError naming the problem.
    """
    if task.task_type == CLASSIFICATION:
        text = row["mask"]
        if not text.lstrip("+-").isdigit():
            raise ValueError(f"label {text!r} is not an integer")
        label = int(text)
        if not 0 <= label < task.num_classes:
            raise ValueError(f"label {label} is outside [0, {task.num_classes}) for {task.task_id}")
        return label
    if task.task_type == DETECTION:
        try:
            box = [_finite(row[c]) for c in BOX_COLUMNS]
        except ValueError:
            raise ValueError(f"box {[row[c] for c in BOX_COLUMNS]} is not four finite numbers") from None
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"degenerate box {box}: needs x_min < x_max and y_min < y_max")
        if min(box) < 0:
            raise ValueError(f"box {box} lies partly outside the image (negative coordinate)")
        return box
    if task.task_type == REGRESSION:
        points = []
        for column in point_columns(task.num_classes):
            try:
                x, y = _parse_point(row[column])
            except ValueError as err:
                raise ValueError(f"{column}: {err}") from None
            if x < 0 or y < 0:
                raise ValueError(f"{column} {[x, y]} lies outside the image (negative coordinate)")
            points.append([x, y])
        return points
    return None


def _parse_row(tasks: dict[str, TaskSpec], header: list[str], row: dict[str, str],
               root: "_Root", csv_name: str, line: int, labels: bool = True) -> tuple[dict, list[Problem]]:
    """One CSV row -> (record for the frame, problems). The record is returned even when
    problems were found, so the file checks can still look at whatever parsed.

    ``labels=False`` reads only what prediction needs (see :func:`read_root`)."""
    problems: list[Problem] = []

    def problem(message: str, path: str | None = None) -> None:
        problems.append(Problem(f"{CSV_DIR}/{csv_name}", line, path, message))

    image_path = row.get("image_path", "")
    record = {**row, "source": f"{csv_name}:{line}", "csv_file": csv_name, "csv_line": line,
              "image_file": None, "mask_file": None, "target": None}
    for key, file_key in (("image_path", "image_file"), ("mask_path", "mask_file")):
        if key in row and row[key]:
            inside = _inside_root(row[key])
            if inside is None:
                problem("path escapes the data root (absolute, or '../' beyond it)", row[key])
            elif labels or key == "image_path":  # without labels a mask_path only names an output
                elsewhere = root.outside(inside)
                if elsewhere is not None:
                    problem(f"path leads outside the data root through a symbolic link (to {elsewhere}); "
                            "files are read only inside the data root", row[key])
                else:
                    record[file_key] = str(root.abs / inside)
    if not image_path:
        problem("image_path is empty")
    task = tasks.get(row["task_id"])
    if task is None:
        problem(f"unknown task_id {row['task_id']!r} (not in the manifest)", image_path)
        return record, problems
    if row["task_name"] != task.task_type:
        problem(f"task_name {row['task_name']!r} contradicts the manifest: "
                f"{task.task_id} is a {task.task_type} task", image_path)
    if row["num_classes"] != str(task.num_classes):
        problem(f"num_classes {row['num_classes']!r} contradicts the manifest: "
                f"{task.task_id} has {task.num_classes}", image_path)
    record["num_classes"] = task.num_classes
    if not labels:
        return record, problems
    if any(c not in header for c in task_columns(task)):  # reported once per file by _read_csv
        return record, problems
    if task.task_type == SEGMENTATION and not row["mask_path"]:
        problem("mask_path is empty", image_path)
    if task.task_type == REGRESSION:
        extra = [c for c in header if c.startswith("point_") and c not in task_columns(task) and row[c]]
        if extra:
            problem(f"{', '.join(extra)} given but {task.task_id} has {task.num_classes} landmarks", image_path)
    try:
        record["target"] = _parse_target(task, row)
    except ValueError as err:
        problem(str(err), image_path)
    return record, problems


class _Root:
    """A data root being read: its absolute and real paths, and a cache of real folders."""

    def __init__(self, root: Path | str) -> None:
        self.abs = Path(os.path.abspath(root))
        self.real = os.path.realpath(self.abs)
        self._folders: dict[str, str] = {}

    def outside(self, inside: str) -> str | None:
        """Where the root-relative path ``inside`` really leads when that is outside the root."""
        return resolves_outside(self.real, self.abs, inside, self._folders)


def _read_csv(tasks: dict[str, TaskSpec], csv_file: Path, root: _Root,
              labels: bool = True) -> tuple[list[dict], list[Problem]]:
    """The records and problems of one CSV file; a bad header stops its reading, and a
    file without rows is a problem (its task would otherwise vanish without a word)."""
    name = csv_file.name
    where = f"{CSV_DIR}/{name}"
    records: list[dict] = []
    problems: list[Problem] = []
    try:
        with csv_file.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            if not header:
                return [], [Problem(where, None, None, "empty file: no header and no rows")]
            missing = [c for c in COMMON_COLUMNS if c not in header]
            if missing or len(set(header)) != len(header):
                why = f"missing columns {missing}" if missing else "repeated column names"
                return [], [Problem(where, 1, None, f"bad header {header}: {why}")]
            reported_missing: set[str] = set()  # tasks whose missing columns are reported
            for values in reader:
                line = reader.line_num
                if not values:  # blank line
                    continue
                if len(values) != len(header):
                    problems.append(Problem(where, line, None,
                                            f"{len(values)} fields but the header has {len(header)}"))
                    continue
                row = {h: v.strip() for h, v in zip(header, values)}
                record, row_problems = _parse_row(tasks, header, row, root, name, line, labels)
                records.append(record)
                problems += row_problems
                task = tasks.get(row["task_id"])
                if task is not None and labels:
                    gone = [c for c in task_columns(task) if c not in header]
                    if gone and task.task_id not in reported_missing:
                        reported_missing.add(task.task_id)
                        problems.append(Problem(where, 1, None, f"missing columns {gone} needed by the "
                                                f"{task.task_type} rows of {task.task_id} (first at line {line})"))
            if not records and not problems:
                problems.append(Problem(where, None, None, "no rows, only a header: every CSV must list at "
                                                           "least one image (remove the file to drop its task)"))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        problems.append(Problem(where, None, None, f"cannot read CSV: {err}"))
    return records, problems


#: Orders in which a data root's CSV files are read: by name, or in the file system's directory
#: order, as the official baseline's ``glob.glob`` lists them.
CSV_ORDERS = ("sorted", "glob")


def csv_files(root: Path | str, order: str = "sorted") -> list[Path]:
    """The CSV files of a data root: every entry of ``csv_files/`` whose name ends in ``.csv``
    in any case (``BREAST.CSV`` is read, not dropped), sorted by name or, with
    ``order="glob"``, in the directory's own order (what ``glob.glob`` returns)."""
    if order not in CSV_ORDERS:
        raise ValueError(f"csv_order must be one of {CSV_ORDERS}, not {order!r}")
    folder = Path(root) / CSV_DIR
    found = [p for p in folder.iterdir() if p.suffix.lower() == ".csv"] if folder.is_dir() else []
    return sorted(found) if order == "sorted" else found


def _parse_root(root: Path | str, tasks: dict[str, TaskSpec], labels: bool = True,
                csv_order: str = "sorted") -> tuple[list[dict], list[Problem]]:
    """Every CSV row of ``root`` as a record, and every problem found without opening images.
    CSV files are read in ``csv_order`` (:func:`csv_files`)."""
    data_root = _Root(root)
    csv_dir = data_root.abs / CSV_DIR
    if not csv_dir.is_dir():
        return [], [Problem(CSV_DIR, None, None, f"no {CSV_DIR}/ folder in {data_root.abs}")]
    csv_paths = csv_files(data_root.abs, csv_order)
    if not csv_paths:
        return [], [Problem(CSV_DIR, None, None, f"no CSV files in {csv_dir}")]
    records: list[dict] = []
    problems: list[Problem] = []
    for path in csv_paths:
        elsewhere = data_root.outside(f"{CSV_DIR}/{path.name}")
        if elsewhere is not None:
            problems.append(Problem(f"{CSV_DIR}/{path.name}", None, None, "the CSV file leads outside the data "
                                    f"root through a symbolic link (to {elsewhere}); it is not read"))
            continue
        irregular = not_regular_problem(path)
        if irregular:
            problems.append(Problem(f"{CSV_DIR}/{path.name}", None, None, f"the CSV file {irregular}"))
            continue
        file_records, file_problems = _read_csv(tasks, path, data_root, labels)
        records += file_records
        problems += file_problems
    first_seen: dict[tuple[str, str], str] = {}
    for rec in records:
        key = (rec["task_id"], rec["image_path"])
        if key in first_seen:
            problems.append(Problem(f"{CSV_DIR}/{rec['csv_file']}", rec["csv_line"], rec["image_path"],
                                    f"duplicate row: same task and image as {first_seen[key]}"))
        else:
            first_seen[key] = rec["source"]
    return records, problems


DERIVED_COLUMNS = ("source", "csv_file", "csv_line", "image_file", "mask_file", "target")


def _column_order(column: str) -> tuple:
    """Annotation columns in challenge order: mask_path, mask, box, points by number, others."""
    known = ["mask_path", "mask", *BOX_COLUMNS]
    if column in known:
        return (known.index(column), 0, column)
    if column.startswith("point_") and column.removeprefix("point_").removesuffix("_xy").isdigit():
        return (len(known), int(column.removeprefix("point_").removesuffix("_xy")), column)
    return (len(known) + 1, 0, column)


def _raise_if(problems: list[Problem], root: Path | str) -> None:
    """One line: the first problem, and how many more ``fmuia data check`` lists."""
    if problems:
        more = (f" (and {len(problems) - 1} more problem(s): `fmuia data check {root}` lists them all)"
                if len(problems) > 1 else "")
        raise LayoutError(f"data root {root}: {problems[0]}{more}")


def read_rows(root: Path | str, manifest: str | Path | dict[str, TaskSpec] | None = None,
              labels: bool = True, csv_order: str = "sorted") -> tuple[list[str], list[dict]]:
    """``(columns, rows)``: what :func:`read_root` returns as a table, as plain dicts (every
    row has every column; cells a row's task type does not have are None). For callers
    that do not need pandas, such as the scorer. Raises :class:`LayoutError` like it."""
    records, problems = _parse_root(root, resolve_tasks(manifest), labels, csv_order)
    _raise_if(problems, root)
    csv_columns = {c for rec in records for c in rec} - set(COMMON_COLUMNS) - set(DERIVED_COLUMNS)
    if not labels:
        csv_columns &= {"mask_path"}
    columns = [*COMMON_COLUMNS, *sorted(csv_columns, key=_column_order), *DERIVED_COLUMNS]
    return columns, [{c: rec.get(c) for c in columns} for rec in records]


def read_root(root: Path | str, manifest: str | Path | dict[str, TaskSpec] | None = None,
              labels: bool = True, csv_order: str = "sorted") -> "pd.DataFrame":
    """All CSV rows of a data root as one ``pandas.DataFrame``, without opening any image.

    Columns: the CSV columns as written (text), ``num_classes`` (int), and
    ``source`` (``"<csv name>:<line>"``), ``csv_file``, ``csv_line``,
    ``image_file`` / ``mask_file`` (absolute paths; ``mask_file`` None except for
    segmentation) and ``target`` (the parsed annotation in original pixels:
    classification int, detection ``[x_min, y_min, x_max, y_max]``, Regression
    ``[[x, y], ...]``, segmentation None). Rows keep CSV order, CSV files sorted by name
    (``csv_order="glob"``: in ``glob.glob``'s order, the official baseline's).

    ``labels=False`` is the reading for prediction, where CSVs may hold only the four
    common columns (a hidden test set): only those are required, annotation columns
    are dropped when present (``target`` and ``mask_file`` stay None, no mask is ever
    opened), and ``mask_path``, when the CSV has it, is kept as the name of the mask
    to write (checked as text, never read).

    Raises :class:`LayoutError` listing the problems when any row cannot be used.
    """
    import pandas as pd

    columns, rows = read_rows(root, manifest, labels, csv_order)
    # dtype=object keeps None (not NaN) for cells a row's task type does not have
    frame = pd.DataFrame([[row[c] for c in columns] for row in rows], columns=columns, dtype=object)
    return frame.astype({"num_classes": "int64", "csv_line": "int64"})


# -- checking files -------------------------------------------------------------------------

def _image_size(image_file: str, header_only: bool = False) -> tuple[int, int]:
    """``(height, width)`` of an image, decoded by :func:`images.read_image` (what training
    and prediction do), or with ``header_only`` read from its header (format checked, the
    rest of the file not). Raises ValueError with a readable reason."""
    try:
        if header_only:
            return image_size(image_file)
        return read_image(image_file).shape[:2]
    except ImageReadError as err:
        raise ValueError(err.reason) from None


def mask_problem(mask_file: str, size: tuple[int, int] | None, num_classes: int) -> str | None:
    """What is wrong with a ground-truth mask (None when fine); ``size`` = its image's
    (height, width), or None when unknown. The reading rules are :func:`images.read_mask`'s."""
    try:
        mask = read_mask(mask_file)
    except ImageReadError as err:
        return err.reason
    return mask_fit_problem(mask.values, size, num_classes)


def target_outside_image(task: TaskSpec, target, width: int, height: int) -> str | None:
    """Why a parsed box or point list does not fit a ``width`` x ``height`` image (None if it does)."""
    if task.task_type == DETECTION and (target[2] > width or target[3] > height):
        return f"box {target} reaches outside the {width}x{height} image"
    if task.task_type == REGRESSION:
        for k, (x, y) in enumerate(target, start=1):
            if x > width or y > height:
                return f"point_{k}_xy {[x, y]} lies outside the {width}x{height} image"
    return None


def _check_files(record: dict, task: TaskSpec | None, header_only: bool) -> list[Problem]:
    """Decode the image (or read its header) and the mask of one row; return what is wrong."""
    def problem(path: str, message: str) -> Problem:
        return Problem(f"{CSV_DIR}/{record['csv_file']}", record["csv_line"], path, message)

    if record["image_file"] is None:
        return []  # the path problem is already reported
    problems: list[Problem] = []
    size = None
    try:
        size = _image_size(record["image_file"], header_only)
    except ValueError as err:
        problems.append(problem(record["image_path"], str(err)))
    if task is None:
        return problems
    if task.task_type == SEGMENTATION and record["mask_file"]:
        message = mask_problem(record["mask_file"], size, task.num_classes)
        if message:
            problems.append(problem(record["mask_path"], message))
    elif size is not None and record["target"] is not None:
        message = target_outside_image(task, record["target"], width=size[1], height=size[0])
        if message:
            problems.append(problem(record["image_path"], message))
    return problems


def validate_root(root: Path | str, manifest: str | Path | dict[str, TaskSpec] | None = None,
                  header_only: bool = False, workers: int | None = None) -> list[Problem]:
    """Every problem of a data root (empty list = valid), in CSV order.

    Checks the CSVs (columns, rows present, task ids against the manifest, labels, boxes,
    points, paths inside the root, duplicates) and every image
    (exists, PNG or JPEG, whole and decodable: decoded by :func:`images.read_image`, the
    reader of training and prediction; ``header_only`` reads only its header) and every
    mask (PNG, whole, 8/16-bit, one channel or equal colour channels, same size as its
    image, values < num_classes: :func:`images.read_mask`). Files are checked by
    ``workers`` threads (default: 2 per CPU); the decoders release the GIL.
    """
    tasks = resolve_tasks(manifest)
    records, problems = _parse_root(root, tasks)
    if records:
        workers = workers or 2 * (os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for file_problems in pool.map(lambda r: _check_files(r, tasks.get(r["task_id"]), header_only),
                                          records):
                problems += file_problems
    return sorted(problems, key=lambda p: (p.csv_file, p.line or 0))


def check_main(args) -> int:
    """``fmuia data check ROOT``: print every problem (exit 1) or a short summary (exit 0).

    Unusable arguments (a root that is not a folder, ``--max-problems`` below 1, flags
    that contradict each other) raise :class:`LayoutError` (exit 2 from the command line).
    """
    root = Path(args.root)
    if not root.is_dir():
        raise LayoutError(f"data root {root}: {'is a file, not a folder' if root.exists() else 'not found'}")
    limit = getattr(args, "max_problems", None)
    if limit is not None and limit < 1:
        raise LayoutError(f"--max-problems must be at least 1, got {limit}")
    header_only = bool(getattr(args, "header_only", False))
    if getattr(args, "verify_images", False):
        if header_only:
            raise LayoutError("--verify-images and --header-only contradict each other")
        print("note: --verify-images is no longer needed: every image is decoded by default", file=sys.stderr)
    problems = validate_root(root, args.manifest, header_only=header_only)
    if problems:
        limit = limit or len(problems)
        for p in problems[:limit]:
            print(p)
        if len(problems) > limit:
            print(f"... {len(problems) - limit} more not shown (--max-problems)")
        print(f"{args.root}: {len(problems)} problem(s)")
        return 1
    frame = read_root(root, args.manifest)
    counts = frame["task_id"].value_counts()
    checked = "--header-only: image headers read, not decoded" if header_only else "every image decoded"
    print(f"{args.root}: OK, {len(frame)} rows, {len(counts)} tasks ({checked})")
    for task in resolve_tasks(args.manifest).values():
        if task.task_id in counts:
            print(f"  {task.task_type:<15} {task.task_id:<25} {counts[task.task_id]:>7}")
    type_counts = frame["task_name"].value_counts()
    for task_type in TASK_TYPES:
        if task_type in type_counts:
            print(f"  total {task_type:<15} {type_counts[task_type]:>7}")
    return 0
