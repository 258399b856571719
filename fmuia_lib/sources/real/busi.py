"""BUSI: breast ultrasound images with lesion masks (Al-Dhabyani et al. 2020).

Original layout::

    BUSI/<class>/<class> (N).png             the image; <class> in benign, malignant, normal
    BUSI/<class>/<class> (N)_mask.png        its lesion mask (0/1 or 0/255)
    BUSI/<class>/<class> (N)_mask_1.png      a further lesion of the same image (OR-ed in)

Normal images come with an all-zero mask. There is no patient identifier, so the image
(with all its masks) is the unit of the train/val split.
"""
from __future__ import annotations

import re
from pathlib import Path

from fmuia_lib.sources.real.common import Collection, RealDataError, RealDataset, SourceImage, check_pairs

CLASSES = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+?)_mask(?:_\d+)?\.png$", re.IGNORECASE)


def collect(folder: Path) -> Collection:
    """Every image of ``folder`` (``BUSI/``) with its masks; the class is the sub-folder."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p for p in class_dirs if p.name not in CLASSES]
    if unknown:
        raise RealDataError(f"{unknown[0]}: unknown BUSI class folder {unknown[0].name!r}; "
                            f"expected {', '.join(CLASSES)}")
    if not class_dirs:
        raise RealDataError(f"{folder}: no class folders ({', '.join(CLASSES)})")
    items = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        masks: dict[str, list[Path]] = {}
        images: dict[str, Path] = {}
        for path in files:
            if path.suffix.lower() != ".png":
                raise RealDataError(f"{path}: not a PNG image or mask")
            match = _MASK.match(path.name)
            if match:
                masks.setdefault(match["stem"], []).append(path)
            else:
                images[path.stem] = path
        check_pairs(images, masks, lambda stem: f"{stem}.png", lambda stem: f"{stem}_mask.png")
        for stem, image in images.items():
            items.append(SourceImage(key=stem, image=image, annotations=tuple(sorted(masks[stem])),
                                     label=class_dir.name, group=stem))
    return Collection(items=items)


DATASET = RealDataset(
    folder="BUSI",
    name="BUSI",
    citation=("Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
              "Data in Brief 28:104863 (2020). doi:10.1016/j.dib.2019.104863"),
    licence="free for research with citation (no licence file; Kaggle mirror: CC0 1.0)",
    collect=collect,
    mask_class="lesion",
    class_names={
        "breast_3cls": {"normal": "normal", "benign": "benign", "malignant": "malignant"},
        "breast_2cls": {"normal": None, "benign": "benign", "malignant": "malignant"},
    },
)
