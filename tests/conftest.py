"""Shared fixtures: a tiny, valid data root in the challenge layout.

``make_root(tmp_path, tasks=[...], n=4)`` writes ``n`` small synthetic images per task
(grayscale and RGB, PNG and JPEG, a few sizes) with one bright blob each, and the
matching annotation: a mask of the blob (nested blobs for more classes), a label, the
blob's box, or bright dots at the landmarks. CSVs are written with
``layout.write_task_csv``, so the root is exactly what the phantom and converters make.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fmuia_lib.data.layout import rel_path, sample_files, write_task_csv
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, load_manifest

torch.set_num_threads(1)

#: Two tasks of each type, covering 2..4 segmentation classes and 2..3 landmarks.
DEFAULT_TASKS = ("breast_lesion", "cardiac_multi", "organ_cls", "fetal_head_pos_cls",
                 "thyroid_nodule_det", "uterine_fibroid_det", "FUGC", "IUGC")


def _synthetic_sample(task, i: int, rng: np.random.Generator, scale: int = 1):
    """(image H x W uint8, annotation record fields, mask or None) for sample ``i`` of ``task``."""
    h, w = scale * (40 + 4 * (i % 3)), scale * (56 + 8 * (i % 2))
    image = rng.integers(0, 50, (h, w), dtype=np.uint8)
    cx, cy = int(rng.integers(w // 3, 2 * w // 3)), int(rng.integers(h // 3, 2 * h // 3))
    ax, ay = int(rng.integers(6, w // 4)), int(rng.integers(5, h // 4))
    cv2.ellipse(image, (cx, cy), (ax, ay), 0, 0, 360, 230, -1)
    fields: dict = {}
    mask = None
    if task.task_type == SEGMENTATION:
        mask = np.zeros((h, w), np.uint8)
        for k in range(1, task.num_classes):  # nested blobs: class k inside class k-1
            shrink = 1 - (k - 1) / task.num_classes
            cv2.ellipse(mask, (cx, cy), (max(1, int(ax * shrink)), max(1, int(ay * shrink))), 0, 0, 360, k, -1)
    elif task.task_type == CLASSIFICATION:
        fields["mask"] = i % task.num_classes
    elif task.task_type == DETECTION:
        fields.update(x_min=cx - ax, y_min=cy - ay, x_max=cx + ax + 1, y_max=cy + ay + 1)
    elif task.task_type == REGRESSION:
        points = [[float(rng.integers(4, w - 4)), float(rng.integers(4, h - 4))] for _ in range(task.num_classes)]
        for x, y in points:
            cv2.circle(image, (int(x), int(y)), 2, 255, -1)
        fields["points"] = points
    return image, fields, mask


def make_root(tmp_path: Path, tasks=DEFAULT_TASKS, n: int = 4, seed: int = 0, name: str = "data",
              scale: int = 1) -> Path:
    """Write a valid data root ``tmp_path/name`` with ``n`` samples for each task id in ``tasks``.

    Images are about 40 x 56 pixels, times ``scale``.
    """
    manifest = load_manifest()
    root = Path(tmp_path) / name
    rng = np.random.default_rng(seed)
    for task_id in tasks:
        task = manifest[task_id]
        records = []
        for i in range(n):
            image, fields, mask = _synthetic_sample(task, i, rng, scale)
            ext = ".jpg" if (i % 3 == 2 and task.task_type != SEGMENTATION) else ".png"
            image_file, mask_file = sample_files(root, task, f"{task_id}_{i:03d}{ext}")
            image_file.parent.mkdir(parents=True, exist_ok=True)
            if i % 2:  # odd samples are RGB (stored as BGR by OpenCV), even ones grayscale
                image = np.dstack([image, image // 2, image])
            cv2.imwrite(str(image_file), image)
            record = {"image_path": rel_path(root, image_file), **fields}
            if mask is not None:
                mask_file.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(mask_file), mask)
                record["mask_path"] = rel_path(root, mask_file)
            records.append(record)
        write_task_csv(root, task, records)
    return root


@pytest.fixture(name="make_root")
def make_root_fixture():
    """The :func:`make_root` builder: ``make_root(tmp_path, tasks=[...], n=4)``."""
    return make_root


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A shared, read-only valid root with the default tasks (do not modify it in tests)."""
    return make_root(tmp_path_factory.mktemp("shared"), n=6)


def label_free_copy(root: Path, dest: Path, keep_mask_path: bool = False) -> Path:
    """A copy of data root ``root`` as a test set comes: CSVs with the four common columns
    only (plus ``mask_path`` with ``keep_mask_path``) and no masks folders."""
    import csv
    import shutil

    columns = ["image_path", "task_id", "task_name", "num_classes"] + (["mask_path"] if keep_mask_path else [])
    (dest / "csv_files").mkdir(parents=True)
    for csv_file in sorted((root / "csv_files").glob("*.csv")):
        with csv_file.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        present = [c for c in columns if c in rows[0]]
        with (dest / "csv_files" / csv_file.name).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, present, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    shutil.copytree(root, dest, dirs_exist_ok=True,
                    ignore=lambda folder, names: [n for n in names if n in ("masks", "csv_files")])
    return dest


#: The model every training test uses: the ci-tiny profile's, timm's LCNet-0.5 (0.5 M
#: parameters with the FPN at 64/32 channels, 2 MB a checkpoint): a test trains for its code
#: path, not for a result, and a ResNet-18 made each checkpoint 25x larger and each step 2x slower.
def _tiny_model() -> dict:
    from fmuia_lib.profiles import load_profile

    train = load_profile("ci-tiny").train
    return {k: train[k] for k in ("encoder", "encoder_weights", "fpn_pyramid_channels", "fpn_segmentation_channels")}


TINY_MODEL = _tiny_model()

#: One task of each type (segmentation with 4 classes), for the trained fixtures.
RUN_TASKS = ["cardiac_multi", "organ_cls", "thyroid_nodule_det", "IUGC"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``(phantom val root, trained checkpoint)``: 4 phantom subtasks, the fmuia recipe with
    the tiny model at 64 px, 4 training steps on CPU (seconds). Read-only for the tests."""
    from fmuia_lib.config import TrainConfig
    from fmuia_lib.sources.phantom import generate_phantom
    from fmuia_lib.switches import FMUIA_RECIPE
    from fmuia_lib.training import train

    base = tmp_path_factory.mktemp("tiny_run")
    generate_phantom(base / "phantom", seed=0, n_train=4, n_val=4, tasks=RUN_TASKS, workers=1)
    config = TrainConfig.from_dict(dict(
        data_root=str(base / "phantom" / "train"), val_root=str(base / "phantom" / "val"),
        switches=list(FMUIA_RECIPE), epochs=None, **TINY_MODEL, image_size=64,
        batch_size=2, max_steps=4, eval_every=4, num_workers=0, device="cpu", out_dir=str(base / "run"), seed=1))
    result = train(config, progress=False)
    return base / "phantom" / "val", result.last_checkpoint
