"""The prepared form of a data root: every image, and mask, once at the training resolution.

Decoding a 500-1200 px PNG and resizing it costs far more than the augmentation that
follows at 256 px (``benchmarks/bench_loader.py`` measures both). The training transform
resizes first and augments after (:class:`~fmuia_lib.data.transforms.JointTransform`), so
the resized sample can be stored once and augmented afresh every epoch with the same
numbers: a cached item equals the decoded one exactly (``tests/test_data_cache.py``).

A cache is a folder of plain numpy files, opened memory-mapped by each process that reads
it (DataLoader workers included: nothing is copied per worker, the pages are shared
through the operating system's file cache)::

    images.npy      uint8  N x S x S x 3   every row's image, resized (antialiased) to S
    masks.npy       uint8  M x S x S       segmentation rows' masks, resized (nearest)
    mask_slot.npy   int64  N               row -> its mask in masks.npy (-1: none)
    orig_size.npy   int64  N x 2           (height, width) on disk
    meta.json       what it was made from: the root, S, the task definitions, and a
                    fingerprint of the CSVs and of every image and mask file (size,
                    modification time); rows are keyed "<csv file>:<line>"

:func:`build_cache` reuses a folder whose ``meta.json`` matches and rebuilds it otherwise
(another root, size, manifest, or any CSV or file changed). The folder must lie outside
every data root (``fmuia data cache --out``; training puts it under its ``out_dir``).
Used by training when ``TrainConfig.data_cache`` is true (off by default: building it is
one extra pass over the data, which pays when the loader, not the model, limits a run),
and by ``fmuia predict --cache DIR``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

#: Bumped when the files' layout or the resizing changes.
CACHE_VERSION = 1
FILES = ("images.npy", "masks.npy", "mask_slot.npy", "orig_size.npy", "meta.json")


class CacheError(ValueError):
    """A cache cannot be made or used as asked; the message says why."""


def _fingerprint(root: Path, frame, size: int, labels: bool, task_hash: str, resize: str) -> str:
    """What the cache's content depends on: root, size, resize, tasks, CSV bytes, every file's size and time."""
    from fmuia_lib.data.layout import csv_files

    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_VERSION, str(root.resolve()), size, labels, task_hash, resize]).encode())
    for csv_file in csv_files(root):
        digest.update(csv_file.name.encode() + b"\0" + csv_file.read_bytes())
    columns = ["image_file"] + (["mask_file"] if labels and "mask_file" in frame.columns else [])
    for column in columns:
        for file in frame[column]:
            if file is None:
                continue
            try:
                stat = os.stat(file)
                digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{file}\0missing\n".encode())
    return digest.hexdigest()


class DataCache:
    """A built cache folder (see the module docstring); arrays are opened lazily, memory-mapped,
    in whichever process reads them first (a pickled cache carries its folder only)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        try:
            self.meta = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CacheError(f"{self.folder} holds no data cache ({err})") from None
        self.size = int(self.meta["image_size"])
        self.rows = {key: i for i, key in enumerate(self.meta["rows"])}
        self._arrays: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r")
                            for name in ("images", "masks", "mask_slot", "orig_size")}
        return self._arrays

    @property
    def nbytes(self) -> int:
        return sum((self.folder / name).stat().st_size for name in FILES)

    def index(self, source: str) -> int:
        """The cache row of a data row (its ``source``, ``"<csv file>:<line>"``)."""
        try:
            return self.rows[source]
        except KeyError:
            raise CacheError(f"row {source} is not in the data cache {self.folder}") from None

    def item(self, source: str) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
        """``(image S x S x 3 uint8, mask S x S uint8 or None, (height, width) on disk)``."""
        arrays = self._open()
        i = self.index(source)
        slot = int(arrays["mask_slot"][i])
        mask = np.array(arrays["masks"][slot]) if slot >= 0 else None
        height, width = (int(v) for v in arrays["orig_size"][i])
        return np.array(arrays["images"][i]), mask, (height, width)


def build_cache(root: str | Path, folder: str | Path, image_size: int, labels: bool = True, manifest=None,
                progress: bool = False, resize: str = "antialias") -> DataCache:
    """The cache of ``root`` at ``image_size`` px in ``folder``, resized as ``resize`` names
    (``data.transforms.build_resize``: the model's own, ``TrainConfig.resize``): reused when its
    ``meta.json`` matches (same root, size, resize, tasks, CSVs and files), else (re)built. ``labels=False`` stores
    images only (prediction). Bad data raises what reading it raises (a ``LayoutError``
    naming the CSV line) and leaves nothing half-made; ``folder`` in or around a data root
    is refused, and so is a folder holding other files."""
    from fmuia_lib.data.dataset import MultiTaskDataset, PredictionDataset
    from fmuia_lib.paths import inside_data_root_problem, output_folder_problem
    from fmuia_lib.tasks import manifest_hash

    root, folder = Path(root), Path(folder)
    for problem in (output_folder_problem(folder, root, name="the data cache"),
                    inside_data_root_problem(folder, "the data cache")):
        if problem:
            raise CacheError(problem)
    dataset = (MultiTaskDataset if labels else PredictionDataset)(root, manifest=manifest)
    fingerprint = _fingerprint(root, dataset.frame, int(image_size), labels,
                               manifest_hash([t.task_id for t in dataset.tasks]), resize)
    if (folder / "meta.json").is_file():
        try:
            cache = DataCache(folder)
            if cache.meta.get("fingerprint") == fingerprint and all((folder / f).is_file() for f in FILES):
                return cache
        except CacheError:
            pass
    if folder.exists():
        if any(p.name not in FILES and not p.name.startswith("building") for p in folder.iterdir()):
            raise CacheError(f"{folder} holds files that are no data cache's; refusing to replace it")
        shutil.rmtree(folder)
    building = folder / f"building-{os.getpid()}"
    building.mkdir(parents=True)
    try:
        _write(dataset, building, folder, int(image_size), labels, fingerprint, root, progress, resize)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)  # nothing half-made is left behind
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return DataCache(folder)


def _write(dataset, building: Path, folder: Path, image_size: int, labels: bool, fingerprint: str, root: Path,
           progress: bool, resize_name: str) -> None:
    """Fill ``building`` with the cache files, then move them into ``folder`` (meta.json last)."""
    import torch
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from fmuia_lib.data.images import ImageReadError, read_image
    from fmuia_lib.data.transforms import build_resize
    from fmuia_lib.data.layout import CSV_DIR, LayoutError, Problem
    from fmuia_lib.progress import tqdm

    size = (image_size, image_size)
    resize = build_resize(size, resize_name)  # JointTransform.resize, the same call
    rows = dataset._rows
    n_masks = sum(1 for r in rows if labels and r.get("mask_file"))
    images = np.lib.format.open_memmap(building / "images.npy", "w+", np.uint8, (len(rows), *size, 3))
    masks = np.lib.format.open_memmap(building / "masks.npy", "w+", np.uint8, (n_masks, *size))
    mask_slot = np.full(len(rows), -1, np.int64)
    orig_size = np.zeros((len(rows), 2), np.int64)
    slot = 0
    for i, row in enumerate(tqdm(rows, desc="data cache", unit="img", disable=not progress)):
        task = dataset.specs[row["task_id"]]
        if labels:
            sample, orig_size[i] = dataset._load_sample(row, task)
            sample = {k: v for k, v in sample.items() if k in ("image", "mask")}
        else:
            try:
                item_image = read_image(row["image_file"])
            except ImageReadError as err:
                where = Problem(f"{CSV_DIR}/{row['csv_file']}", row["csv_line"], row["image_path"], err.reason)
                raise LayoutError(str(where)) from None
            orig_size[i] = item_image.shape[:2]
            sample = {"image": tv_tensors.Image(torch.from_numpy(item_image).permute(2, 0, 1))}
        sample = resize(sample)
        images[i] = sample["image"].as_subclass(torch.Tensor).permute(1, 2, 0).numpy()
        if "mask" in sample:
            values = sample["mask"].as_subclass(torch.Tensor)
            if int(values.max()) > 255:
                raise CacheError(f"{row['source']}: mask values above 255 do not fit the cache's 8 bits")
            masks[slot] = values.numpy().astype(np.uint8)
            mask_slot[i] = slot
            slot += 1
    images.flush(), masks.flush()
    del images, masks
    np.save(building / "mask_slot.npy", mask_slot)
    np.save(building / "orig_size.npy", orig_size)
    meta = {"version": CACHE_VERSION, "root": str(root.resolve()), "image_size": image_size, "labels": labels,
            "fingerprint": fingerprint, "rows": [r["source"] for r in rows]}
    (building / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    for name in FILES:  # meta.json last: a cache cut off while building is never taken as whole
        os.replace(building / name, folder / name)
    building.rmdir()


def cache_main(args) -> int:
    """``fmuia data cache ROOT --out DIR --size S``: build (or check) the prepared form of a root."""
    import time

    start = time.perf_counter()
    cache = build_cache(args.root, args.out, args.size, labels=not args.images_only, progress=True,
                        resize=args.resize)
    print(f"data cache of {args.root} at {cache.size} px: {cache.folder} ({len(cache.rows)} rows, "
          f"{cache.nbytes / 2 ** 20:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    return 0
