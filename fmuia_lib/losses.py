"""The multi-task objective: each head type's loss (from its registry entry,
:data:`fmuia_lib.heads.HEAD_TYPES`), weighted by task type into one loss.

============== ======================================================= =================
task type      loss                                                    source
============== ======================================================= =================
segmentation   Dice (multiclass), optionally + cross-entropy           smp.losses
classification cross-entropy, optional label smoothing                 torch
Regression     MSE on normalised coordinates (baseline) or SmoothL1    torch
               heat-map head: that point loss on the soft-argmax      hand-written
               points + KL divergence of each heat map's softmax
               from a Gaussian around the true point
detection      grid head (baseline): at the true centre cell, BCE of   torch pieces
               the objectness logit against 1 + 8 x L1 of the box
               CenterNet head: focal loss on a Gaussian centre heat    hand-written
               map over every cell + L1 on box size and centre offset
============== ======================================================= =================

The losses live beside their heads (``heads.segmentation``, ``heads.detection``,
``heads.landmarks``); this module composes them.

Each batch holds one task, so one loss is computed per step and multiplied by its
task type's weight. With ``uncertainty_weighting`` the weights are learned instead
(Kendall, Gal & Cipolla 2018): each type gets a log-variance ``s`` and contributes
``exp(-s) * loss + s``, so a type whose loss stays large is automatically down-weighted
while the ``+ s`` term stops every weight from collapsing to zero.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from fmuia_lib.heads import (CenterNetLoss, GridDetectionLoss, HeatmapLandmarkLoss, RegressionLoss,  # noqa: F401
                             SegmentationLoss, centernet_focal_loss, centre_heatmap, head_type, landmark_heatmap)
from fmuia_lib.tasks import TASK_TYPES, TaskSpec

if TYPE_CHECKING:
    from fmuia_lib.config import TrainConfig


class MultiTaskLoss(nn.Module):
    """One loss per task type, weighted (fixed weights or learned uncertainty).

    ``det_head`` and ``landmark_head`` name the head types whose outputs the detection and
    Regression losses receive (``heads``); the defaults are the baseline's.
    """

    def __init__(self, seg_loss: str = "dice", cls_label_smoothing: float = 0.0,
                 reg_loss: str = "mse", det_size_weight: float = 5.0, det_offset_weight: float = 1.0,
                 loss_weights: dict[str, float] | None = None, uncertainty_weighting: bool = False,
                 det_head: str = "grid", landmark_head: str = "linear", landmark_heatmap_weight: float = 1.0) -> None:
        super().__init__()
        options = {"seg_loss": seg_loss, "cls_label_smoothing": cls_label_smoothing, "reg_loss": reg_loss,
                   "det_size_weight": det_size_weight, "det_offset_weight": det_offset_weight,
                   "landmark_heatmap_weight": landmark_heatmap_weight}
        self.losses = nn.ModuleDict({t: head_type(t, det_head, landmark_head).loss(options) for t in TASK_TYPES})
        self.weights = {t: 1.0 for t in TASK_TYPES} | dict(loss_weights or {})
        self.log_vars = nn.ParameterDict(
            {t: nn.Parameter(torch.zeros(())) for t in TASK_TYPES}) if uncertainty_weighting else None

    def raw(self, outputs: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor,
            task: TaskSpec) -> torch.Tensor:
        """The unweighted loss of ``task``'s type (float32 even under autocast)."""
        if isinstance(outputs, torch.Tensor):
            outputs = outputs.float()
        return self.losses[task.task_type](outputs, target)

    def forward(self, outputs: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor,
                task: TaskSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss to back-propagate, unweighted loss for logging)``."""
        raw = self.raw(outputs, target, task)
        if self.log_vars is not None:
            s = self.log_vars[task.task_type]
            return torch.exp(-s) * raw + s, raw.detach()
        return self.weights[task.task_type] * raw, raw.detach()



def build_loss(config: "TrainConfig") -> MultiTaskLoss:
    """The multi-task loss a config describes."""
    return MultiTaskLoss(seg_loss=config.seg_loss, cls_label_smoothing=config.cls_label_smoothing,
                         reg_loss=config.reg_loss, det_size_weight=config.det_size_weight,
                         det_offset_weight=config.det_offset_weight, loss_weights=config.loss_weights,
                         uncertainty_weighting=config.uncertainty_weighting, det_head=config.det_head,
                         landmark_head=config.landmark_head,
                         landmark_heatmap_weight=config.landmark_heatmap_weight)

