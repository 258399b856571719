"""One small head per subtask, the head types each task type can use, and the function
that builds the right one for a TaskSpec.

Which features a head reads is fixed by its task type (see ``MultiTaskNet``):

============== ====================================== ==========================================
task type      input                                  output of ``head(x)``
============== ====================================== ==========================================
segmentation   FPN map ``B x F x H/4 x W/4``          logits ``B x C x H x W``
classification deepest encoder map ``B x D x h x w``  logits ``B x C``
Regression     deepest encoder map                    points ``B x K x 2`` (x, y), normalised
detection      FPN map                                the head type's dense map(s), below
============== ====================================== ==========================================

Detection and Regression have more than one head type (``TrainConfig.det_head``,
``TrainConfig.landmark_head``), registered in :data:`DETECTION_HEADS` and
:data:`LANDMARK_HEADS`; a new head type is one class with ``forward`` and ``decode``
added there (and, when it needs one, its loss in ``losses``):

* ``grid`` (the official baseline's detection head): two 3x3 conv-BN-ReLU blocks of 128
  channels and a 1x1 conv to 5 channels on the FPN map; channels 0-3 (after a sigmoid)
  are a normalised xyxy box, channel 4 an objectness logit. The baseline trains
  objectness only at the true centre cell, always towards 1, and reads the box at the
  cell of highest objectness.
* ``centernet`` (fmuia): CenterNet (Zhou et al. 2019, "Objects as Points"): a heat map
  whose peak is the box centre, with box size and sub-cell centre offset at every cell.
  Training supervises *every* cell of the heat map (a Gaussian bump around the true
  centre, zero elsewhere), so the cell with the highest score at inference is the cell
  that was trained to carry the box.
* ``linear`` (the baseline's landmark head): average pool, one linear layer to ``2K``
  unbounded coordinates.
* ``sigmoid`` (fmuia): average pool, dropout, linear layer, sigmoid: points stay in [0, 1].

**Precision.** Each head computes its last layer and activation in float32, even under
autocast (:func:`float32_layer`): their outputs become probabilities and coordinates,
and bf16 keeps 8 bits of mantissa (steps of 0.004 near 0.7, a pixel at 256 px).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from segmentation_models_pytorch.base import ClassificationHead, SegmentationHead
from torch import nn

from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec

#: Initial heat-map probability (CenterNet's focal-loss prior): almost every cell is
#: background, so starting near 0.1 keeps the first focal-loss steps stable.
HEATMAP_PRIOR = 0.1
#: Stride of the FPN map relative to the input image.
FPN_STRIDE = 4


def float32_layer(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in float32 with autocast off: for the layers whose outputs become
    probabilities or coordinates."""
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


class SegmentationTaskHead(nn.Module):
    """smp's SegmentationHead on the FPN map, upsampled to the input size."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.head = SegmentationHead(in_channels, num_classes, kernel_size=1, upsampling=FPN_STRIDE)

    def forward(self, fpn: torch.Tensor) -> torch.Tensor:
        return float32_layer(self.head, fpn)  # a 1x1 conv and a bilinear upsampling

    def decode(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": out.float().softmax(dim=1)}


class ClassificationTaskHead(nn.Module):
    """Global average pooling, dropout, linear layer (smp's ClassificationHead)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.head = ClassificationHead(in_channels, num_classes, pooling="avg", dropout=dropout)

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        pool, flatten, dropout, linear, activation = self.head
        return float32_layer(lambda x: activation(linear(x)), dropout(flatten(pool(deepest))))

    def decode(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": out.float().softmax(dim=1)}

    def prior_bias(self, prior: torch.Tensor) -> torch.Tensor:
        """The output bias whose softmax gives the class frequencies ``prior``."""
        return prior.log()


class LinearLandmarkHead(nn.Module):
    """The baseline's landmark head: pooled deepest feature -> one linear layer -> ``K`` points,
    no dropout, no activation (coordinates are unbounded)."""

    def __init__(self, in_channels: int, num_points: int) -> None:
        super().__init__()
        self.num_points = num_points
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_channels, 2 * num_points)

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        points = float32_layer(self.linear, self.pool(deepest).flatten(1))
        return points.view(-1, self.num_points, 2)

    def decode(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"points": out.float()}

    def prior_bias(self, prior: torch.Tensor) -> torch.Tensor:
        """The output bias that makes the head output ``prior`` (mean normalised landmarks)."""
        return prior


class LandmarkRegressionHead(nn.Module):
    """fmuia's landmark head: pooled deepest feature -> dropout -> linear -> ``K`` points; a
    sigmoid keeps coordinates in [0, 1]."""

    def __init__(self, in_channels: int, num_points: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_points = num_points
        self.head = ClassificationHead(in_channels, 2 * num_points, pooling="avg", dropout=dropout,
                                       activation="sigmoid")

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        pool, flatten, dropout, linear, activation = self.head
        points = float32_layer(lambda x: activation(linear(x)), dropout(flatten(pool(deepest))))
        return points.view(-1, self.num_points, 2)

    def decode(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"points": out.float()}

    def prior_bias(self, prior: torch.Tensor) -> torch.Tensor:
        """The output bias whose sigmoid gives ``prior`` (mean normalised landmarks)."""
        return torch.logit(prior)


class GridDetectionHead(nn.Module):
    """The baseline's detection head on the FPN map.

    Two 3x3 conv (no bias) - BatchNorm - ReLU blocks of ``mid_channels``, then a 1x1 conv to
    5 channels: returns ``B x 5 x h x w`` where channels 0-3 are ``sigmoid``-ed box corners
    (normalised xyxy) and channel 4 is the objectness logit.
    """

    def __init__(self, in_channels: int, mid_channels: int = 128) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(),
        )
        self.out = nn.Conv2d(mid_channels, 5, 1)

    def forward(self, fpn: torch.Tensor) -> torch.Tensor:
        raw = float32_layer(self.out, self.stem(fpn))
        return torch.cat([torch.sigmoid(raw[:, :4]), raw[:, 4:]], dim=1)

    def decode(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """The box at the cell of highest objectness, as the baseline reads it (corners as
        predicted, not reordered): ``{"boxes": B x 4, "scores": B}``."""
        out = out.float()
        b, _, h, w = out.shape
        best, flat = out[:, 4].reshape(b, -1).max(dim=1)
        batch = torch.arange(b, device=out.device)
        return {"boxes": out[batch, :4, flat // w, flat % w], "scores": torch.sigmoid(best)}


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
            "heatmap": float32_layer(self.heatmap, x),
            "size": torch.sigmoid(float32_layer(self.size, x)),
            "offset": torch.sigmoid(float32_layer(self.offset, x)),
        }

    def decode(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        boxes, scores = decode_centernet(out)
        return {"boxes": boxes, "scores": scores}


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

    classification: ``prior`` = class frequencies; Regression: ``prior`` = ``K x 2`` mean
    normalised landmarks. The head type knows the bias that gives its output back
    (``head.prior_bias``: the log for a softmax, the logit for a sigmoid, the value itself
    for a linear output). Training then learns what the image adds to the prior, and the
    first steps cannot do worse than the trivial baseline through a bad random bias.
    """
    if task.task_type not in (CLASSIFICATION, REGRESSION):
        raise ValueError(f"{task.task_id}: output priors are for classification and Regression heads")
    linear = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    bias = head.prior_bias(prior.to(linear.bias).flatten().clamp(1e-4, 1 - 1e-4))
    if bias.numel() != linear.bias.numel():
        raise ValueError(f"{task.task_id}: prior has {bias.numel()} values, the head outputs {linear.bias.numel()}")
    with torch.no_grad():
        linear.weight.mul_(0.1)
        linear.bias.copy_(bias)


#: Detection head types: name -> builder(fpn_channels) (each type keeps its own width:
#: the baseline's grid head 128 channels, CenterNet 64).
DETECTION_HEADS: dict[str, Callable[[int], nn.Module]] = {"grid": GridDetectionHead, "centernet": CenterNetHead}
#: Regression (landmark) head types: name -> builder(deepest_channels, num_points, dropout).
LANDMARK_HEADS: dict[str, Callable[[int, int, float], nn.Module]] = {
    "linear": lambda channels, points, dropout: LinearLandmarkHead(channels, points),  # the baseline's: no dropout
    "sigmoid": LandmarkRegressionHead,
}


def build_head(task: TaskSpec, fpn_channels: int, deepest_channels: int, dropout: float = 0.2,
               det_head: str = "grid", landmark_head: str = "linear") -> nn.Module:
    """The head for one subtask, sized from its TaskSpec, of the given head types."""
    if task.task_type == SEGMENTATION:
        return SegmentationTaskHead(fpn_channels, task.num_classes)
    if task.task_type == CLASSIFICATION:
        return ClassificationTaskHead(deepest_channels, task.num_classes, dropout)
    if task.task_type == REGRESSION:
        return _registered(LANDMARK_HEADS, landmark_head, "landmark")(deepest_channels, task.num_points, dropout)
    if task.task_type == DETECTION:
        return _registered(DETECTION_HEADS, det_head, "detection")(fpn_channels)
    raise ValueError(f"{task.task_id}: no head for task type {task.task_type!r}")


def _registered(registry: dict[str, Callable[..., nn.Module]], name: str, kind: str) -> Callable[..., nn.Module]:
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} head {name!r}; known: {', '.join(registry)}") from None
