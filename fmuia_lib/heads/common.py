"""What every head shares: the FPN map's stride, float32 last layers, cell centres."""
from __future__ import annotations

from typing import Callable

import torch

#: Stride of the FPN map relative to the input image.
FPN_STRIDE = 4


def float32_layer(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in float32 with autocast off: for the layers whose outputs become
    probabilities or coordinates."""
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


def cell_centres(height: int, width: int,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised x of the ``width`` column centres and y of the ``height`` row centres of a
    map that covers the image: ``(j + 0.5) / width``, ``(i + 0.5) / height``."""
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    return xs, ys
