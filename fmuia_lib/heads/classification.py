"""Classification: pooled deepest feature, dropout, linear layer (smp's ClassificationHead)."""
from __future__ import annotations

import torch
from segmentation_models_pytorch.base import ClassificationHead
from torch import nn

from fmuia_lib.heads.common import float32_layer


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
