"""Training and validation sets, the split between them, the batch sampler and loaders.

* ``val_root`` given: training rows from ``data_root``, validation rows from ``val_root``.
* Rows before a split come in ``config.row_order``: CSV files sorted by name, or in the
  baseline's ``glob`` order (the file system's: the same seed splits the same rows only on
  the same folder).
* Otherwise ``data_root`` is split (``config.split``): ``"random"`` is the baseline's
  ``random_split`` of all rows, seeded by ``config.seed``, ``int(N * val_fraction)`` rows
  to validation in the permutation's order (``data.sampler.random_split_indices``);
  ``"stratified"`` splits every task separately, by class (``data.sampler.stratified_split``).
* The sampler (``config.sampler``): ``"official"`` is the baseline's
  (``data.sampler.OfficialTaskSampler``, its tasks in the order their first training row
  comes, as the baseline groups them), the others fmuia's ``TaskBatchSampler``. Neither
  yields a training batch of one image (BatchNorm cannot normalise it): a task's remainder
  of one joins its previous batch, and a task with a single training image, or
  ``batch_size`` 1, is refused before training starts.
* Every training item is augmented with a random state of its own, seeded by the run's
  seed, the step and its place in the batch (:class:`SeededItems`): the augmentations do
  not depend on how many loader workers there are (a speed setting), nor on where a run
  was interrupted and resumed.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
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
    train_tf = build_transforms(config.image_size, train=True, augment=config.augment, resize=config.resize,
                                geometric=config.geometric_augment)
    val_tf = build_transforms(config.image_size, train=False, resize=config.resize)
    if config.val_root is not None:
        if os.path.realpath(config.val_root) == os.path.realpath(config.data_root):
            warnings.warn(f"val_root is data_root ({config.data_root}): the run validates on its own training "
                          "images, so its validation scores and its best checkpoint measure memory, not "
                          "generalisation; give a separate val_root, or val_root=null to split one off",
                          stacklevel=2)
        train_set = MultiTaskDataset(config.data_root, transforms=train_tf, tasks=config.tasks, manifest=manifest)
        val_set = MultiTaskDataset(config.val_root, transforms=val_tf, tasks=config.tasks, manifest=manifest)
    else:
        if config.val_fraction <= 0:
            raise ConfigError("no validation data: set val_root, or val_fraction > 0")
        frame = read_root(config.data_root, manifest, csv_order=config.row_order)
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
    if config.data_cache:
        train_set, val_set = _cached(config, manifest, train_set, val_set)
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


def _cached(config: TrainConfig, manifest, train_set: MultiTaskDataset,
            val_set: MultiTaskDataset) -> tuple[MultiTaskDataset, MultiTaskDataset]:
    """Both sets read through the prepared form of their root(s) (``data.cache``), kept under
    ``out_dir/data_cache`` (reused while root, size, tasks and files are unchanged)."""
    from pathlib import Path

    from fmuia_lib.data.cache import build_cache

    folder = Path(config.out_dir) / "data_cache"
    caches = {}
    for name, root in (("train", config.data_root), ("val", config.val_root)):
        if root is not None:
            caches[name] = build_cache(root, folder / f"{name}-{config.image_size}px", config.image_size,
                                       manifest=manifest, resize=config.resize)
    return (train_set.with_cache(caches["train"]),
            val_set.with_cache(caches.get("val", caches["train"])))  # a split reads the training root's


def build_sampler(config: TrainConfig, train_set: MultiTaskDataset) -> Sampler[list[int]]:
    """The batch sampler ``config.sampler`` names, seeded by ``config.seed``. Refuses what would
    make a training batch of one image (see the module docstring)."""
    if config.batch_size < 2:
        raise ConfigError(f"batch_size={config.batch_size}: training needs at least 2 images per batch "
                          "(BatchNorm cannot normalise a batch of one)")
    single = sorted(t for t, rows in train_set.task_indices.items() if len(rows) == 1)
    if single:
        raise ConfigError(f"tasks {single} have a single training image: a batch of one cannot be "
                          "normalised by BatchNorm; add images or leave them out (tasks)")
    if config.sampler == "official":
        # the baseline's sampler lists tasks in the order their first training row comes
        first_row = sorted(train_set.task_indices.items(), key=lambda item: min(item[1], default=0))
        return OfficialTaskSampler(dict(first_row), config.batch_size, seed=config.seed)
    types = {t.task_id: t.task_type for t in train_set.tasks}
    if not any(config.sampler_type_weights[kind] for kind in types.values()):
        raise ConfigError(f"sampler_type_weights={config.sampler_type_weights}: every task type of this run "
                          f"({', '.join(sorted(set(types.values())))}) has weight 0, so no task can be drawn")
    return TaskBatchSampler(train_set.task_indices, config.batch_size, strategy=config.sampler,
                            temperature=config.sampler_temperature, seed=config.seed,
                            task_weights={t: config.sampler_type_weights[types[t]] for t in train_set.task_indices})


def item_seed(seed: int, global_batch: int, slot: int) -> int:
    """The random seed of the item in place ``slot`` of batch ``global_batch`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, global_batch, slot]).generate_state(1, np.uint64)[0])


class SeededItems(Dataset):
    """``dataset`` whose items are keyed ``(index, seed)``: item ``(i, s)`` is ``dataset[i]`` drawn
    with torch's generator seeded by ``s`` (the generator is restored afterwards, so the
    training process's own random state, e.g. for dropout, is left as it was).

    The transforms (``torchvision.transforms.v2``) draw from torch's generator only, so an
    item's augmentation depends on its seed alone, in the training process or in any
    loader worker.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def loader(dataset: Dataset, batch_sampler: Any, num_workers: int, device: torch.device) -> DataLoader:
    """A DataLoader of task-homogeneous batches (``collate``), pinned for a CUDA device. Each
    iterator draws its workers' base seed from torch's global generator, as the baseline's
    loader does once per epoch: the dropout masks that follow are the baseline's (the items'
    augmentations do not depend on it, :class:`SeededItems`)."""
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


