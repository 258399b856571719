"""Segmentation: smp's SegmentationHead on the FPN map, and the Dice (+ cross-entropy) loss."""
from __future__ import annotations

import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn
from torch.nn import functional as F

from fmuia_lib.heads.common import FPN_STRIDE, float32_layer


class SegmentationTaskHead(nn.Module):
    """smp's SegmentationHead on the FPN map, upsampled to the input size."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.head = SegmentationHead(in_channels, num_classes, kernel_size=1, upsampling=FPN_STRIDE)

    def forward(self, fpn: torch.Tensor) -> torch.Tensor:
        return float32_layer(self.head, fpn)  # a 1x1 conv and a bilinear upsampling

    def decode(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": out.float().softmax(dim=1)}


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
