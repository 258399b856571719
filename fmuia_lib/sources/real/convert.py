"""Convert public ultrasound datasets into the challenge layout (``fmuia data real``).

For every dataset folder found under ``--src`` the conversion

1. reads the dataset in its original layout (one module per dataset in this package);
2. splits its *images* once into train and val, by the group that must not straddle
   the split (patient, subject or image), stratified by the image label, seeded;
3. writes each image into every task the manifest gives that dataset
   (``real_us_folder``), with the task's target: a mask of class indices, a class
   index, or the bounding box of the mask. Class indices are looked up BY NAME in the
   manifest's ``class_names``, so the mapping is the manifest's order;
4. writes ``OUT/{train,val}/csv_files/<task_id>.csv`` (``layout.write_task_csv``),
   ``OUT/provenance.csv`` (where each converted image came from, its licence and
   citation), ``OUT/real_conversion.json`` (counts, mapping, everything skipped) and
   ``OUT/real_files.txt`` (every file written, so ``--overwrite`` removes exactly those);
5. checks both data roots with ``layout.validate_root``.

Because one split serves all tasks of a dataset, an image is in the same split for,
e.g., breast_lesion, breast_2cls and breast_3cls.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from fmuia_lib.progress import tqdm

from fmuia_lib.data.layout import SPLIT_FOLDERS, rel_path, sample_files, validate_root, write_task_csv
from fmuia_lib.paths import CSV_DIR, inside_data_root_problem, output_folder_problem
from fmuia_lib.sources.real import busi, ccaui, ddti, hc18, pocus
from fmuia_lib.sources.real.common import (RealDataError, RealDataset, SourceImage, fill_outline,
                                           mask_box, read_binary_mask, read_source_image, safe_name)
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, SEGMENTATION, TaskSpec, load_manifest

#: The datasets this converter knows, in the order they are converted.
DATASETS: tuple[RealDataset, ...] = (busi.DATASET, hc18.DATASET, ccaui.DATASET, ddti.DATASET,
                                     pocus.DATASET)
PROVENANCE = "provenance.csv"
REPORT = "real_conversion.json"
FILES_LIST = "real_files.txt"
PROVENANCE_COLUMNS = ("task_id", "split", "image_path", "dataset", "original_file",
                      "original_annotation", "licence", "citation")
#: Stratum of images without a label, so they are spread over the split too.
NO_LABEL = "unlabelled"


def dataset_tasks(dataset: RealDataset, manifest: dict[str, TaskSpec]) -> list[TaskSpec]:
    """The manifest tasks fed by ``dataset`` (its ``real_us_folder``), in manifest order.

    Raises when the manifest gives the dataset a task the converter cannot fill.
    """
    tasks = [t for t in manifest.values() if t.real_us_folder == dataset.folder]
    for task in tasks:
        if task.task_type == CLASSIFICATION and task.task_id not in dataset.class_names:
            raise RealDataError(f"manifest: {task.task_id} uses {dataset.folder} but the converter "
                                f"has no class mapping for it")
        if task.task_type in (SEGMENTATION, DETECTION) and dataset.mask_class is None:
            raise RealDataError(f"manifest: {task.task_id} uses {dataset.folder}, which has no masks")
        if task.task_type not in (SEGMENTATION, DETECTION, CLASSIFICATION):
            raise RealDataError(f"manifest: {task.task_id} ({task.task_type}) cannot be made from "
                                f"{dataset.folder}")
    return tasks


def find_datasets(src: Path) -> tuple[list[RealDataset], list[str]]:
    """The known dataset folders present under ``src``, and the names of those absent."""
    found = [d for d in DATASETS if (src / d.folder).is_dir()]
    missing = [d.folder for d in DATASETS if not (src / d.folder).is_dir()]
    return found, missing


def split_images(dataset: RealDataset, items: list[SourceImage], seed: int,
                 val_fraction: float) -> dict[str, str]:
    """``{item key: "train" | "val"}``: one seeded split of the dataset's images that keeps
    each group whole and stratifies by label (``data.sampler.stratified_split``)."""
    from fmuia_lib.data.sampler import stratified_split

    frame = pd.DataFrame({"task_id": dataset.name, "key": [i.key for i in items],
                          "group": [i.group for i in items],
                          "stratum": [i.label or NO_LABEL for i in items]})
    train_rows, val_rows = stratified_split(frame, val_fraction=val_fraction, seed=seed,
                                            group_col="group", label_col="stratum")
    split = {frame["key"].iat[i]: "train" for i in train_rows}
    split.update({frame["key"].iat[i]: "val" for i in val_rows})
    return split


def load_mask(dataset: RealDataset, item: SourceImage, shape: tuple[int, int],
              warnings: list[str]) -> tuple[np.ndarray, bool]:
    """The item's foreground mask (all its annotation files OR-ed) and whether an outline was filled."""
    mask = np.zeros(shape, dtype=bool)
    for path in item.annotations:
        part, warning = read_binary_mask(path)
        if part.shape != shape:
            raise RealDataError(f"{path}: mask is {part.shape[1]}x{part.shape[0]} but its image "
                                f"{item.image.name} is {shape[1]}x{shape[0]} (width x height)")
        if warning:
            warnings.append(warning)
        mask |= part
    if dataset.annotations_may_be_outlines:
        return fill_outline(mask, item.annotations[0])
    return mask, False


def _png_bytes(pixels: np.ndarray) -> bytes:
    """Lossless PNG of ``pixels``; zlib level 3: faster than the default 6, for a few more bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


@dataclass
class _Output:
    """What one conversion wrote: every file (for ``real_files.txt``) and the provenance rows."""

    files: list[Path] = field(default_factory=list)
    provenance: list[dict] = field(default_factory=list)

    def write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.files.append(path)


def _class_counts(task: TaskSpec, targets: list) -> dict[str, int]:
    """Images per class: the label (classification), the classes present in the mask
    (segmentation) or the boxed class (detection)."""
    counts: Counter = Counter()
    for target in targets:
        if task.task_type == CLASSIFICATION:
            counts[task.class_names[target]] += 1
        elif task.task_type == SEGMENTATION:
            counts.update(task.class_names[v] for v in target)
        else:
            counts[task.class_names[0]] += 1
    return {name: counts.get(name, 0) for name in task.class_names}


def _convert_dataset(dataset: RealDataset, src: Path, out: Path, tasks: list[TaskSpec], seed: int,
                     val_fraction: float, writer: _Output, progress: bool) -> tuple[dict, dict]:
    """Convert one dataset into ``writer``; returns (dataset report, per-task report)."""
    collection = dataset.collect(src / dataset.folder)
    items = sorted(collection.items, key=lambda i: i.key)
    if not items:
        raise RealDataError(f"{src / dataset.folder}: no images found")
    names: dict[str, str] = {}
    for item in items:
        name = safe_name(item.key)
        if name in names:
            raise RealDataError(f"{item.image}: its output name {name}.png is also that of {names[name]}")
        names[name] = str(item.image)
    split = split_images(dataset, items, seed, val_fraction)

    warnings: list[str] = []
    skipped = [{"dataset": dataset.name, "task_id": None, "file": _relative(Path(s["file"]), src),
                "reason": s["reason"]} for s in collection.skipped]
    records: dict[tuple[str, str], list[dict]] = {}
    targets: dict[tuple[str, str], list] = {}
    excluded: dict[str, Counter] = {t.task_id: Counter() for t in tasks}
    outlines_filled = 0
    needs_mask = any(t.task_type in (SEGMENTATION, DETECTION) for t in tasks)
    for item in tqdm(items, desc=dataset.name, disable=not progress, leave=False):
        pixels, warning = read_source_image(item.image)
        if warning:
            warnings.append(warning)
        image_png = _png_bytes(pixels)
        mask = None
        if needs_mask:
            mask, was_outline = load_mask(dataset, item, pixels.shape[:2], warnings)
            outlines_filled += was_outline
        root = out / split[item.key]
        file_name = f"{safe_name(item.key)}.png"
        for task in tasks:
            record: dict = {}
            image_file, mask_file = sample_files(root, task, file_name)
            if task.task_type == CLASSIFICATION:
                class_name = dataset.class_names[task.task_id][item.label]
                if class_name is None:
                    excluded[task.task_id][item.label] += 1
                    continue
                record["mask"] = task.class_index(class_name)
                target = record["mask"]
            elif task.task_type == DETECTION:
                box = mask_box(mask)
                if box is None:
                    skipped.append({"dataset": dataset.name, "task_id": task.task_id,
                                    "file": _relative(item.annotations[0], src),
                                    "reason": "empty mask: no box to detect"})
                    continue
                record.update(zip(("x_min", "y_min", "x_max", "y_max"), box))
                target = box
            else:
                classes = np.where(mask, task.class_index(dataset.mask_class),
                                   task.class_index("background")).astype(np.uint8)
                writer.write(mask_file, _png_bytes(classes))
                record["mask_path"] = rel_path(root, mask_file)
                target = np.unique(classes).tolist()
            writer.write(image_file, image_png)
            record["image_path"] = rel_path(root, image_file)
            key = (task.task_id, split[item.key])
            records.setdefault(key, []).append(record)
            targets.setdefault(key, []).append(target)
            writer.provenance.append({
                "task_id": task.task_id, "split": split[item.key], "image_path": record["image_path"],
                "dataset": dataset.name, "original_file": _relative(item.image, src),
                "original_annotation": ";".join(_relative(a, src) for a in item.annotations),
                "licence": item.licence or dataset.licence, "citation": dataset.citation})

    task_report = {}
    for task in tasks:
        entry = {"dataset": dataset.name, "type": task.task_type,
                 "class_mapping": {str(i): name for i, name in enumerate(task.class_names)}}
        for split_name in SPLIT_FOLDERS:
            rows = records.get((task.task_id, split_name), [])
            if rows:
                writer.files.append(write_task_csv(out / split_name, task, rows))
            entry[split_name] = {"images": len(rows),
                                 "classes": _class_counts(task, targets.get((task.task_id, split_name), []))}
        if excluded[task.task_id]:
            entry["excluded_labels"] = dict(sorted(excluded[task.task_id].items()))
        task_report[task.task_id] = entry

    groups = {s: sorted({i.group for i in items if split[i.key] == s}) for s in SPLIT_FOLDERS}
    dataset_report = {
        "folder": dataset.folder, "images": len(items),
        "groups": {s: len(g) for s, g in groups.items()},
        "tasks": [t.task_id for t in tasks], "citation": dataset.citation, "licence": dataset.licence,
        "notes": collection.notes, "warnings": warnings, "skipped": skipped,
    }
    if any(i.label for i in items):
        dataset_report["labels"] = {
            s: dict(sorted(Counter(i.label or NO_LABEL for i in items if split[i.key] == s).items()))
            for s in SPLIT_FOLDERS}
    if dataset.annotations_may_be_outlines:
        dataset_report["outlines_filled"] = outlines_filled
    return dataset_report, task_report


def _write_provenance(out: Path, writer: _Output, manifest: dict[str, TaskSpec]) -> None:
    rows = sorted(writer.provenance,
                  key=lambda r: (manifest[r["task_id"]].index, r["split"], r["image_path"]))
    with (out / PROVENANCE).open("w", newline="", encoding="utf-8") as fh:
        csv_writer = csv.DictWriter(fh, fieldnames=PROVENANCE_COLUMNS, lineterminator="\n")
        csv_writer.writeheader()
        csv_writer.writerows(rows)
    writer.files.append(out / PROVENANCE)


def _remove_previous(out: Path) -> None:
    """Delete the files a previous conversion listed in ``real_files.txt``, then the
    folders that became empty; nothing else in ``out`` is touched."""
    listed = (out / FILES_LIST).read_text(encoding="utf-8").splitlines()
    out_abs = out.resolve()
    folders = set()
    for line in filter(None, listed):
        path = (out / line).resolve()
        if out_abs not in path.parents:
            raise RealDataError(f"{out / FILES_LIST}: {line!r} lies outside {out}; refusing to delete it")
        if path.is_file():
            path.unlink()
        folders.update(p for p in path.parents if out_abs in p.parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RealDataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise RealDataError(f"{out}: not empty; pass overwrite=True (--overwrite) to replace a "
                                f"previous conversion there")
        if not (out / FILES_LIST).is_file():
            raise RealDataError(f"{out}: not empty and holds no previous conversion ({FILES_LIST} "
                                f"missing); refusing to delete anything in it")
        _remove_previous(out)
        for split_name in SPLIT_FOLDERS:
            leftover = out / split_name / CSV_DIR
            if leftover.is_dir() and any(leftover.glob("*.csv")):
                raise RealDataError(f"{leftover}: holds CSV files this converter did not write; "
                                    f"move them away first")
    out.mkdir(parents=True, exist_ok=True)


def _check_arguments(src: Path, out: Path, seed: int, val_fraction: float) -> None:
    """Refuse unusable arguments before anything is read or written: a source that is not
    a folder, an output folder that is, contains or lies inside the source or lies inside
    a data root, a seed or validation share out of range."""
    if not src.is_dir():
        raise RealDataError(f"--src {src}: {'is a file, not a folder' if src.exists() else 'source folder not found'}")
    problem = (output_folder_problem(out, src, name="--out", what="the source folder (--src)")
               or inside_data_root_problem(out, "the conversion"))
    if problem:
        raise RealDataError(problem)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise RealDataError(f"--seed must be an integer in [0, 2**32), not {seed!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise RealDataError(f"--val-fraction must be a number in (0, 1), not {val_fraction!r}")


def convert_real(src: str | Path, out: str | Path, seed: int = 0, val_fraction: float = 0.25,
                 overwrite: bool = False, progress: bool = False) -> dict:
    """Convert every known dataset folder under ``src`` into ``out/train`` and ``out/val``.

    Returns the conversion report (also written to ``out/real_conversion.json``):
    ``found`` / ``missing`` dataset folders, per-dataset counts, notes, warnings and
    skipped files, and per task the class mapping and per-split image and class counts.
    Raises :class:`RealDataError` naming the file on malformed input, when no dataset is
    found, or when ``out`` is not empty and ``overwrite`` is not set.
    """
    src, out = Path(src), Path(out)
    _check_arguments(src, out, seed, val_fraction)
    found, missing = find_datasets(src)
    if not found:
        raise RealDataError(f"{src}: none of the dataset folders "
                            f"{', '.join(d.folder for d in DATASETS)} is there")
    manifest = load_manifest()
    tasks_of = {d.folder: dataset_tasks(d, manifest) for d in found}
    _prepare_out(out, overwrite)

    writer = _Output()
    report: dict = {"src": str(src), "out": str(out), "seed": seed, "val_fraction": val_fraction,
                    "found": [d.folder for d in found], "missing": missing, "datasets": {}, "tasks": {}}
    try:
        for dataset in found:
            dataset_report, task_report = _convert_dataset(
                dataset, src, out, tasks_of[dataset.folder], seed, val_fraction, writer, progress)
            report["datasets"][dataset.name] = dataset_report
            report["tasks"].update(task_report)
        _write_provenance(out, writer, manifest)
        report["tasks"] = dict(sorted(report["tasks"].items(), key=lambda kv: manifest[kv[0]].index))
        report["validation"] = {s: [str(p) for p in validate_root(out / s, manifest)]
                                for s in SPLIT_FOLDERS if (out / s / CSV_DIR).is_dir()}
        writer.files.append(out / REPORT)
        (out / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    finally:  # even after an error, so that --overwrite can clean up what was written
        writer.files.append(out / FILES_LIST)
        listed = sorted({_relative(p, out) for p in writer.files})
        (out / FILES_LIST).write_text("\n".join(listed) + "\n", encoding="utf-8")
    problems = [p for ps in report["validation"].values() for p in ps]
    if problems:
        raise RealDataError(f"{out}: the converted data fails validation ({len(problems)} problems), "
                            f"first: {problems[0]}")
    return report


def citations(root_or_provenance: str | Path) -> list[str]:
    """The distinct citations of the datasets in a conversion, in the order they appear.

    Accepts the conversion folder (holding ``provenance.csv``), one of its data roots
    (``OUT/train``: only that split's datasets), or the ``provenance.csv`` file itself.
    """
    path = Path(root_or_provenance)
    split = None
    if path.is_file():
        table = path
    elif (path / PROVENANCE).is_file():
        table = path / PROVENANCE
    elif (path.parent / PROVENANCE).is_file() and path.name in SPLIT_FOLDERS:
        table, split = path.parent / PROVENANCE, path.name
    else:
        raise FileNotFoundError(f"{path}: no {PROVENANCE} here or in its parent folder")
    with table.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return list(dict.fromkeys(r["citation"] for r in rows if split is None or r["split"] == split))


def format_summary(report: dict) -> str:
    """The report as a short text table: datasets found, per-task counts, what was skipped."""
    lines = [f"found: {', '.join(report['found'])}",
             f"not found: {', '.join(report['missing']) or '-'}", ""]
    lines.append(f"{'task':<20} {'split':<6} {'images':>6}  classes")
    for task_id, entry in report["tasks"].items():
        for split_name in SPLIT_FOLDERS:
            counts = ", ".join(f"{k}={v}" for k, v in entry[split_name]["classes"].items())
            lines.append(f"{task_id:<20} {split_name:<6} {entry[split_name]['images']:>6}  {counts}")
        if "excluded_labels" in entry:
            lines.append(f"{'':<20} excluded by design: {entry['excluded_labels']}")
    for name, d in report["datasets"].items():
        for note in d["notes"]:
            lines.append(f"{name}: {note}")
        for warning in d["warnings"]:
            lines.append(f"{name}: warning: {warning}")
        for s in d["skipped"]:
            lines.append(f"{name}: skipped {s['file']}" + (f" ({s['task_id']})" if s["task_id"] else "")
                         + f": {s['reason']}")
        if "outlines_filled" in d:
            lines.append(f"{name}: {d['outlines_filled']} outline annotations filled")
    return "\n".join(lines)


def real_main(args) -> int:
    """``fmuia data real --src DIR --out ROOT`` (a RealDataError is bad input: ``cli.main``)."""
    report = convert_real(args.src, args.out, seed=args.seed, val_fraction=args.val_fraction,
                          overwrite=args.overwrite, progress=True)
    print(format_summary(report))
    print(f"\nwrote {args.out}/train, {args.out}/val, {PROVENANCE} and {REPORT}")
    return 0
