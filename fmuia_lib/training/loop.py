"""The training loop: ``train(config)`` and the :class:`Trainer` behind it.

``train(config)`` runs the recipe ``config`` describes (the official baseline's by
default, fmuia's fixes as switches, see ``fmuia_lib.switches``), callable from a notebook
(progress bars, a :class:`TrainResult` with pandas histories) and from ``fmuia train``.
Under ``torchrun`` it trains data-parallel (``training.distributed``).

**How long, and when to validate.** An epoch is ``len(training rows) // batch_size``
optimiser steps (the baseline's); the run is ``config.epochs`` epochs, or
``config.max_steps`` steps. Every step draws one task-homogeneous batch from the
sampler's stream. Validation and checkpoints come every ``eval_every`` epochs (steps, for
a run measured in steps) and at the end; the LR schedule steps per epoch or per step
(``training.optim``).

**Each step**: forward under autocast when ``amp`` (heads compute their outputs in
float32), the task type's loss, backward (through a gradient scaler for fp16), optional
gradient clipping, AdamW, the schedule.

**Each validation**: BatchNorm statistics re-estimated when ``norm_stats`` asks
(``training.norm_stats``), then the baseline's per-batch rule
(``training.per_batch_validation``) or per-task metrics over the whole set
(``training.validation``), each with its selection score; the best checkpoint is the one
with the highest score.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from fmuia_lib.progress import tqdm

from fmuia_lib import metrics
from fmuia_lib.config import ConfigError, TrainConfig
from fmuia_lib.data.transforms import build_transforms
from fmuia_lib.heads import set_output_prior
from fmuia_lib.losses import build_loss
from fmuia_lib.model import MultiTaskNet, build_model
from fmuia_lib.tasks import REGRESSION, manifest_hash
from fmuia_lib.training import checkpoint as ckpt
from fmuia_lib.training import distributed
from fmuia_lib.training.baselines import training_priors
from fmuia_lib.training.data import _loader, build_datasets, build_sampler
from fmuia_lib.training.norm_stats import recalibrate_norm_stats
from fmuia_lib.training.optim import build_optimizer, build_schedule
from fmuia_lib.training.per_batch_validation import per_batch_selection_score, validate_per_batch
from fmuia_lib.training.validation import validate

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


@dataclass
class TrainResult:
    """What a run produced. ``history``: one row per optimiser step; ``val_history``:
    one row per task per validation."""

    history: pd.DataFrame
    val_history: pd.DataFrame
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    model: MultiTaskNet
    config: TrainConfig
    best_score: float


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run, or None (full precision).

    ``amp=False``: None. On CUDA, ``amp_dtype="auto"`` is bf16 where the GPU supports it,
    else fp16. On CPU, ``"auto"`` means off (profiles that say ``amp: true`` for a GPU run
    unchanged on a CPU), while an explicit ``"bf16"`` or ``"fp16"`` is honoured.
    """
    if not config.amp:
        return None
    if config.amp_dtype == "bf16":
        return torch.bfloat16
    if config.amp_dtype == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StepBatches:
    """The batches of optimiser steps ``start .. stop-1`` for one rank, as index lists.

    The global stream is the sampler's epochs one after another; step ``s`` of rank ``r``
    takes global batch ``s * world + r``. An epoch's batches are a pure function of
    ``(seed, epoch)``, so any step range can be rebuilt by moving the sampler to its
    first batch, which is what makes resuming exact.
    """

    def __init__(self, sampler, start: int, stop: int, rank: int = 0, world: int = 1) -> None:
        self.sampler, self.start, self.stop, self.rank, self.world = sampler, start, stop, rank, world

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[int]]:
        first, last = self.start * self.world + self.rank, self.stop * self.world
        self.sampler.load_state_dict(sampler_state(self.sampler, first))
        index = first
        while index < last:
            for batch in self.sampler:  # at the end of an epoch the sampler moves on to the next
                if index >= last:
                    return
                if (index - first) % self.world == 0:
                    yield list(batch)
                index += 1


def sampler_state(sampler, global_batch: int) -> dict[str, int]:
    """The sampler state whose next batch is global batch ``global_batch`` of the stream."""
    per_epoch = len(sampler)
    return {"epoch": global_batch // per_epoch, "position": global_batch % per_epoch, "seed": sampler.seed}


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train ``config``'s model; see the module docstring for the loop.

    Writes only under ``config.out_dir``: ``config.yaml``, ``history.csv``,
    ``val_history.csv`` and ``checkpoints/{last,best}.pt``. With ``config.resume`` it
    continues from that checkpoint exactly (same weights as an uninterrupted run on
    the same device in one process).
    """
    context, device = distributed.setup(config.device)
    try:
        return Trainer(config, context, device, progress).run()
    finally:
        distributed.teardown(context)


class Trainer:
    """One run's state (model, loss, optimiser, schedule, sampler, histories) and its loop.

    ``train(config)`` is ``Trainer(config, context, device, progress).run()``; the
    pieces are public so a notebook or benchmark can take single steps
    (``trainer.train_step(batch)``).
    """

    def __init__(self, config: TrainConfig, context: distributed.DistributedContext,
                 device: torch.device, progress: bool) -> None:
        self.config, self.context, self.device, self.progress = config, context, device, progress
        seed_everything(config.seed + context.rank)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = not config.deterministic
            torch.backends.cudnn.deterministic = config.deterministic
        self.train_set, self.val_set, self.tasks = build_datasets(config)
        self.steps_per_epoch = config.steps_per_epoch(len(self.train_set), context.world_size)
        self.total_steps = config.total_steps(self.steps_per_epoch)
        self.eval_interval = config.eval_interval(self.steps_per_epoch)
        if config.stop_at_step is not None and config.stop_at_step % self.eval_interval:
            raise ConfigError(f"stop_at_step={config.stop_at_step}: must be a multiple of the validation "
                              f"interval ({self.eval_interval} steps), where checkpoints are written")
        # training rows without augmentation: what BatchNorm statistics are re-estimated from
        self.calibration_set = self.train_set.with_transforms(build_transforms(config.image_size, train=False))
        self.task_ids = [t.task_id for t in self.tasks]
        self.model = build_model(config, self.tasks)
        if config.head_priors and config.resume is None:
            for task_id, prior in training_priors(self.train_set, types=(REGRESSION,)).items():
                set_output_prior(self.model.heads[task_id], self.model.task(task_id), prior)
        self.model.to(device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.criterion = build_loss(config).to(device)
        self.optimizer = build_optimizer(self.model, self.criterion, config)
        self.schedule = build_schedule(self.optimizer, config, self.steps_per_epoch)
        self.amp_dtype = autocast_dtype(config, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.sampler = build_sampler(config, self.train_set)
        self.out_dir = Path(config.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.step = 0
        self.best_score = -math.inf
        self.history: list[dict[str, Any]] = []
        self.val_history: list[dict[str, Any]] = []
        self.best_path: Path | None = None
        self.last_path: Path | None = None
        if config.resume is not None:
            self._resume(config.resume)
        self.net = (DistributedDataParallel(self.model, device_ids=[device] if device.type == "cuda" else None,
                                            find_unused_parameters=True)
                    if context.enabled else self.model)

    # -- checkpoints --
    def _state(self) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT_VERSION, "step": self.step, "best_score": self.best_score,
            "model": self.model.state_dict(), "loss": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state(),
            "config": self.config.to_dict(), "task_ids": self.task_ids, "encoder": self.config.encoder,
            "manifest_hash": manifest_hash(self.task_ids, self.config.manifest),
            "versions": ckpt.library_versions(),
            "sampler": sampler_state(self.sampler, self.step * self.context.world_size),
            "history": self.history, "val_history": self.val_history,
        }

    def _resume(self, path: str) -> None:
        state = ckpt.read_checkpoint(path, map_location=self.device)
        ckpt.check_compatible(state, path, self.task_ids, self.config.encoder, self.config.manifest)
        self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])  # refuses a sampler with another seed
        self.step, self.best_score = int(state["step"]), float(state["best_score"])
        self.history, self.val_history = list(state["history"]), list(state["val_history"])
        if self.context.rank == 0:
            ckpt.set_rng_state(state["rng"])
        else:
            seed_everything(self.config.seed + self.context.rank + self.step)
        if (self.ckpt_dir / BEST_CHECKPOINT).is_file():
            self.best_path = self.ckpt_dir / BEST_CHECKPOINT

    # -- one optimiser step --
    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Forward, loss, backward, clip, optimiser step and schedule on one collated batch;
        advances ``self.step`` and returns the step's log row."""
        task_id = batch["task_id"]  # one task per batch (data.dataset.collate checks it)
        task = self.model.task(task_id)
        images = batch["image"].to(self.device, non_blocking=True)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = batch["target"].to(self.device, non_blocking=True)
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.net(images, task_id)
        loss, raw = self.criterion(outputs, target, task)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        grad_norm = (torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
                     if self.config.grad_clip else torch.linalg.vector_norm(
                         torch.stack([p.grad.detach().norm() for p in params])))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.schedule.after_step(self.step)
        first_head = next(name for name in lrs if name.startswith("head:"))
        return {"step": self.step, "epoch": (self.step - 1) // self.steps_per_epoch + 1,
                "task_id": task_id, "task_type": task.task_type, "loss": raw.item(),
                "weighted_loss": loss.item(), "grad_norm": float(grad_norm),
                "lr_encoder": lrs["encoder"], "lr_fpn_decoder": lrs.get("fpn_decoder", 0.0),
                "lr_heads": lrs[first_head], "batch_size": images.shape[0]}

    # -- validation + checkpoint at a segment boundary --
    def evaluate(self) -> tuple[dict[str, dict[str, Any]], float]:
        """``(per-task metrics, selection score)`` of the current model on the validation set,
        by the rule ``config.validation`` names."""
        config = self.config
        recalibrate_norm_stats(self.model, self.calibration_set, config.norm_stats, config.norm_stats_batches,
                               config.batch_size, self.device, num_workers=config.num_workers,
                               amp_dtype=self.amp_dtype, seed=config.seed)
        batch_size = config.val_batch_size or config.batch_size
        if config.validation == "per_batch":
            per_task = validate_per_batch(self.model, self.val_set, self.device, batch_size=batch_size,
                                          num_workers=config.num_workers, amp_dtype=self.amp_dtype)
            return per_task, per_batch_selection_score(per_task)
        per_task = validate(self.model, self.val_set, self.device, batch_size=batch_size,
                            num_workers=config.num_workers, amp_dtype=self.amp_dtype)
        return per_task, metrics.selection_score(per_task, self.tasks)

    def _evaluate_and_save(self) -> None:
        if self.context.is_main:
            per_task, score = self.evaluate()
            for task_id, scores in per_task.items():
                row = {"step": self.step, "task_id": task_id, "task_type": self.model.task(task_id).task_type,
                       "selection_score": score}
                row.update({k: float(v) for k, v in scores.items() if isinstance(v, (int, float, np.number))})
                self.val_history.append(row)
            improved = score > self.best_score
            if improved:
                self.best_score = score
            state = self._state()
            self.last_path = ckpt.save_atomic(state, self.ckpt_dir / LAST_CHECKPOINT)
            if improved:
                self.best_path = ckpt.save_atomic(state, self.ckpt_dir / BEST_CHECKPOINT)
            pd.DataFrame(self.history).to_csv(self.out_dir / "history.csv", index=False)
            pd.DataFrame(self.val_history).to_csv(self.out_dir / "val_history.csv", index=False)
        self.context.barrier()
        distributed.sync_buffers(self.model, self.context)  # the re-estimated BatchNorm statistics

    def run(self) -> TrainResult:
        config = self.config
        if self.context.is_main:
            config.to_yaml(self.out_dir / "config.yaml")
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step",
                   disable=not (self.progress and self.context.is_main))
        self.model.train()
        end = self.total_steps if config.stop_at_step is None else min(config.stop_at_step, self.total_steps)
        while self.step < end:
            stop = min(end, (self.step // self.eval_interval + 1) * self.eval_interval)
            batches = StepBatches(self.sampler, self.step, stop, self.context.rank, self.context.world_size)
            loader = _loader(self.train_set, batches, config.num_workers,
                             seed=config.seed * 1_000_003 + self.step, device=self.device)
            tick = time.perf_counter()
            for batch in loader:
                data_s = time.perf_counter() - tick
                row = self.train_step(batch)
                step_s = time.perf_counter() - tick
                row.update(data_s=data_s, step_s=step_s,
                           images_per_s=row["batch_size"] * self.context.world_size / step_s)
                self.history.append(row)
                bar.update(1)
                bar.set_postfix(task=row["task_id"], loss=f"{row['loss']:.3f}", refresh=False)
                tick = time.perf_counter()
            distributed.sync_buffers(self.model, self.context)
            self._evaluate_and_save()
        bar.close()
        return TrainResult(history=pd.DataFrame(self.history), val_history=pd.DataFrame(self.val_history),
                           best_checkpoint=self.best_path, last_checkpoint=self.last_path,
                           model=self.model, config=config, best_score=self.best_score)
