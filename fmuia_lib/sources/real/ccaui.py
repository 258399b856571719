"""CCAUI: Common Carotid Artery Ultrasound Images (Momot 2022).

Original layout::

    CCAUI_carotid/US images/<subject>VAS_slice_<n>.png            the image (longitudinal B-mode)
    CCAUI_carotid/Expert mask images/<subject>VAS_slice_<n>.png   its artery mask, 0/255

Many frames come from one recording of one subject; the file-name prefix before
``VAS`` identifies the subject, and a subject's frames all go to one split.
"""
from __future__ import annotations

from pathlib import Path

from fmuia_lib.sources.real.common import Collection, RealDataError, RealDataset, SourceImage, check_pairs

IMAGE_DIR = "US images"
MASK_DIR = "Expert mask images"


def _pngs(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise RealDataError(f"{folder}: folder missing")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    for path in files:
        if path.suffix.lower() != ".png":
            raise RealDataError(f"{path}: not a PNG file")
    return {p.name: p for p in files}


def collect(folder: Path) -> Collection:
    """Every image of ``CCAUI_carotid/US images`` with its expert mask."""
    images = _pngs(folder / IMAGE_DIR)
    masks = _pngs(folder / MASK_DIR)
    check_pairs(images, masks, lambda name: f"{IMAGE_DIR}/{name}", lambda name: f"{MASK_DIR}/{name}")
    items = []
    for name, path in images.items():
        if "VAS" not in name:
            raise RealDataError(f"{path}: no 'VAS' in the file name, so no subject prefix")
        items.append(SourceImage(key=path.stem, image=path, annotations=(masks[name],),
                                 group=name.split("VAS", 1)[0]))
    return Collection(items=items)


DATASET = RealDataset(
    folder="CCAUI_carotid",
    name="CCAUI",
    citation=("Momot A. Common Carotid Artery Ultrasound Images. Mendeley Data, V1 (2022). "
              "doi:10.17632/d4xt63mgjm.1"),
    licence="CC BY 4.0 (Mendeley Data record)",
    collect=collect,
    mask_class="carotid_artery",
)
