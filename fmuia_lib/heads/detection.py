"""Detection, one box per image: the baseline's grid head and fmuia's CenterNet head, each
with its loss and its decoding.

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
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fmuia_lib.heads.common import float32_layer

#: Initial heat-map probability (CenterNet's focal-loss prior): almost every cell is
#: background, so starting near 0.1 keeps the first focal-loss steps stable.
HEATMAP_PRIOR = 0.1
#: TTFNet's ratio between a box side and its Gaussian's diameter (Liu et al. 2020).
GAUSSIAN_ALPHA = 0.54


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
