"""Training and validation sets, the split between them, the batch sampler and loaders.

* ``val_root`` given: training rows from ``data_root``, validation rows from ``val_root``.
* Otherwise ``data_root`` is split (``config.split``): ``"random"`` is the baseline's
  ``random_split`` of all rows, seeded by ``config.seed``, ``int(N * val_fraction)`` rows
  to validation in the permutation's order (``data.sampler.random_split_indices``);
  ``"stratified"`` splits every task separately, by class (``data.sampler.stratified_split``).
* The sampler (``config.sampler``): ``"official"`` is the baseline's
  (``data.sampler.OfficialTaskSampler``), the others fmuia's ``TaskBatchSampler``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fmuia_lib.config import ConfigError, TrainConfig
from fmuia_lib.data.dataset import MultiTaskDataset, collate
from fmuia_lib.data.layout import read_root
from fmuia_lib.data.sampler import OfficialTaskSampler, TaskBatchSampler, random_split_indices, stratified_split
from fmuia_lib.data.transforms import build_transforms
from fmuia_lib.tasks import TaskSpec, load_manifest


def build_datasets(config: TrainConfig) -> tuple[MultiTaskDataset, MultiTaskDataset, list[TaskSpec]]:
    """Training and validation sets (``val_root``, or a seeded split of ``data_root``) and the
    tasks the model gets heads for (those in the training data, in manifest order)."""
    if config.data_root is None:
        raise ConfigError("data_root is not set: give the folder that holds csv_files/")
    manifest = load_manifest(config.manifest)
    train_tf = build_transforms(config.image_size, train=True, augment=config.augment)
    val_tf = build_transforms(config.image_size, train=False)
    if config.val_root is not None:
        train_set = MultiTaskDataset(config.data_root, transforms=train_tf, tasks=config.tasks, manifest=manifest)
        val_set = MultiTaskDataset(config.val_root, transforms=val_tf, tasks=config.tasks, manifest=manifest)
    else:
        if config.val_fraction <= 0:
            raise ConfigError("no validation data: set val_root, or val_fraction > 0")
        frame = read_root(config.data_root, manifest)
        if config.tasks is not None:
            frame = frame[frame["task_id"].isin(config.tasks)].reset_index(drop=True)
        if config.split == "random":
            train_idx, val_idx = random_split_indices(len(frame), config.val_fraction, config.seed)
        else:
            label_col = "mask" if "mask" in frame.columns else None  # classification labels
            train_idx, val_idx = stratified_split(frame, val_fraction=config.val_fraction, seed=config.seed,
                                                  label_col=label_col)
        train_set = MultiTaskDataset(frame.iloc[train_idx].reset_index(drop=True), transforms=train_tf,
                                     tasks=config.tasks, manifest=manifest)
        val_set = MultiTaskDataset(frame.iloc[val_idx].reset_index(drop=True), transforms=val_tf,
                                   tasks=config.tasks, manifest=manifest)
    tasks = list(train_set.tasks)
    if config.tasks is not None:
        absent = sorted(set(config.tasks) - {t.task_id for t in tasks})
        if absent:
            raise ConfigError(f"tasks {absent} have no training images in {config.data_root}")
    no_val = [t.task_id for t in tasks if not val_set.task_indices.get(t.task_id)]
    if no_val and config.validation == "whole_set":
        raise ConfigError(f"tasks {no_val} have no validation images; whole-set validation scores every "
                          "trained task")
    return train_set, val_set, tasks


def build_sampler(config: TrainConfig, train_set: MultiTaskDataset) -> Sampler[list[int]]:
    """The batch sampler ``config.sampler`` names, seeded by ``config.seed``."""
    if config.sampler == "official":
        return OfficialTaskSampler(train_set.task_indices, config.batch_size, seed=config.seed)
    return TaskBatchSampler(train_set.task_indices, config.batch_size, strategy=config.sampler,
                            temperature=config.sampler_temperature, seed=config.seed)


def _loader(dataset: Dataset, batch_sampler: Any, num_workers: int, seed: int, device: torch.device) -> DataLoader:
    """A DataLoader whose worker seeds come from its own generator, not the global RNG."""
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=num_workers,
                      pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))


