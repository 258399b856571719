"""Building blocks shared by the dataset converters: what a source image is, how
images and annotation masks are read, and how a mask becomes class indices or a box.

Every function that reads a file names that file in its error, so a broken download
is found at once instead of surfacing later as a strange training curve.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

#: An outline annotation encloses far more area than it draws: a 2-pixel ellipse
#: outline around a 100 x 60 pixel head draws ~5 % of the area it encloses. A filled
#: annotation gains (almost) nothing from hole filling. Anything whose filled area is at
#: least this many times its drawn area is treated as an outline and filled.
OUTLINE_AREA_RATIO = 2.0


class RealDataError(ValueError):
    """A source dataset cannot be converted; the message names the file (and line) and problem."""


@dataclass(frozen=True)
class SourceImage:
    """One image of a public dataset, with everything the conversion needs to know.

    ``key`` identifies the image within its dataset and becomes the output file name
    (after :func:`safe_name`). ``group`` is the unit that must not straddle train and val
    (a patient, a subject, or the image itself). ``label`` is the dataset's own class
    name for the image (``None`` when the dataset has no image-level label); it drives
    the classification targets and stratifies the split.
    """

    key: str
    image: Path
    annotations: tuple[Path, ...] = ()
    label: str | None = None
    group: str = ""
    licence: str | None = None  # per-file licence, when the dataset has one per file


@dataclass
class Collection:
    """What a dataset reader found: the usable images and everything it left out, with why."""

    items: list[SourceImage]
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RealDataset:
    """How to convert one public dataset.

    ``folder`` is the dataset's folder under ``--src`` and the manifest's
    ``real_us_folder``; the manifest decides which tasks it feeds. ``mask_class`` is the
    manifest class name of the annotated structure (segmentation); ``class_names`` maps,
    per classification task, the dataset's label to the manifest class name (``None``:
    the image is not part of that task).
    """

    folder: str
    name: str
    citation: str
    licence: str
    collect: Callable[[Path], Collection]
    mask_class: str | None = None
    class_names: dict[str, dict[str, str | None]] = field(default_factory=dict)
    annotations_may_be_outlines: bool = False


def check_pairs(images: dict[str, Path], annotations: dict[str, Any], image_name: Callable[[str], str],
                annotation_name: Callable[[str], str], annotation: str = "mask") -> None:
    """Refuse an annotation without its image or an image without its annotation (both keyed
    by the same stem; an annotation may be a list of files). ``image_name`` and
    ``annotation_name`` give the expected file of the missing partner from a stem."""
    for stem, found in annotations.items():
        if stem not in images:
            first = found[0] if isinstance(found, (list, tuple)) else found
            raise RealDataError(f"{first}: {annotation} without its image {image_name(stem)}")
    for stem, path in images.items():
        if stem not in annotations:
            raise RealDataError(f"{path}: image without its {annotation} {annotation_name(stem)}")


def safe_name(key: str) -> str:
    """A file-name stem without spaces or brackets: ``"benign (1)"`` -> ``"benign_1"``."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", key).strip("_")


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError) as err:
        raise RealDataError(f"{path}: cannot read the image ({err})") from None
    return img


def read_source_image(path: Path) -> tuple[np.ndarray, str | None]:
    """The image's pixels, unchanged where PNG can hold them, and a warning or ``None``.

    Grayscale stays grayscale (H x W) and colour stays colour (H x W x 3). A palette is
    expanded; an alpha channel is dropped when fully opaque and otherwise composited on
    black (the warning says so). Other modes (16-bit, CMYK, ...) are refused.
    """
    img = _open(path)
    warning = None
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() < 255:
            warning = f"{path}: transparent pixels composited on black"
            base = Image.new(img.mode[:-1], img.size, 0)
            base.paste(img, mask=img.getchannel("A"))
            img = base
        else:
            img = img.convert(img.mode[:-1])
    if img.mode == "1":
        img = img.convert("L")
    if img.mode not in ("L", "RGB"):
        raise RealDataError(f"{path}: unsupported image mode {img.mode!r} (expected grayscale or RGB)")
    return np.asarray(img), warning


def read_binary_mask(path: Path) -> tuple[np.ndarray, str | None]:
    """An annotation file as a boolean foreground mask, and a warning or ``None``.

    Masks come as 0/1 or 0/255, single-channel, RGB or palette (GIF). Colour masks use
    the brightest channel. Other grey values (anti-aliased edges, JPEG noise) are
    thresholded at half the maximum value and reported in the warning.
    """
    img = _open(path)
    if img.mode == "1":
        return np.asarray(img, dtype=bool), None
    if img.mode == "P":
        img = img.convert("L")
    values = np.asarray(img)
    if values.ndim == 3:
        values = values[..., :3].max(axis=2)
    if values.dtype != np.uint8:
        raise RealDataError(f"{path}: unsupported mask mode {img.mode!r} (expected 8-bit)")
    present = np.unique(values)
    if set(present.tolist()) <= {0, 1}:
        return values == 1, None
    if set(present.tolist()) <= {0, 255}:
        return values == 255, None
    threshold = (int(present.max()) + 1) // 2
    shown = ", ".join(map(str, present[:8].tolist())) + (", ..." if present.size > 8 else "")
    return values >= threshold, f"{path}: mask has values {shown}; binarised at >= {threshold}"


def fill_outline(mask: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """Fill an annotation drawn as a closed outline; leave a filled one as it is.

    Returns ``(mask, was_outline)``. The test: hole filling
    (:func:`scipy.ndimage.binary_fill_holes`) of an outline adds many times the drawn
    area, of a filled region almost nothing (see :data:`OUTLINE_AREA_RATIO`). A thin
    drawing that encloses nothing (an outline with a gap) cannot be filled faithfully
    and is refused.
    """
    drawn = int(mask.sum())
    if drawn == 0:
        raise RealDataError(f"{path}: the annotation is empty")
    filled = ndimage.binary_fill_holes(mask)
    if filled.sum() >= OUTLINE_AREA_RATIO * drawn:
        return filled, True
    # Not an enclosing outline: it must be a solid region, i.e. survive a small erosion.
    if ndimage.binary_erosion(mask, iterations=2).sum() < 0.25 * drawn:
        raise RealDataError(f"{path}: the annotation is a thin line that encloses no area "
                            f"(an outline with a gap?); cannot fill it")
    return mask, False


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The bounding box ``(x_min, y_min, x_max, y_max)`` of the foreground, or ``None`` if empty.

    Pixel-edge convention: a foreground spanning columns 10..19 gives ``x_min=10,
    x_max=20``, so ``x_max - x_min`` is the width in pixels and a box covering the whole
    image is ``(0, 0, W, H)``.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
