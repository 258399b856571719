"""Throughput of the data pipeline: ``validate_root`` and Dataset + DataLoader at 128 px.

Uses the phantom's training root (``runs/phantom/train``) when it exists, otherwise
writes a synthetic root with the test suite's builder (images about 280 x 390 px).
Prints figures only::

    python benchmarks/bench_data_pipeline.py [--root ROOT] [--size 128] [--epochs 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fmuia_lib.data.dataset import MultiTaskDataset, collate
from fmuia_lib.data.layout import validate_root
from fmuia_lib.data.sampler import TaskBatchSampler
from fmuia_lib.data.transforms import build_transforms

REPO = Path(__file__).resolve().parents[1]


def default_root(tmp: str) -> Path:
    phantom = REPO / "runs" / "phantom" / "train"
    if (phantom / "csv_files").is_dir():
        return phantom
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_root  # the synthetic-root builder of the tests

    return make_root(Path(tmp), n=24, scale=7)


def images_per_second(dataset: MultiTaskDataset, workers: int, epochs: int, batch_size: int) -> float:
    sampler = TaskBatchSampler(dataset.task_indices, batch_size=batch_size, strategy="uniform", seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                        persistent_workers=workers > 0)
    next(iter(loader))  # start workers, warm caches
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            count += batch["image"].shape[0]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else default_root(tmp)
        start = time.perf_counter()
        problems = validate_root(root)
        seconds = time.perf_counter() - start
        dataset = MultiTaskDataset(root, transforms=build_transforms(args.size, train=True))
        print(f"root: {root} ({len(dataset)} rows, {len(dataset.tasks)} tasks)")
        print(f"validate_root: {len(dataset) / seconds:.0f} rows/s ({len(problems)} problems)")
        for workers in (0, 2):
            rate = images_per_second(dataset, workers, args.epochs, args.batch_size)
            print(f"Dataset+DataLoader, {args.size} px, train transforms, {workers} workers: {rate:.0f} images/s")


if __name__ == "__main__":
    main()
