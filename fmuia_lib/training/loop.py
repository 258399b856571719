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
gradient clipping, AdamW, the schedule. The step's numbers (loss, gradient norm) stay on
the device and are read in groups (every step on a CPU, every :data:`CUDA_LOG_EVERY`
steps on a GPU, and before each validation), so a GPU never waits for the host. When a
loss or the gradient norm read back is not finite, or the weights are not before a
checkpoint is written, training stops with :class:`TrainingDiverged` naming the step:
no checkpoint with non-finite weights is ever written.

**Each validation**: BatchNorm statistics re-estimated when ``norm_stats`` asks
(``training.norm_stats``), then the baseline's per-batch rule
(``training.per_batch_validation``) or per-task metrics over the whole set
(``training.validation``), each with its selection score; the best checkpoint is the one
with the highest score.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from fmuia_lib.progress import tqdm

from fmuia_lib.challenge import metrics
from fmuia_lib.config import ConfigError, TrainConfig
from fmuia_lib.data.transforms import build_transforms
from fmuia_lib.heads import set_output_prior
from fmuia_lib.losses import build_loss
from fmuia_lib.model import MultiTaskNet, build_model
from fmuia_lib.paths import atomic_write, write_failure, writing
from fmuia_lib.tasks import REGRESSION, manifest_hash
from fmuia_lib import checkpoint as ckpt
from fmuia_lib.training import distributed
from fmuia_lib.training.baselines import training_priors
from fmuia_lib.state_file import remove_stale_temporaries, save_state
from fmuia_lib.training.data import SeededItems, build_datasets, build_sampler, item_seed, loader
from fmuia_lib.training.norm_stats import recalibrate_norm_stats
from fmuia_lib.training.optim import build_optimizer, build_schedule
from fmuia_lib.training.per_batch_validation import per_batch_selection_score, validate_per_batch
from fmuia_lib.training.validation import validate_whole_set

#: On a GPU, the steps whose logged numbers are read back from the device together.
CUDA_LOG_EVERY = 25
#: The logged numbers of a step that live on the device until they are read.
DEVICE_VALUES = ("loss", "weighted_loss", "grad_norm")


class TrainingDiverged(RuntimeError):
    """The loss, the gradients or the weights became non-finite; training stopped before
    writing them to a checkpoint."""


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
    first batch, which is what makes resuming exact. With ``item_seeds`` set to the run's
    seed, each entry is ``(index, seed of that item)`` (``training.data.item_seed``: a
    function of the run's seed, the global batch and the place in it), the keys of a
    :class:`~fmuia_lib.training.data.SeededItems` dataset.
    """

    def __init__(self, sampler, start: int, stop: int, rank: int = 0, world: int = 1,
                 item_seeds: int | None = None) -> None:
        self.sampler, self.start, self.stop, self.rank, self.world = sampler, start, stop, rank, world
        self.item_seeds = item_seeds

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list]:
        first, last = self.start * self.world + self.rank, self.stop * self.world
        self.sampler.load_state_dict(sampler_state(self.sampler, first))
        index = first
        while index < last:
            for batch in self.sampler:  # at the end of an epoch the sampler moves on to the next
                if index >= last:
                    return
                if (index - first) % self.world == 0:
                    yield (list(batch) if self.item_seeds is None else
                           [(row, item_seed(self.item_seeds, index, slot)) for slot, row in enumerate(batch)])
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
        with hold_out_dir(config.out_dir, context.is_main):
            return Trainer(config, context, device, progress).run()
    finally:
        distributed.teardown(context)


#: The lock file a run holds in its ``out_dir`` while it runs (an OS lock: a killed run's is released).
LOCK_FILE = ".train.lock"


@contextlib.contextmanager
def hold_out_dir(out_dir: str | Path, hold: bool = True) -> Iterator[None]:
    """Hold ``out_dir`` for one run: a second run with the same ``out_dir`` is refused while
    this one lives. The lock is the operating system's (``filelock``: ``fcntl.flock`` on
    POSIX), so a run that is killed leaves no stale lock; the empty file stays."""
    if not hold:
        yield
        return
    from filelock import FileLock, Timeout

    folder = Path(out_dir)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(f"out_dir={str(out_dir)!r} is in use by another run, which holds {folder / LOCK_FILE}; "
                          "wait for it to end, or give another out_dir") from None
    except OSError as err:
        raise write_failure(err, folder / LOCK_FILE) from None
    try:
        yield
    finally:
        lock.release()


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
        self.calibration_set = self.train_set.with_transforms(build_transforms(config.image_size, train=False,
                                                                                      resize=config.resize))
        self.task_ids = [t.task_id for t in self.tasks]
        self.model = build_model(config, self.tasks)
        if config.head_priors and config.resume is None:
            for task_id, prior in training_priors(self.train_set).items():
                set_output_prior(self.model.heads[task_id], self.model.task(task_id), prior)
        self.model.place(device, config.channels_last)  # inputs follow the model's memory format
        self.criterion = build_loss(config).to(device)
        self.optimizer = build_optimizer(self.model, self.criterion, config)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.schedule = build_schedule(self.optimizer, config, self.steps_per_epoch)
        self.amp_dtype = autocast_dtype(config, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.sampler = build_sampler(config, self.train_set)
        self.out_dir = Path(config.out_dir)
        self.ckpt_dir = self.out_dir / ckpt.CHECKPOINT_DIR
        #: steps whose logged numbers are read from the device together (see the module docstring)
        self.log_every = CUDA_LOG_EVERY if device.type == "cuda" else 1
        self.step = 0
        self.best_score = -math.inf
        self.history: list[dict[str, Any]] = []
        self.val_history: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []  # rows whose device values are not read yet
        self.best_path: Path | None = None
        self.last_path: Path | None = None
        if context.is_main:
            remove_stale_temporaries(self.ckpt_dir)  # left by a save that was killed
        if config.resume is not None:
            self._resume(config.resume)
        self.net = (DistributedDataParallel(self.model, device_ids=[device] if device.type == "cuda" else None,
                                            find_unused_parameters=True)
                    if context.enabled else self.model)

    # -- checkpoints --
    def _state(self) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT_VERSION, "step": self.step, "total_steps": self.total_steps,
            "best_score": self.best_score,
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
        ckpt.check_resumable(state, path, self.config)
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
        self.last_path = Path(path)
        if self.context.is_main:
            self._carry_best_checkpoint(Path(path).parent / ckpt.BEST_CHECKPOINT, state)

    def _own_best(self, path: Path, state: dict[str, Any]) -> bool:
        """Whether the best checkpoint ``path`` belongs to the run being resumed from ``state``:
        its score is the run's best so far, written at a step the run passed, and its
        validation history a beginning of the run's."""
        if not path.is_file():
            return False
        best = ckpt.read_checkpoint(path)
        history = list(best.get("val_history") or [])
        return (float(best.get("best_score", math.nan)) == float(state["best_score"])
                and int(best.get("step", -1)) <= int(state["step"]) and bool(history)
                and repr(history) == repr(list(state["val_history"])[:len(history)]))  # repr: NaN equals NaN

    def _carry_best_checkpoint(self, interrupted_best: Path, state: dict[str, Any]) -> None:
        """The best checkpoint so far, in this run's folder: the one there, or the interrupted
        run's (copied, when resuming into another folder). Without either, selection starts
        again from this run's next validation. A run's best is its own: another run's
        ``best.pt`` in ``out_dir`` is refused, never reported nor replaced."""
        here = self.ckpt_dir / ckpt.BEST_CHECKPOINT
        if here.exists() and not self._own_best(here, state):
            raise ConfigError(f"out_dir={self.config.out_dir!r} holds {here}, the best checkpoint of another run "
                              f"than the one resumed ({self.config.resume}); resume into that run's own "
                              "out_dir or a new one")
        if not here.is_file() and self._own_best(interrupted_best, state):
            save_state(ckpt.read_checkpoint(interrupted_best), here)  # checksums verified on the way
        if here.is_file():
            self.best_path = here
        elif self.best_score > -math.inf:
            warnings.warn(f"no {ckpt.BEST_CHECKPOINT} beside {self.config.resume} nor in {self.ckpt_dir}: the best "
                          f"checkpoint so far (score {self.best_score:.4f}) is gone, so the next validation "
                          "writes a new one", stacklevel=3)
            self.best_score = -math.inf

    # -- one optimiser step --
    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Forward, loss, backward, clip, optimiser step and schedule on one collated batch;
        advances ``self.step`` and returns the step's log row, whose :data:`DEVICE_VALUES`
        are 0-dim tensors on the device (reading them waits for the device: the loop reads
        them in groups, :meth:`read_pending`)."""
        task_id = batch["task_id"]  # one task per batch (data.dataset.collate checks it)
        task = self.model.task(task_id)
        images = batch["image"].to(self.device, non_blocking=True)
        target = batch["target"].to(self.device, non_blocking=True)
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.net(images, task_id)
        loss, raw = self.criterion(outputs, target, task)
        self.scaler.scale(loss).backward()
        if self.step < self.config.freeze_encoder_steps:  # the encoder stays as loaded: AdamW skips
            for p in self.model.encoder.parameters():    # a parameter without a gradient
                p.grad = None
        self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip, foreach=True)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None],
                                                      foreach=True)
        try:
            self.scaler.step(self.optimizer)
        except RuntimeError as err:  # an update too large for float32 (torch's AdamW step size)
            if "overflow" not in str(err):
                raise
            raise TrainingDiverged(self._diverged(f"step {self.step + 1} (task {task_id}): the optimiser's "
                                                  f"update overflows float32")) from None
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.schedule.after_step(self.step)
        first_head = next(name for name in lrs if name.startswith("head:"))
        return {"step": self.step, "epoch": (self.step - 1) // self.steps_per_epoch + 1,
                "task_id": task_id, "task_type": task.task_type, "loss": raw.detach(),
                "weighted_loss": loss.detach(), "grad_norm": grad_norm.detach(),
                "lr_encoder": lrs["encoder"], "lr_fpn_decoder": lrs.get("fpn_decoder", 0.0),
                "lr_heads": lrs[first_head], "batch_size": images.shape[0]}

    def read_pending(self) -> None:
        """Read the device values of the pending rows (one transfer), move them to the
        history, and stop with :class:`TrainingDiverged` at the first non-finite loss (or
        gradient norm: with an fp16 gradient scaler an infinite one only skips the step)."""
        rows, self.pending = self.pending, []
        if not rows:
            return
        values = torch.stack([torch.stack([row[k].float() for k in DEVICE_VALUES]) for row in rows]).tolist()
        for row, numbers in zip(rows, values):
            row.update(zip(DEVICE_VALUES, numbers))
        self.history.extend(rows)
        checked = DEVICE_VALUES if not self.scaler.is_enabled() else ("loss", "weighted_loss")
        for row in rows:
            bad = [f"{k} {row[k]}" for k in checked if not math.isfinite(row[k])]
            if bad:
                raise TrainingDiverged(self._diverged(f"step {row['step']} (task {row['task_id']}): {', '.join(bad)}"))

    def nonfinite_weights(self) -> list[str]:
        """Names of the model's parameters and buffers that hold a NaN or an infinity."""
        named = [(k, v) for k, v in self.model.state_dict().items() if v.is_floating_point()]
        finite = torch.stack([torch.isfinite(v).all() for _, v in named]).tolist()
        return [name for (name, _), ok in zip(named, finite) if not ok]

    def _diverged(self, what: str) -> str:
        kept = (f"the last checkpoint, {self.last_path}, is from before it" if self.last_path is not None
                else "no checkpoint was written")
        return (f"training diverged at {what}; stopped without writing the non-finite weights ({kept}). "
                f"Lower the learning rate (lr={self.config.lr}, head_lr_mult={self.config.head_lr_mult}) or "
                f"clip the gradients (grad_clip={self.config.grad_clip})")

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
        per_task = validate_whole_set(self.model, self.val_set, self.device, batch_size=batch_size,
                            num_workers=config.num_workers, amp_dtype=self.amp_dtype)
        return per_task, metrics.selection_score(per_task, self.tasks)

    def _evaluate_and_save(self) -> None:
        if self.context.is_main:
            bad = self.nonfinite_weights()
            if bad:
                raise TrainingDiverged(self._diverged(f"step {self.step}: {len(bad)} non-finite weight tensor(s), "
                                                      f"e.g. {', '.join(bad[:3])}"))
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
            if improved:  # first, so that a last.pt never refers to a best.pt not yet written
                self.best_path = save_state(ckpt.model_state(state), self.ckpt_dir / ckpt.BEST_CHECKPOINT)
            self.last_path = save_state(state, self.ckpt_dir / ckpt.LAST_CHECKPOINT)
            atomic_write(self.out_dir / "history.csv", pd.DataFrame(self.history).to_csv(index=False))
            atomic_write(self.out_dir / "val_history.csv", pd.DataFrame(self.val_history).to_csv(index=False))
        self.context.barrier()
        distributed.sync_buffers(self.model, self.context)  # the re-estimated BatchNorm statistics

    def run(self) -> TrainResult:
        config = self.config
        if self.context.is_main:
            config.to_yaml(self.out_dir / "config.yaml")
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step",
                   disable=not (self.progress and self.context.is_main))
        self.model.train()
        items = SeededItems(self.train_set)
        end = self.total_steps if config.stop_at_step is None else min(config.stop_at_step, self.total_steps)
        while self.step < end:
            stop = min(end, (self.step // self.eval_interval + 1) * self.eval_interval)
            batches = StepBatches(self.sampler, self.step, stop, self.context.rank, self.context.world_size,
                                  item_seeds=config.seed)
            tick = time.perf_counter()
            for batch in loader(items, batches, config.num_workers, self.device):
                data_s = time.perf_counter() - tick
                row = self.train_step(batch)
                step_s = time.perf_counter() - tick
                row.update(data_s=data_s, step_s=step_s,
                           images_per_s=row["batch_size"] * self.context.world_size / step_s)
                self.pending.append(row)
                bar.update(1)
                if len(self.pending) >= self.log_every:
                    self.read_pending()
                    recent = self.history[-max(self.log_every, 10):]
                    bar.set_postfix(task=row["task_id"], loss=f"{row['loss']:.3f}",
                                    img_s=f"{sum(r['images_per_s'] for r in recent) / len(recent):.1f}",
                                    refresh=False)
                tick = time.perf_counter()
            self.read_pending()
            distributed.sync_buffers(self.model, self.context)
            self._evaluate_and_save()
        bar.close()
        return TrainResult(history=pd.DataFrame(self.history), val_history=pd.DataFrame(self.val_history),
                           best_checkpoint=self.best_path, last_checkpoint=self.last_path,
                           model=self.model, config=config, best_score=self.best_score)
