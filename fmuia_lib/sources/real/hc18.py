"""HC18: fetal head circumference challenge (van den Heuvel et al. 2018).

Original layout::

    HC18/training_set/NNN_HC.png               the image (NNN_2HC.png, NNN_3HC.png: more images)
    HC18/training_set/NNN_HC_Annotation.png    the head annotation
    HC18/training_set_pixel_size_and_HC.csv    pixel size and head circumference (not needed here)

The official release draws each annotation as a thin ellipse OUTLINE; some copies ship
it already filled. :func:`~fmuia_lib.sources.real.common.fill_outline` tells them apart and
fills outlines, so the segmentation target is always the whole head. Images sharing the
number ``NNN`` (``NNN_HC``, ``NNN_2HC``) are kept in one split. ``test_set/`` has no
annotations and is not converted.
"""
from __future__ import annotations

import re
from pathlib import Path

from fmuia_lib.sources.real.common import Collection, RealDataError, RealDataset, SourceImage, check_pairs

_IMAGE = re.compile(r"^(?P<number>\d+)_\d*HC\.png$")
_ANNOTATION = re.compile(r"^(?P<stem>\d+_\d*HC)_Annotation\.png$")


def collect(folder: Path) -> Collection:
    """Every annotated image of ``HC18/training_set``."""
    train_dir = folder / "training_set"
    if not train_dir.is_dir():
        raise RealDataError(f"{train_dir}: folder missing (HC18 keeps its annotated images there)")
    images: dict[str, Path] = {}
    annotations: dict[str, Path] = {}
    skipped = []
    for path in sorted(p for p in train_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        if _IMAGE.match(path.name):
            images[path.stem] = path
        elif match := _ANNOTATION.match(path.name):
            annotations[match["stem"]] = path
        else:
            skipped.append({"file": path, "reason": "not an HC18 image or annotation name"})
    check_pairs(images, annotations, lambda stem: f"{stem}.png", lambda stem: f"{stem}_Annotation.png",
                annotation="annotation")
    items = []
    for stem, path in images.items():
        number = _IMAGE.match(path.name)["number"]
        items.append(SourceImage(key=stem, image=path, annotations=(annotations[stem],),
                                 group=number))
    return Collection(items=items, skipped=skipped)


DATASET = RealDataset(
    folder="HC18",
    name="HC18",
    citation=("van den Heuvel TLA, de Bruijn D, de Korte CL, van Ginneken B. Automated measurement "
              "of fetal head circumference using 2D ultrasound images. PLoS ONE 13(8):e0200412 "
              "(2018). Data: Zenodo doi:10.5281/zenodo.1327317"),
    licence="CC BY 4.0 (Zenodo record)",
    collect=collect,
    mask_class="fetal_head",
    annotations_may_be_outlines=True,
)
