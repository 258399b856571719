"""Render one phantom sample: probe, recipe, B-mode simulation and the label in challenge form."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec
from .physics import make_probe, simulate_bmode
from .recipes import RECIPES
from .shapes import Scene

#: Each image's width and height vary by up to this fraction around the manifest size.
SIZE_JITTER = 0.06
#: Attempts to draw a scene whose label is usable (lesion visible, landmarks in view).
MAX_ATTEMPTS = 20
#: Split codes that enter each image's seed.
SPLIT_CODES = {"train": 0, "val": 1, "sample": 2}
#: Extra seed word of a split's class plan (keeps it apart from every image's generator).
CLASS_PLAN_CODE = 7


class PhantomError(ValueError):
    """The phantom cannot be generated as asked (bad arguments, unknown recipe, output folder)."""


@dataclass
class Sample:
    """One rendered image with its target.

    ``target`` is, by task type: segmentation, the ``H x W`` uint8 class-index mask;
    classification, the class index; detection, ``[x_min, y_min, x_max, y_max]`` in pixels
    (the tight bounds of ``label_map``: max = last pixel + 1); Regression, ``K x 2``
    ``[x, y]`` pixels in class-name order. ``label_map`` is the painted label (the lesion
    for detection) for checks and overlays.
    """

    image: np.ndarray
    target: np.ndarray | int
    label_map: np.ndarray


def image_rng(seed: int, task_id: str, split: str, index: int) -> np.random.Generator:
    """The random generator of one image, derived only from (seed, task, split, index):
    an image is the same whichever process draws it and whichever other tasks are made."""
    return np.random.default_rng(np.random.SeedSequence([seed, _task_key(task_id), SPLIT_CODES[split], index]))


def _task_key(task_id: str) -> int:
    """A stable 32-bit number for a task id (seed material; Python's hash() varies per process)."""
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:4], "little")


def class_plan(task: TaskSpec, seed: int, split: str, count: int) -> list[int]:
    """The classes of a split's ``count`` images of a classification ``task``.

    Each class gets its share of the manifest's ``phantom_class_weights`` (uniform if
    none), rounded by largest remainder, so a split's class mix is the one the manifest
    gives rather than a chance draw (16 independent draws at 0.6/0.4 give 14/2 or worse
    about once in 30 splits); the order is shuffled by ``(seed, task, split)``.
    """
    weights = np.asarray(task.phantom_class_weights or [1.0] * task.num_classes, dtype=np.float64)
    share = weights / weights.sum() * count
    counts = np.floor(share).astype(int)
    by_remainder = sorted(range(task.num_classes), key=lambda c: (-(share[c] - counts[c]), c))
    for c in by_remainder[:count - counts.sum()]:
        counts[c] += 1
    classes = np.repeat(np.arange(task.num_classes), counts)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _task_key(task.task_id), SPLIT_CODES[split],
                                                         CLASS_PLAN_CODE]))
    return [int(c) for c in rng.permutation(classes)]


def render(task: TaskSpec, rng: np.random.Generator, cls: int | None = None) -> Sample:
    """Draw one sample of ``task`` with ``rng``; a classification sample of class ``cls``
    (drawn with the manifest's class weights when None)."""
    try:
        paint = RECIPES[task.phantom_recipe]
    except KeyError:
        raise PhantomError(f"task {task.task_id}: the manifest names phantom_recipe "
                           f"{task.phantom_recipe!r}, which is not one of {sorted(RECIPES)}") from None
    width, height = task.phantom_size
    for _ in range(MAX_ATTEMPTS):
        w = int(round(width * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)))
        h = int(round(height * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)))
        probe = make_probe(task.phantom_probe, w, h, rng)
        scene = Scene(probe, rng)
        if task.task_type == CLASSIFICATION and cls is None:
            cls = _draw_class(task, rng)
        points = paint(scene, rng, cls)
        fov = probe.field_of_view()
        label_map = np.where(fov, scene.label, 0).astype(np.uint8)
        target = _target(task, label_map, fov, cls, points)
        if target is not None:
            image = simulate_bmode(scene.echo, scene.attenuation, scene.specular, probe, rng)
            return Sample(image, target, label_map)
    raise RuntimeError(f"task {task.task_id}: recipe {task.phantom_recipe!r} produced no usable "
                       f"label in {MAX_ATTEMPTS} attempts")


def render_sample(task: TaskSpec, seed: int) -> tuple[np.ndarray, np.ndarray | int]:
    """One ``(image, target)`` of ``task`` for seed ``seed`` (notebooks, tests).

    ``image`` is ``H x W`` uint8; ``target`` as described in :class:`Sample`.
    """
    sample = render(task, image_rng(seed, task.task_id, "sample", 0))
    return sample.image, sample.target


def _draw_class(task: TaskSpec, rng: np.random.Generator) -> int:
    """A class index, drawn with the manifest's ``phantom_class_weights`` (uniform if none)."""
    weights = np.asarray(task.phantom_class_weights or [1.0] * task.num_classes, dtype=np.float64)
    return int(rng.choice(task.num_classes, p=weights / weights.sum()))


def _target(task: TaskSpec, label_map: np.ndarray, fov: np.ndarray, cls: int | None,
            points: np.ndarray | None) -> np.ndarray | int | None:
    """The challenge target of a painted scene, or None when the scene is unusable."""
    if task.task_type == SEGMENTATION:
        # every foreground class must be visible (and not just a sliver)
        counts = np.bincount(label_map.ravel(), minlength=task.num_classes)
        return label_map if counts[1:task.num_classes].min() >= 20 else None
    if task.task_type == CLASSIFICATION:
        return cls
    if task.task_type == DETECTION:
        ys, xs = np.nonzero(label_map)
        if xs.size < 20:
            return None
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
    if task.task_type == REGRESSION:
        pts = np.round(np.asarray(points, dtype=np.float64), 2)
        if pts.shape != (task.num_points, 2):
            raise RuntimeError(f"task {task.task_id}: recipe returned {pts.shape} points, "
                               f"expected ({task.num_points}, 2)")
        h, w = fov.shape
        cols, rows = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
        if ((cols < 0) | (cols >= w) | (rows < 0) | (rows >= h)).any():
            return None
        return pts if fov[rows, cols].all() else None  # landmarks must be in the field of view
    raise ValueError(f"unknown task type {task.task_type!r}")
