"""One small head per subtask, and the function that picks the right one for a TaskSpec.

Which features a head reads is fixed by its task type (see ``MultiTaskNet``):

============== ====================================== ==========================================
task type      input                                  output of ``head(x)``
============== ====================================== ==========================================
segmentation   FPN map ``B x F x H/4 x W/4``          logits ``B x C x H x W``
classification deepest encoder map ``B x D x h x w``  logits ``B x C``
Regression     deepest encoder map                    points ``B x K x 2`` in [0, 1] (x, y)
detection      FPN map                                dict of dense maps (CenterNet, below)
============== ====================================== ==========================================

Detection follows CenterNet (Zhou et al. 2019, "Objects as Points"): the head paints a
heat map whose peak is the box centre, and at every cell it also predicts the box
size and the sub-cell offset of the centre. Training supervises *every* cell of the
heat map (a Gaussian bump around the true centre, zero elsewhere), so the cell with
the highest score at inference is the cell that was trained to carry the box. This is
what the challenge baseline gets wrong: it trains its objectness only at the true
cell, with target 1, yet picks the highest-scoring cell at inference.
"""
from __future__ import annotations

import math

import torch
from segmentation_models_pytorch.base import ClassificationHead, SegmentationHead
from torch import nn

from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec

#: Initial heat-map probability (CenterNet's focal-loss prior): almost every cell is
#: background, so starting near 0.1 keeps the first focal-loss steps stable.
HEATMAP_PRIOR = 0.1
#: Stride of the FPN map relative to the input image.
FPN_STRIDE = 4


class SegmentationTaskHead(nn.Module):
    """smp's SegmentationHead on the FPN map, upsampled to the input size."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.head = SegmentationHead(in_channels, num_classes, kernel_size=1, upsampling=FPN_STRIDE)

    def forward(self, fpn: torch.Tensor) -> torch.Tensor:
        return self.head(fpn)


class ClassificationTaskHead(nn.Module):
    """Global average pooling, dropout, linear layer (smp's ClassificationHead)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.head = ClassificationHead(in_channels, num_classes, pooling="avg", dropout=dropout)

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.head(deepest)


class LandmarkRegressionHead(nn.Module):
    """Pooled deepest feature -> ``K`` points; a sigmoid keeps coordinates in [0, 1]."""

    def __init__(self, in_channels: int, num_points: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_points = num_points
        self.head = ClassificationHead(in_channels, 2 * num_points, pooling="avg", dropout=dropout,
                                       activation="sigmoid")

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.head(deepest).view(-1, self.num_points, 2)


class CenterNetHead(nn.Module):
    """Dense single-box detection on the FPN map.

    Returns ``{"heatmap": B x 1 x h x w logits, "size": B x 2 x h x w (box width,
    height as fractions of the image), "offset": B x 2 x h x w (centre position inside
    its cell, in [0, 1])}``.
    """

    def __init__(self, in_channels: int, mid_channels: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False),
            nn.GroupNorm(8, mid_channels),
            nn.ReLU(inplace=True),
        )
        self.heatmap = nn.Conv2d(mid_channels, 1, 1)
        self.size = nn.Conv2d(mid_channels, 2, 1)
        self.offset = nn.Conv2d(mid_channels, 2, 1)
        nn.init.constant_(self.heatmap.bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))

    def forward(self, fpn: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(fpn)
        return {
            "heatmap": self.heatmap(x),
            "size": torch.sigmoid(self.size(x)),
            "offset": torch.sigmoid(self.offset(x)),
        }


def decode_centernet(outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The box at the heat map's peak: ``(boxes B x 4 normalised xyxy, scores B)``.

    Centre = (peak cell + predicted offset) / map size; width and height are read at
    the same cell. Boxes are clipped to the image.
    """
    heat = outputs["heatmap"][:, 0].float()
    b, h, w = heat.shape
    scores, flat = heat.view(b, -1).max(dim=1)
    rows, cols = flat // w, flat % w
    batch = torch.arange(b, device=heat.device)
    offset = outputs["offset"].float()[batch, :, rows, cols]
    size = outputs["size"].float()[batch, :, rows, cols]
    cx = (cols.float() + offset[:, 0]) / w
    cy = (rows.float() + offset[:, 1]) / h
    boxes = torch.stack([cx - size[:, 0] / 2, cy - size[:, 1] / 2,
                         cx + size[:, 0] / 2, cy + size[:, 1] / 2], dim=1).clamp(0.0, 1.0)
    return boxes, torch.sigmoid(scores)


def set_output_prior(head: nn.Module, task: TaskSpec, prior: torch.Tensor) -> None:
    """Start a global head at its trivial baseline: shrink the last linear layer's weights
    (x0.1) and set its bias so the head outputs about ``prior`` for every image.

    classification: ``prior`` = class frequencies (bias = log-frequency, softmax gives them
    back); Regression: ``prior`` = ``K x 2`` mean normalised landmarks (bias = logit, the
    sigmoid gives them back). Training then learns what the image adds to the prior, and
    the first steps cannot do worse than the trivial baseline through a bad random bias.
    """
    linear = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    prior = prior.to(linear.bias).flatten().clamp(1e-4, 1 - 1e-4)
    if task.task_type == CLASSIFICATION:
        bias = prior.log()
    elif task.task_type == REGRESSION:
        bias = torch.logit(prior)
    else:
        raise ValueError(f"{task.task_id}: output priors are for classification and Regression heads")
    if bias.numel() != linear.bias.numel():
        raise ValueError(f"{task.task_id}: prior has {bias.numel()} values, the head outputs {linear.bias.numel()}")
    with torch.no_grad():
        linear.weight.mul_(0.1)
        linear.bias.copy_(bias)


def build_head(task: TaskSpec, fpn_channels: int, deepest_channels: int,
               dropout: float = 0.2, detection_channels: int = 64) -> nn.Module:
    """The head for one subtask, sized from its TaskSpec."""
    if task.task_type == SEGMENTATION:
        return SegmentationTaskHead(fpn_channels, task.num_classes)
    if task.task_type == CLASSIFICATION:
        return ClassificationTaskHead(deepest_channels, task.num_classes, dropout)
    if task.task_type == REGRESSION:
        return LandmarkRegressionHead(deepest_channels, task.num_points, dropout)
    if task.task_type == DETECTION:
        return CenterNetHead(fpn_channels, detection_channels)
    raise ValueError(f"{task.task_id}: no head for task type {task.task_type!r}")

