"""POCUS: COVID-19 lung ultrasound dataset (Born et al. 2020/2021).

Layout::

    POCUS_lung/pocus_images/{convex,linear}/*.jpg|png        still images
    POCUS_lung/pocus_video_frames/convex/<video>_frame<N>.png  one frame per video
    POCUS_lung/labels.csv            file (relative to POCUS_lung/), class3 (covid,
                                     pneumonia, regular), license (per file; optional)
    POCUS_lung/dataset_metadata.csv  the dataset's own metadata (optional): Filename,
                                     "Patient ID / Name", ...

Several stills and videos show the same patient (or come from one source case). When
``dataset_metadata.csv`` is present, files sharing a "Patient ID / Name" form one group,
and groups linked through a file are merged, so no patient straddles the split.
Without it, each video (or still) is its own group.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fmuia_lib.sources.real.common import Collection, RealDataError, RealDataset, SourceImage

LABELS = "labels.csv"
METADATA = "dataset_metadata.csv"
CLASSES = ("covid", "pneumonia", "regular")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
_FRAME = re.compile(r"\.(gif|mp4|mov|mpeg|mpg|avi)_frame\d+\.png$", re.IGNORECASE)


def video_or_image_name(path: Path) -> str:
    """The metadata ``Filename`` of a file: ``Cov-Atlas+(44).gif_frame20.png`` -> ``Cov-Atlas+(44)``."""
    name = _FRAME.sub("", path.name)
    return name if name != path.name else path.stem


def read_patient_ids(path: Path) -> dict[str, set[str]]:
    """``{Filename: {patient id, ...}}`` from the dataset's metadata (a name may repeat)."""
    ids: dict[str, set[str]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        for column in ("Filename", "Patient ID / Name"):
            if column not in (reader.fieldnames or []):
                raise RealDataError(f"{path}: column {column!r} missing")
        for row in reader:
            name, patient = (row["Filename"] or "").strip(), (row["Patient ID / Name"] or "").strip()
            if name and patient:
                ids.setdefault(name, set()).add(patient)
    return ids


def merge_groups(links: list[set[str]]) -> list[str]:
    """One group name per item, merging items that share any link (connected components)."""
    names = sorted(set().union(*links)) if links else []
    index = {name: i for i, name in enumerate(names)}
    rows = [i for i, item_links in enumerate(links) for _ in item_links]
    cols = [len(links) + index[name] for item_links in links for name in sorted(item_links)]
    size = len(links) + len(names)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    # name each merged group after its smallest link, so names do not depend on file order
    name_of: dict[int, str] = {}
    for item_links, comp in zip(links, component):
        name_of[comp] = min(name_of.get(comp, min(item_links)), min(item_links))
    return [name_of[comp] for comp in component[:len(links)]]


def collect(folder: Path) -> Collection:
    """Every image listed in ``labels.csv``, with its class, licence and patient group."""
    labels_file = folder / LABELS
    if not labels_file.is_file():
        raise RealDataError(f"{labels_file}: file missing (columns: file, class3[, license])")
    rows = []
    with labels_file.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        for column in ("file", "class3"):
            if column not in (reader.fieldnames or []):
                raise RealDataError(f"{labels_file}: column {column!r} missing")
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            rel, label = (row["file"] or "").strip(), (row["class3"] or "").strip()
            path = folder / rel
            if not rel or not path.is_file():
                raise RealDataError(f"{labels_file}:{line}: file {rel!r} not found in {folder}")
            if label not in CLASSES:
                raise RealDataError(f"{labels_file}:{line}: class3 {label!r} is not one of "
                                    f"{', '.join(CLASSES)}")
            if rel in seen:
                raise RealDataError(f"{labels_file}:{line}: {rel!r} already listed on line {seen[rel]}")
            seen[rel] = line
            rows.append((rel, path, label, (row.get("license") or "").strip() or None))

    notes = []
    metadata_file = folder / METADATA
    if metadata_file.is_file():
        patients = read_patient_ids(metadata_file)
    else:
        patients = {}
        notes.append(f"{METADATA} not found: each video or still is its own split group")
    links = []
    for _, path, _, _ in rows:
        name = video_or_image_name(path)
        links.append({f"patient {p}" for p in patients.get(name, ())} or {f"file {name}"})
    groups = merge_groups(links)
    items = [SourceImage(key=Path(rel).stem, image=path, label=label, group=group, licence=licence)
             for (rel, path, label, licence), group in zip(rows, groups)]

    listed = {path.resolve() for _, path, _, _ in rows}
    skipped = [{"file": p, "reason": f"image not listed in {LABELS} (no class)"}
               for p in sorted(folder.rglob("*"))
               if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() not in listed]
    return Collection(items=items, skipped=skipped, notes=notes)


DATASET = RealDataset(
    folder="POCUS_lung",
    name="POCUS",
    citation=("Born J, et al. POCOVID-Net: automatic detection of COVID-19 from a new lung "
              "ultrasound imaging dataset (POCUS). arXiv:2004.12084 (2020); Born J, et al. "
              "Accelerating detection of lung pathologies with explainable ultrasound image "
              "analysis. Applied Sciences 11(2):672 (2021)"),
    licence="per file (see labels.csv / dataset_metadata.csv)",
    collect=collect,
    class_names={
        "lung_disease_3cls": {"covid": "covid", "pneumonia": "pneumonia", "regular": "regular"},
        "lung_2cls": {"covid": "abnormal", "pneumonia": "abnormal", "regular": "regular"},
    },
)
