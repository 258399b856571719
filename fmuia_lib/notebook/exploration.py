"""What notebook 01 measures on data roots: classes per task and image sizes, side by side.

Inputs are ``{label: table}`` mappings of :func:`fmuia_lib.data.layout.read_root` tables
(e.g. ``{"phantom": ..., "real slice": ...}``), so one call compares data sources. The
``*_findings`` functions turn the tables into sentences, so that what the notebook says
about balance and sizes is computed from the data it shows.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from fmuia_lib.data.dataset import image_size, load_mask
from fmuia_lib.tasks import CLASSIFICATION, SEGMENTATION, TaskSpec

#: The "class" of a segmentation image whose mask holds background only.
EMPTY = "(empty mask)"


def class_counts(frames: Mapping[str, pd.DataFrame], tasks: Mapping[str, TaskSpec]) -> pd.DataFrame:
    """Images per class, for the classification and segmentation tasks of every table.

    Classification: images labelled with each class (shares sum to 1). Segmentation:
    images whose mask contains each foreground class, and images with an empty mask
    (:data:`EMPTY`); an image can hold several classes. Columns: data, task_id,
    task_type, class_name, images, share (of the task's images in that table).
    """
    rows = []
    for label, frame in frames.items():
        for task_id, part in frame.groupby("task_id", sort=False):
            task = tasks[task_id]
            if task.task_type == CLASSIFICATION:
                counts = part["target"].astype(int).value_counts().reindex(range(task.num_classes), fill_value=0)
                named = dict(zip(task.class_names, counts.tolist()))
            elif task.task_type == SEGMENTATION:
                present, empty = np.zeros(task.num_classes, dtype=int), 0
                for mask_file in part["mask_file"]:
                    values = np.unique(load_mask(mask_file))
                    foreground = values[(values > 0) & (values < task.num_classes)]
                    present[foreground] += 1
                    empty += not foreground.size
                named = {**dict(zip(task.class_names[1:], present[1:].tolist())), EMPTY: empty}
            else:
                continue
            for name, images in named.items():
                rows.append({"data": label, "task_id": task_id, "task_type": task.task_type, "class_name": name,
                             "images": int(images), "share": images / len(part)})
    return pd.DataFrame(rows, columns=["data", "task_id", "task_type", "class_name", "images", "share"])


def balance_findings(counts: pd.DataFrame) -> list[str]:
    """Sentences per task of :func:`class_counts`, every data source in one sentence:
    classification, the majority class and its share (with the smallest class);
    segmentation, the share of empty masks and of images holding each class."""
    lines = []
    for task_id, part in counts.groupby("task_id", sort=False):
        parts = []
        for label, own in part.groupby("data", sort=False):
            total = int(round(own["images"].iloc[0] / own["share"].iloc[0])) if own["share"].iloc[0] else None
            if own["task_type"].iloc[0] == CLASSIFICATION:
                top, low = own.iloc[own["share"].to_numpy().argmax()], own.iloc[own["share"].to_numpy().argmin()]
                ratio = f"{top['images'] / low['images']:.1f}:1" if low["images"] else "inf: a class is absent"
                parts.append(f"{label}: {top['class_name']} {top['share']:.0%} of {own['images'].sum()} images, "
                             f"{low['class_name']} {low['share']:.0%} (ratio {ratio})")
            else:
                empty = own[own["class_name"] == EMPTY].iloc[0]
                classes = own[own["class_name"] != EMPTY]
                parts.append(f"{label}: empty masks {empty['share']:.0%}; "
                             + ", ".join(f"{r.class_name} in {r.share:.0%}" for r in classes.itertuples())
                             + ("" if total is None else f" of {total} images"))
        lines.append(f"{task_id}: " + "; ".join(parts) + ".")
    sources = list(dict.fromkeys(counts["data"]))
    if len(sources) == 2:
        lines.append(_compare_balance(counts, *sources))
    return lines


def _imbalance(own: pd.DataFrame) -> float:
    """Majority-to-minority ratio of a classification task (inf when a class is absent)."""
    low = own["images"].min()
    return float(own["images"].max() / low) if low else float("inf")


def _compare_balance(counts: pd.DataFrame, a: str, b: str) -> str:
    """Which tasks are more imbalanced in ``a`` than in ``b`` and the reverse; which have empty masks."""
    more = {a: [], b: []}
    for task_id, part in counts[counts["task_type"] == CLASSIFICATION].groupby("task_id", sort=False):
        ratios = {label: _imbalance(own) for label, own in part.groupby("data", sort=False)}
        if len(ratios) == 2 and ratios[a] != ratios[b]:
            more[a if ratios[a] > ratios[b] else b].append(task_id)
    empties = counts[(counts["class_name"] == EMPTY) & (counts["images"] > 0)]
    with_empty = {label: sorted(set(empties.loc[empties["data"] == label, "task_id"])) for label in (a, b)}
    return (f"Classes are more imbalanced in {a} for {len(more[a])} task(s) ({', '.join(more[a]) or 'none'}) "
            f"and in {b} for {len(more[b])} ({', '.join(more[b]) or 'none'}); segmentation tasks with empty masks: "
            f"{a} {', '.join(with_empty[a]) or 'none'}, {b} {', '.join(with_empty[b]) or 'none'}.")


def image_sizes(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Height and width on disk of every image: columns data, task_id, task_type, height, width."""
    rows = []
    for label, frame in frames.items():
        for row in frame.itertuples():
            height, width = image_size(row.image_file)
            rows.append({"data": label, "task_id": row.task_id, "task_type": row.task_name,
                         "height": height, "width": width})
    return pd.DataFrame(rows, columns=["data", "task_id", "task_type", "height", "width"])


def size_table(sizes: pd.DataFrame) -> pd.DataFrame:
    """Per data source and task: images, min / median / max of width and height, distinct sizes."""
    keyed = sizes.assign(size=[f"{h}x{w}" for h, w in zip(sizes["height"], sizes["width"])])
    return keyed.groupby(["data", "task_id"], sort=False).agg(
        images=("width", "size"), width_min=("width", "min"), width_median=("width", "median"),
        width_max=("width", "max"), height_min=("height", "min"), height_median=("height", "median"),
        height_max=("height", "max"), distinct_sizes=("size", "nunique"))


def size_findings(sizes: pd.DataFrame) -> list[str]:
    """One sentence per data source: the range of widths, heights and aspect ratios
    (width / height), with the largest-to-smallest ratio of image areas."""
    lines = []
    for label, part in sizes.groupby("data", sort=False):
        aspect = part["width"] / part["height"]
        area = part["width"] * part["height"]
        lines.append(f"{label}: {len(part)} images, widths {part['width'].min()}-{part['width'].max()} px, "
                     f"heights {part['height'].min()}-{part['height'].max()} px, aspect ratios "
                     f"{aspect.min():.2f}-{aspect.max():.2f}; the largest image has {area.max() / area.min():.1f}x "
                     f"the pixels of the smallest.")
    return lines
