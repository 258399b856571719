"""DDTI: Digital Database Thyroid Image (Pedraza et al. 2015), one crop per nodule.

Layout (the widely used preprocessed release: one 300 x 300 crop per nodule)::

    DDTI/cropped/<stem>.png     grayscale crop; stem "139_1(2)" = patient 139, image 1, nodule 2
    DDTI/mask/<stem>.gif        its nodule mask, 0/255 (GIF, read with PIL)
    DDTI/diagnosis.csv          no header: stem, TI-RADS, binary label (0 = TI-RADS 2-3,
                                1 = 4a-5; blank = unlabelled)

The segmentation and detection targets come from the mask alone, so an image without a
diagnosis label is still converted; the label only stratifies the split ("unlabelled"
is its own stratum) and every unlabelled image is listed in the conversion report.
A patient's crops all go to one split.
"""
from __future__ import annotations

import csv
from pathlib import Path

from fmuia_lib.sources.real.common import Collection, RealDataError, RealDataset, SourceImage, check_pairs

IMAGE_DIR = "cropped"
MASK_DIR = "mask"
DIAGNOSIS = "diagnosis.csv"
LABELS = ("0", "1")


def read_diagnosis(path: Path) -> dict[str, str | None]:
    """``{stem: "0" | "1" | None}`` from ``diagnosis.csv``; errors name the line."""
    labels: dict[str, str | None] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != 3:
                raise RealDataError(f"{path}:{line}: expected 3 fields (stem, TI-RADS, label), "
                                    f"got {len(row)}")
            stem, label = row[0].strip(), row[2].strip()
            if label not in (*LABELS, ""):
                if line == 1:  # a header row
                    continue
                raise RealDataError(f"{path}:{line}: label {label!r} is not 0, 1 or blank")
            if stem in labels:
                raise RealDataError(f"{path}:{line}: {stem!r} is listed twice")
            labels[stem] = label or None
    return labels


def collect(folder: Path) -> Collection:
    """Every crop of ``DDTI/cropped`` with its GIF mask and diagnosis label."""
    for sub in (IMAGE_DIR, MASK_DIR):
        if not (folder / sub).is_dir():
            raise RealDataError(f"{folder / sub}: folder missing")
    diagnosis_file = folder / DIAGNOSIS
    if not diagnosis_file.is_file():
        raise RealDataError(f"{diagnosis_file}: file missing")
    labels = read_diagnosis(diagnosis_file)

    def files(sub: str, suffix: str) -> dict[str, Path]:
        found = {}
        for path in sorted((folder / sub).iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() != suffix:
                raise RealDataError(f"{path}: expected a {suffix} file")
            found[path.stem] = path
        return found

    images, masks = files(IMAGE_DIR, ".png"), files(MASK_DIR, ".gif")
    check_pairs(images, masks, lambda stem: f"{IMAGE_DIR}/{stem}.png", lambda stem: f"{MASK_DIR}/{stem}.gif")
    items, unlabelled = [], []
    for stem, path in images.items():
        label = labels.get(stem)
        if label is None:
            unlabelled.append(stem)
        items.append(SourceImage(key=stem, image=path, annotations=(masks[stem],), label=label,
                                 group=stem.split("_", 1)[0]))
    notes = []
    if unlabelled:
        notes.append(f"{len(unlabelled)} crops have no diagnosis label in {DIAGNOSIS} (converted: "
                     f"the targets come from the mask; split as stratum 'unlabelled'): "
                     f"{', '.join(unlabelled)}")
    absent = sorted(set(labels) - set(images))
    if absent:
        notes.append(f"{len(absent)} rows of {DIAGNOSIS} name no crop in {IMAGE_DIR}/ "
                     f"(not part of this copy)")
    return Collection(items=items, notes=notes)


DATASET = RealDataset(
    folder="DDTI",
    name="DDTI",
    citation=("Pedraza L, Vargas C, Narvaez F, Duran O, Munoz E, Romero E. An open access thyroid "
              "ultrasound image database. Proc. SPIE 9287, 10th Int. Symp. Medical Information "
              "Processing and Analysis (2015). doi:10.1117/12.2073532"),
    licence="open access for research with citation (no explicit licence)",
    collect=collect,
    mask_class="nodule",
)
