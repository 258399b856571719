"""Optimiser groups and learning-rate schedules.

**Groups** (AdamW, weight decay ``config.weight_decay``): the encoder at ``lr``; one group
per task head at ``lr * head_lr_mult``; the FPN decoder at ``lr * fpn_lr_mult`` (default
``head_lr_mult``) when it is trained, and in no group when ``freeze_fpn`` (the baseline:
its optimiser never holds the FPN, which keeps its initialisation); learned loss weights
(``uncertainty_weighting``) at the heads' rate. :func:`param_groups` checks that every
trainable parameter is in exactly one group.

**Schedules** (``config.schedule``), each a torch scheduler and how often it steps
(:class:`LRSchedule`):

* ``cosine_epochs`` (the baseline): ``torch.optim.lr_scheduler.CosineAnnealingLR`` with
  ``T_max`` = the run's epochs and the absolute floor ``eta_min`` for every group,
  stepped once at the end of each epoch;
* ``warmup_cosine`` (switch ``warmup_cosine``): per optimiser step, ``warmup_steps`` (or
  ``warmup_fraction`` of the run, :meth:`TrainConfig.warmup_length`) of linear warm-up, then cosine down to ``min_lr_ratio`` of each group's peak
  (:func:`lr_factor`, a ``LambdaLR``).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import torch
from torch import nn

from fmuia_lib.config import ConfigError, TrainConfig
from fmuia_lib.losses import MultiTaskLoss
from fmuia_lib.model import MultiTaskNet


def param_groups(model: MultiTaskNet, criterion: MultiTaskLoss, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: encoder, FPN decoder (when trained), one per head, learned loss weights (if any).

    Each group carries a ``name``. Raises when a trainable parameter of the model or
    the loss is in no group or in two.
    """
    head_lr = config.lr * config.head_lr_mult
    groups = [{"name": "encoder", "params": _trainable(model.encoder), "lr": config.lr},
              {"name": "fpn_decoder", "params": _trainable(model.fpn_decoder),
               "lr": config.lr * config.effective_fpn_lr_mult}]
    groups += [{"name": f"head:{task_id}", "params": _trainable(head), "lr": head_lr}
               for task_id, head in model.heads.items()]
    if criterion.log_vars is not None:
        groups.append({"name": "loss_weights", "params": _trainable(criterion.log_vars),
                       "lr": head_lr, "weight_decay": 0.0})
    groups = [g for g in groups if g["params"]]
    check_param_groups(groups, {"model": model, "loss": criterion})
    return groups


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def check_param_groups(groups: Sequence[dict[str, Any]], modules: dict[str, nn.Module]) -> None:
    """Every trainable parameter of ``modules`` in exactly one group, else a RuntimeError."""
    seen: dict[int, str] = {}
    for group in groups:
        for p in group["params"]:
            if id(p) in seen:
                raise RuntimeError(f"a parameter is in two optimiser groups: {seen[id(p)]} and {group['name']}")
            seen[id(p)] = group["name"]
    missing = [f"{prefix}.{name}" for prefix, module in modules.items()
               for name, p in module.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise RuntimeError(f"{len(missing)} trainable parameter(s) in no optimiser group, e.g. {missing[:3]}")


def build_optimizer(model: MultiTaskNet, criterion: MultiTaskLoss, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (betas and eps: AdamW's defaults, as the baseline).

    ``config.fused_adamw`` picks the fused kernel, which updates all tensors of a device in
    one pass (4x faster on CPU) by the same rule, rounded differently; off, torch's default
    implementation runs, the baseline's (``fused=None``: no fused kernel, and on CPU no
    foreach either), and the same seed gives the same weights as the official code.
    """
    groups = param_groups(model, criterion, config)
    fused = config.fused_adamw and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                                       for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier at ``step``: linear warm-up to 1, then cosine down to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LRSchedule:
    """A torch LR scheduler stepped every ``every`` optimiser steps (1: per step; the
    epoch length: per epoch). Call :meth:`after_step` with the number of steps done."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler, every: int) -> None:
        self.scheduler, self.every = scheduler, every

    def after_step(self, steps_done: int) -> None:
        if steps_done % self.every == 0:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def build_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> LRSchedule:
    """The LR schedule ``config.schedule`` names, for a run of ``config.total_steps(steps_per_epoch)``
    steps (see the module docstring)."""
    if config.schedule == "cosine_epochs":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.schedule_epochs(steps_per_epoch), eta_min=config.eta_min)
        return LRSchedule(scheduler, every=steps_per_epoch)
    if config.schedule == "warmup_cosine":
        total = config.total_steps(steps_per_epoch)
        warmup = config.warmup_length(total)
        if warmup >= total:
            raise ConfigError(f"warmup_steps={warmup}: the run has only {total} steps")
        factor = functools.partial(lr_factor, warmup_steps=warmup, max_steps=total,
                                   min_lr_ratio=config.min_lr_ratio)
        return LRSchedule(torch.optim.lr_scheduler.LambdaLR(optimizer, factor), every=1)
    raise ValueError(f"unknown schedule {config.schedule!r}")
