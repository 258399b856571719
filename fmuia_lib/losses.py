"""Per-type losses and their composition into one multi-task objective.

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

The detection loss follows the detection head type (:data:`DETECTION_LOSSES`), the
landmark loss the landmark head type (:data:`LANDMARK_LOSSES`).

Each batch holds one task, so one loss is computed per step and multiplied by its
task type's weight. With ``uncertainty_weighting`` the weights are learned instead
(Kendall, Gal & Cipolla 2018): each type gets a log-variance ``s`` and contributes
``exp(-s) * loss + s``, so a type whose loss stays large is automatically down-weighted
while the ``+ s`` term stops every weight from collapsing to zero.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn
from torch.nn import functional as F

from fmuia_lib.heads import cell_centres
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TASK_TYPES, TaskSpec

if TYPE_CHECKING:
    from fmuia_lib.config import TrainConfig

#: TTFNet's ratio between a box side and its Gaussian's diameter (Liu et al. 2020).
GAUSSIAN_ALPHA = 0.54


class SegmentationLoss(nn.Module):
    """Multiclass Dice (the baseline's loss), plus cross-entropy when ``with_ce``."""

    def __init__(self, with_ce: bool = False) -> None:
        super().__init__()
        self.dice = DiceLoss(mode="multiclass")
        self.with_ce = with_ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.dice(logits, target)
        if self.with_ce:
            loss = loss + F.cross_entropy(logits, target)
        return loss


class RegressionLoss(nn.Module):
    """Point loss on normalised coordinates: MSE, or SmoothL1 (L1 beyond ``beta``)."""

    def __init__(self, kind: str = "mse", beta: float = 0.05) -> None:
        super().__init__()
        self.loss = nn.MSELoss() if kind == "mse" else nn.SmoothL1Loss(beta=beta)

    def forward(self, points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(points, target)


#: Spread, in FPN cells, of the Gaussian a heat-map landmark head's probability map is pulled
#: towards (:class:`HeatmapLandmarkLoss`).
LANDMARK_SIGMA_CELLS = 1.0


def landmark_heatmap(points: torch.Tensor, height: int, width: int,
                     sigma_cells: float = LANDMARK_SIGMA_CELLS) -> torch.Tensor:
    """``B x K x h x w`` target probability maps: an isotropic Gaussian of ``sigma_cells``
    around each normalised (x, y) point of ``points`` (``B x K x 2``), normalised to sum 1."""
    points = points.float()
    xs, ys = cell_centres(height, width, points.device)
    dx = (xs[None, None, :] - points[..., 0, None]) * width  # B x K x w, in cells
    dy = (ys[None, None, :] - points[..., 1, None]) * height  # B x K x h
    logits = -(dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / (2 * sigma_cells ** 2)
    b, k = points.shape[:2]
    return logits.reshape(b, k, -1).softmax(dim=-1).reshape(b, k, height, width)


class HeatmapLandmarkLoss(nn.Module):
    """Loss of the heat-map landmark head (``heads.HeatmapLandmarkHead``):
    the point loss (``RegressionLoss``) on its soft-argmax points +
    ``heatmap_weight`` * the KL divergence of each heat map's softmax from a Gaussian of
    :data:`LANDMARK_SIGMA_CELLS` around the true point (mean over landmarks).

    The point loss alone only constrains each map's mean, so two peaks either side of the
    true point cost nothing; the KL term (DSNT's regulariser, Nibali et al. 2018) asks for
    one compact peak at the point and gives every cell a gradient from the first step.
    """

    def __init__(self, kind: str = "mse", heatmap_weight: float = 1.0) -> None:
        super().__init__()
        self.points = RegressionLoss(kind)
        self.heatmap_weight = heatmap_weight

    def forward(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return sum(self.parts(outputs, target).values())

    def parts(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The two weighted terms, for logging."""
        logits = outputs["heatmap"].float()
        b, k, h, w = logits.shape
        log_probs = logits.reshape(b, k, -1).log_softmax(dim=-1)
        wanted = landmark_heatmap(target, h, w).reshape(b, k, -1)
        kl = F.kl_div(log_probs, wanted, reduction="sum") / (b * k)
        return {"points": self.points(outputs["points"].float(), target.float()),
                "heatmap": self.heatmap_weight * kl}


def centre_heatmap(boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training targets of one box per image on an ``height x width`` map.

    Returns ``(heatmap B x h x w, centre_cell B x 2 as (row, col), offset B x 2 as (x, y))``.
    The heat map is an axis-aligned Gaussian centred on the box-centre cell (value
    exactly 1 there) whose spread follows the box size, so cells near the centre are
    penalised less than far ones.
    """
    boxes = boxes.float()
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 * width
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 * height
    col = cx.floor().clamp(0, width - 1)
    row = cy.floor().clamp(0, height - 1)
    sigma_x = ((boxes[:, 2] - boxes[:, 0]) * width * GAUSSIAN_ALPHA / 6).clamp(min=0.5)
    sigma_y = ((boxes[:, 3] - boxes[:, 1]) * height * GAUSSIAN_ALPHA / 6).clamp(min=0.5)
    xs = torch.arange(width, device=boxes.device, dtype=torch.float32)
    ys = torch.arange(height, device=boxes.device, dtype=torch.float32)
    gx = torch.exp(-((xs[None] - col[:, None]) ** 2) / (2 * sigma_x[:, None] ** 2))
    gy = torch.exp(-((ys[None] - row[:, None]) ** 2) / (2 * sigma_y[:, None] ** 2))
    heatmap = gy[:, :, None] * gx[:, None, :]
    offset = torch.stack([cx - col, cy - row], dim=1).clamp(0, 1)
    return heatmap, torch.stack([row, col], dim=1).long(), offset


def centernet_focal_loss(logits: torch.Tensor, target: torch.Tensor,
                         alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss over every cell, normalised by the box count.

    At the centre cell (target 1): ``-(1 - p)^alpha log p``. Elsewhere:
    ``-(1 - y)^beta p^alpha log(1 - p)``: a confident score is punished, less so next
    to the centre, where the Gaussian target ``y`` is close to 1.
    """
    logits = logits.float()
    p = torch.sigmoid(logits)
    positive = target.eq(1).float()
    pos_loss = -F.logsigmoid(logits) * (1 - p) ** alpha * positive
    neg_loss = -F.logsigmoid(-logits) * p ** alpha * (1 - target) ** beta * (1 - positive)
    return (pos_loss.sum() + neg_loss.sum()) / positive.sum().clamp(min=1)


class CenterNetLoss(nn.Module):
    """Heat-map focal loss + ``size_weight`` * L1(size) + ``offset_weight`` * L1(offset).

    Size and offset are supervised at the centre cell only, which is the cell the
    heat map learns to peak at.
    """

    def __init__(self, size_weight: float = 5.0, offset_weight: float = 1.0) -> None:
        super().__init__()
        self.size_weight = size_weight
        self.offset_weight = offset_weight

    def forward(self, outputs: dict[str, torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        return sum(self.parts(outputs, boxes).values())

    def parts(self, outputs: dict[str, torch.Tensor], boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three weighted terms, for logging."""
        heat_logits = outputs["heatmap"][:, 0]
        _, h, w = heat_logits.shape
        target, cell, offset = centre_heatmap(boxes, h, w)
        batch = torch.arange(boxes.shape[0], device=boxes.device)
        size_pred = outputs["size"].float()[batch, :, cell[:, 0], cell[:, 1]]
        offset_pred = outputs["offset"].float()[batch, :, cell[:, 0], cell[:, 1]]
        size_true = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1).float()
        return {
            "heatmap": centernet_focal_loss(heat_logits, target),
            "size": self.size_weight * F.l1_loss(size_pred, size_true),
            "offset": self.offset_weight * F.l1_loss(offset_pred, offset),
        }


class GridDetectionLoss(nn.Module):
    """The baseline's loss for the grid detection head (``heads.GridDetectionHead``).

    The cell that holds the true box centre is ``(clamp(long(cy * h)), clamp(long(cx * w)))``
    on the ``h x w`` map; there, ``BCEWithLogits(objectness, 1) + box_weight * L1(box, true
    box)`` (means over the batch and the 4 corners). No other cell is trained. Rows whose
    target box is ``-1`` (no box) are left out; with none left the loss is a constant 0
    joined to no parameter, as the baseline's: no parameter gets a gradient, so AdamW
    skips them all (no weight decay, no moment update) and the step changes nothing.
    """

    def __init__(self, objectness_weight: float = 1.0, box_weight: float = 8.0) -> None:
        super().__init__()
        self.objectness_weight, self.box_weight = objectness_weight, box_weight

    def forward(self, outputs: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        outputs, boxes = outputs.float(), boxes.float()
        b, _, h, w = outputs.shape
        rows = ((boxes[:, 1] + boxes[:, 3]) / 2.0 * h).long().clamp(0, h - 1)
        cols = ((boxes[:, 0] + boxes[:, 2]) / 2.0 * w).long().clamp(0, w - 1)
        cell = outputs[torch.arange(b, device=outputs.device), :, rows, cols]  # B x 5
        valid = boxes[:, 0] >= 0
        if not bool(valid.any()):
            return outputs.new_zeros((), requires_grad=True)
        cell, boxes = cell[valid], boxes[valid]
        objectness = F.binary_cross_entropy_with_logits(cell[:, 4], torch.ones_like(cell[:, 4]))
        return self.objectness_weight * objectness + self.box_weight * F.l1_loss(cell[:, :4], boxes)


#: Detection head type -> builder of its loss from the loss options (``MultiTaskLoss``'s arguments).
DETECTION_LOSSES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "grid": lambda options: GridDetectionLoss(),
    "centernet": lambda options: CenterNetLoss(options["det_size_weight"], options["det_offset_weight"]),
}
#: Landmark head type -> builder of its loss; every head takes the point loss ``reg_loss``.
LANDMARK_LOSSES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "linear": lambda options: RegressionLoss(options["reg_loss"]),
    "sigmoid": lambda options: RegressionLoss(options["reg_loss"]),
    "heatmap": lambda options: HeatmapLandmarkLoss(options["reg_loss"], options["landmark_heatmap_weight"]),
}


def _head_loss(registry: dict[str, Callable[[dict[str, Any]], nn.Module]], head: str, kind: str,
               options: dict[str, Any]) -> nn.Module:
    if head not in registry:
        raise ValueError(f"no loss for {kind} head {head!r}; known: {', '.join(registry)}")
    return registry[head](options)


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
        options = {"reg_loss": reg_loss, "det_size_weight": det_size_weight, "det_offset_weight": det_offset_weight,
                   "landmark_heatmap_weight": landmark_heatmap_weight}
        self.losses = nn.ModuleDict({
            SEGMENTATION: SegmentationLoss(with_ce=seg_loss == "dice_ce"),
            CLASSIFICATION: nn.CrossEntropyLoss(label_smoothing=cls_label_smoothing),
            REGRESSION: _head_loss(LANDMARK_LOSSES, landmark_head, "landmark", options),
            DETECTION: _head_loss(DETECTION_LOSSES, det_head, "detection", options),
        })
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
