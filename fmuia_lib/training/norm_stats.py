"""BatchNorm statistics for evaluation, re-estimated from training images.

Training draws task-homogeneous batches (one subtask per batch, as in the challenge
baseline), so every BatchNorm layer of the encoder normalises a batch with the
statistics of *one task's* images. Its running averages, which eval mode uses, are an
exponential average over the last few dozen batches: a mixture weighted towards
whichever tasks came last. A classification or Regression head then reads features
normalised differently from anything it saw in training, and the difference changes
from one checkpoint to the next. ``TrainConfig.norm_stats`` chooses what eval mode uses:

============ =========================================================================
``running``  PyTorch's running averages, as trained (the baseline's behaviour)
``shared``   re-estimated before each validation over ``norm_stats_batches`` batches
             of every task's training images, each batch weighted equally ("precise
             BN"; ``torch.optim.swa_utils.update_bn``)
``per_task`` re-estimated for each task separately and kept in the model
             (``MultiTaskNet.task_norm_stats``); an eval batch of task ``t`` is
             normalised with ``t``'s statistics, which is what its training batches
             had. The running averages themselves are left as trained.
============ =========================================================================

The estimate reads training images without augmentation, in a seeded order, and
leaves the global random state alone, so a run resumed from a checkpoint continues
exactly. It runs on the main process, before validation; under DDP the trainer then
copies the buffers to the other replicas (``training.distributed.sync_buffers``).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from fmuia_lib.data.dataset import MultiTaskDataset, collate
from fmuia_lib.model import MultiTaskNet


def calibration_batches(task_indices: dict[str, list[int]], batches_per_task: int, batch_size: int,
                        seed: int = 0) -> dict[str, list[list[int]]]:
    """Up to ``batches_per_task`` batches of each task's items, drawn without replacement in
    a seeded order. A remainder too small to be a batch of its own joins the last batch
    (BatchNorm cannot estimate a variance from a single 1 x 1 feature)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[list[int]]] = {}
    for task_id, indices in task_indices.items():
        order = [int(i) for i in rng.permutation(np.asarray(indices))][:batches_per_task * batch_size]
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if len(batches) > 1 and len(batches[-1]) < 2:
            batches[-2].extend(batches.pop())
        out[task_id] = batches
    return out


def recalibrate_norm_stats(model: MultiTaskNet, dataset: MultiTaskDataset, mode: str, batches_per_task: int,
                           batch_size: int, device: torch.device | str, num_workers: int = 0,
                           amp_dtype: torch.dtype | None = None, seed: int = 0) -> None:
    """Re-estimate the encoder's BatchNorm statistics from ``dataset`` (training images,
    evaluation transforms) as ``mode`` says; ``"running"`` does nothing."""
    if mode == "running":
        return
    if mode not in ("shared", "per_task"):
        raise ValueError(f"norm_stats mode must be 'running', 'shared' or 'per_task', not {mode!r}")
    device = torch.device(device)
    batches = calibration_batches(dataset.task_indices, batches_per_task, batch_size, seed)
    batches = {t: b for t, b in batches.items() if t in model.tasks}
    if mode == "per_task" and model.task_norm_stats is None:
        raise ValueError("norm_stats='per_task' needs a model built with task_norm_stats=True")
    # one loader over every task's batches, in task order (workers start once)
    loader = DataLoader(dataset, batch_sampler=[b for task_batches in batches.values() for b in task_batches],
                        collate_fn=collate, num_workers=num_workers, generator=torch.Generator().manual_seed(seed))
    stream = ((batch["task_id"], batch["image"].to(device, non_blocking=True)) for batch in loader)

    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), \
            torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        if mode == "shared":
            update_bn((images for _, images in stream), model.encoder)
            return
        trained = {k: v.clone() for k, v in model.encoder.state_dict().items()
                   if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
        for task_id, group in itertools.groupby(stream, key=lambda item: item[0]):
            update_bn((images for _, images in group), model.encoder)
            model.task_norm_stats.store(task_id, model.encoder)
        model.encoder.load_state_dict(trained, strict=False)
