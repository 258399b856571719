"""One small head per subtask, the head types each task type can use, and the function
that builds the right one for a TaskSpec.

Which features a head reads follows its task type and, for Regression, its head type
(:func:`reads_fpn`, the one routing rule ``MultiTaskNet`` applies):

============== ====================================== ==========================================
task type      input                                  output of ``head(x)``
============== ====================================== ==========================================
segmentation   FPN map ``B x F x H/4 x W/4``          logits ``B x C x H x W``
classification deepest encoder map ``B x D x h x w``  logits ``B x C``
Regression     deepest encoder map (``linear``,       points ``B x K x 2`` (x, y), normalised;
               ``sigmoid``); FPN map (``heatmap``)    ``heatmap``: a dict, below
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
* ``heatmap`` (fmuia): integral regression (Sun et al. 2018, "Integral Human Pose
  Regression"; Nibali et al. 2018, DSNT) on the FPN map: one heat map per landmark, whose
  spatial softmax is a probability map; training fits its expectation (a soft-argmax), which
  is differentiable, stays in the image and is finer than the map's cells. Returns
  ``{"heatmap": B x K x H/4 x W/4 logits, "points": B x K x 2}``. Prediction reads each map's
  spatial median instead (the point of least expected distance, what MRE scores).

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
#: Landmark head types that read the FPN map; the others read the deepest encoder map.
FPN_LANDMARK_HEADS = frozenset({"heatmap"})
#: Factor on the heat-map head's logits. Adam moves each weight by about the learning rate per
#: step, and the head's last layer starts at zero: unscaled, its 64-channel logits need hundreds
#: of steps to reach the ~10 nats of contrast of a map peaked on one cell, while a landmark
#: task gets a few dozen steps in a CPU run. Scaling the logits scales that speed.
HEATMAP_LOGIT_SCALE = 5.0
#: Spread of the heat-map head's mean-landmark prior (``HeatmapLandmarkHead.set_prior``), as a
#: fraction of the image side: wide enough that the image overrides it wherever it shows the point.
HEATMAP_PRIOR_SIGMA = 0.25


def reads_fpn(task: TaskSpec, landmark_head: str = "linear") -> bool:
    """The routing rule: True when ``task``'s head reads the FPN map, False when it reads the
    deepest encoder map. Dense tasks (segmentation, detection) read the FPN map; Regression
    reads it with a landmark head type of :data:`FPN_LANDMARK_HEADS` (``heatmap``);
    classification and the other Regression heads read the deepest map (the baseline's rule)."""
    return task.is_dense or (task.task_type == REGRESSION and landmark_head in FPN_LANDMARK_HEADS)


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


class HeatmapLandmarkHead(nn.Module):
    """fmuia's landmark head on the FPN map: integral (soft-argmax) regression.

    A 3x3 conv (no bias) - GroupNorm - ReLU block of ``mid_channels``, then a 1x1 conv to one
    heat map per landmark, times :data:`HEATMAP_LOGIT_SCALE`. The spatial softmax of heat map
    ``k`` is a probability map over the ``h x w`` cells; in training, landmark ``k`` is its
    expectation over the cell centres (:func:`soft_argmax`); :meth:`decode` (prediction) takes
    the map's spatial median (:func:`spatial_median`). Returns ``{"heatmap": B x K x h x w logits, "points": B x K x 2
    normalised (x, y)}``. The last layer starts at zero: every heat map starts flat (the
    point at the image centre), or at the mean-landmark prior once :meth:`set_prior` has run.
    """

    def __init__(self, in_channels: int, num_points: int, mid_channels: int = 64) -> None:
        super().__init__()
        self.num_points = num_points
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False),
            nn.GroupNorm(8, mid_channels),
            nn.ReLU(inplace=True),
        )
        self.heatmap = nn.Conv2d(mid_channels, num_points, 1)
        nn.init.zeros_(self.heatmap.weight)
        nn.init.zeros_(self.heatmap.bias)
        # The mean-landmark prior (set_prior): K x 2 normalised points, and its weight (0: no
        # prior). Buffers, so that checkpoints and inference files carry them.
        self.register_buffer("prior", torch.full((num_points, 2), 0.5))
        self.register_buffer("prior_weight", torch.zeros(()))

    def forward(self, fpn: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = HEATMAP_LOGIT_SCALE * float32_layer(self.heatmap, self.stem(fpn))
        logits = logits + self.prior_weight * self.log_prior(*logits.shape[-2:])
        return {"heatmap": logits, "points": soft_argmax(logits)}

    def log_prior(self, height: int, width: int) -> torch.Tensor:
        """``K x h x w``: the log of an isotropic Gaussian of spread :data:`HEATMAP_PRIOR_SIGMA`
        (up to a constant, which the softmax ignores) whose soft-argmax on this map is the
        prior point. A Gaussian cut off by the image border has its mean pulled towards the
        centre (by 0.05 for a point at 0.3), so its centre is moved outwards to compensate
        (:func:`gaussian_centres_for_mean`)."""
        xs, ys = cell_centres(height, width, self.prior.device)
        cx = gaussian_centres_for_mean(self.prior[:, 0], xs, HEATMAP_PRIOR_SIGMA)
        cy = gaussian_centres_for_mean(self.prior[:, 1], ys, HEATMAP_PRIOR_SIGMA)
        dx2 = (xs[None, None, :] - cx[:, None, None]) ** 2
        dy2 = (ys[None, :, None] - cy[:, None, None]) ** 2
        return -(dx2 + dy2) / (2 * HEATMAP_PRIOR_SIGMA ** 2)

    def set_prior(self, prior: torch.Tensor) -> None:
        """Start at the mean landmarks ``prior`` (``K x 2``, normalised): a Gaussian log-prior
        of spread :data:`HEATMAP_PRIOR_SIGMA` is added to every heat map, so the untrained head
        (flat heat maps) predicts ``prior`` itself (:meth:`log_prior`), and training learns what
        the image adds."""
        prior = prior.reshape(-1, 2)
        if prior.shape[0] != self.num_points:
            raise ValueError(f"prior has {prior.shape[0]} points, the head predicts {self.num_points}")
        with torch.no_grad():
            self.prior.copy_(prior.to(self.prior))
            self.prior_weight.fill_(1.0)

    def decode(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each landmark at the spatial median of its heat map (:func:`spatial_median`): the
        point of least expected distance under the map, which is what MRE scores. Training
        fits the soft-argmax (the map's mean); where a map still hesitates between two places,
        the mean lies between them and the median moves to the heavier one."""
        return {"points": spatial_median(out["heatmap"])}


def cell_centres(height: int, width: int,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised x of the ``width`` column centres and y of the ``height`` row centres of a
    map that covers the image: ``(j + 0.5) / width``, ``(i + 0.5) / height``."""
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    return xs, ys


#: Newton steps of :func:`gaussian_centres_for_mean`: from the target itself as the first
#: guess, the error shrinks quadratically; 8 steps reach float32 precision on any map.
_CENTRE_NEWTON_STEPS = 8


def gaussian_centres_for_mean(means: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """For each target in ``means`` (1-D, normalised), the centre ``mu`` of a Gaussian of
    spread ``sigma`` whose softmax over the cell ``centres`` (1-D) has that mean.

    The mean is an increasing function of ``mu`` with derivative ``variance / sigma**2``
    (the Gaussian's log is linear in ``mu``), so Newton's method solves it; no library
    inverts a discretised truncated-Gaussian mean. Targets are first clamped into the
    reachable range, strictly between the first and last cell centres.
    """
    with torch.no_grad():
        lo, hi = float(centres[0]), float(centres[-1])
        margin = 1e-3 * (hi - lo)
        target = means.float().clamp(lo + margin, hi - margin)
        mu = target.clone()
        for _ in range(_CENTRE_NEWTON_STEPS):
            probs = (-(centres[None, :] - mu[:, None]) ** 2 / (2 * sigma ** 2)).softmax(dim=-1)
            mean = (probs * centres).sum(dim=-1)
            var = (probs * (centres[None, :] - mean[:, None]) ** 2).sum(dim=-1)
            mu = mu + (target - mean) * sigma ** 2 / var.clamp_min(1e-12)
        return mu


def soft_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``B x K x h x w`` heat-map logits -> ``B x K x 2`` normalised (x, y): the expected cell
    centre under each map's spatial softmax (float32)."""
    logits = logits.float()
    b, k, h, w = logits.shape
    probs = logits.reshape(b, k, h * w).softmax(dim=-1).reshape(b, k, h, w)
    xs, ys = cell_centres(h, w, logits.device)
    return torch.stack([(probs.sum(dim=2) * xs).sum(dim=-1), (probs.sum(dim=3) * ys).sum(dim=-1)], dim=-1)


#: :func:`spatial_median` stops when no point moved by more than this (a fraction of the
#: image) in one Weiszfeld step, or after :data:`_MEDIAN_MAX_STEPS` steps. On random maps of
#: 16 x 16 to 64 x 64 cells its expected distance is then within 1e-4 of the least one.
_MEDIAN_TOLERANCE = 1e-6
_MEDIAN_MAX_STEPS = 100


def spatial_median(logits: torch.Tensor) -> torch.Tensor:
    """``B x K x h x w`` heat-map logits -> ``B x K x 2`` normalised (x, y): for each map, the
    point that minimises the expected distance to a cell drawn from its spatial softmax (the
    geometric median of the cell centres weighted by the map), in the image's normalised
    frame (float32).

    Weiszfeld's algorithm from the soft-argmax: each step is the cell centres' mean weighted
    by ``probability / distance``. Written here because scipy and scikit-learn have no
    weighted geometric median, batched or not; it is a few tensor operations per step.
    """
    # float32 throughout: prediction runs under autocast, which would take the matmuls to bf16
    with torch.no_grad(), torch.autocast(logits.device.type, enabled=False):
        logits = logits.float()
        b, k, h, w = logits.shape
        probs = logits.reshape(b, k, h * w).softmax(dim=-1)
        xs, ys = cell_centres(h, w, logits.device)
        cells = torch.stack([xs.repeat(h), ys.repeat_interleave(w)], dim=-1)  # (h*w) x 2, row-major
        point = probs @ cells
        for _ in range(_MEDIAN_MAX_STEPS):
            distance = (cells[None, None] - point[:, :, None]).norm(dim=-1).clamp_min(1e-6)
            weights = probs / distance
            moved, point = point, (weights @ cells) / weights.sum(dim=-1, keepdim=True)
            if (point - moved).abs().max() <= _MEDIAN_TOLERANCE:
                break
        # Weiszfeld crawls towards a median that is a cell centre itself. A cell centre c is the
        # median exactly when the pull of the other cells, |sum p_i (c_i - c) / |c_i - c||, is
        # at most its own probability: test the cell nearest the iterate.
        nearest = (cells[None, None] - point[:, :, None]).norm(dim=-1).argmin(dim=-1)
        centre = cells[nearest]
        offsets = cells[None, None] - centre[:, :, None]
        units = offsets / offsets.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        pull = (probs[..., None] * units).sum(dim=-2).norm(dim=-1)
        at_centre = pull <= probs.gather(-1, nearest[..., None])[..., 0]
        return torch.where(at_centre[..., None], centre, point)


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
    """Start a landmark head at its trivial baseline: shrink the last linear layer's weights
    (x0.1) and set its bias so the head outputs about ``prior`` (``K x 2`` mean normalised
    landmarks) for every image.

    The head type knows the bias that gives its output back (``head.prior_bias``: the logit
    for a sigmoid, the value itself for a linear output). Training then learns what the image
    adds to the prior, and the first steps cannot do worse than the trivial baseline through a
    bad random bias. A head type without a final linear layer sets its own prior
    (``head.set_prior``: the heat-map head's Gaussian log-prior).
    """
    if task.task_type != REGRESSION:
        raise ValueError(f"{task.task_id}: output priors are for Regression (landmark) heads")
    if hasattr(head, "set_prior"):
        head.set_prior(prior)
        return
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
#: Regression (landmark) head types: name -> builder(in_channels, num_points, dropout), where
#: ``in_channels`` is the FPN map's for the types of :data:`FPN_LANDMARK_HEADS`, else the
#: deepest encoder map's.
LANDMARK_HEADS: dict[str, Callable[[int, int, float], nn.Module]] = {
    "linear": lambda channels, points, dropout: LinearLandmarkHead(channels, points),  # the baseline's: no dropout
    "sigmoid": LandmarkRegressionHead,
    "heatmap": lambda channels, points, dropout: HeatmapLandmarkHead(channels, points),  # dense: no dropout
}


def build_head(task: TaskSpec, fpn_channels: int, deepest_channels: int, dropout: float = 0.2,
               det_head: str = "grid", landmark_head: str = "linear") -> nn.Module:
    """The head for one subtask, sized from its TaskSpec, of the given head types."""
    if task.task_type == SEGMENTATION:
        return SegmentationTaskHead(fpn_channels, task.num_classes)
    if task.task_type == CLASSIFICATION:
        return ClassificationTaskHead(deepest_channels, task.num_classes, dropout)
    if task.task_type == REGRESSION:
        channels = fpn_channels if reads_fpn(task, landmark_head) else deepest_channels
        return _registered(LANDMARK_HEADS, landmark_head, "landmark")(channels, task.num_points, dropout)
    if task.task_type == DETECTION:
        return _registered(DETECTION_HEADS, det_head, "detection")(fpn_channels)
    raise ValueError(f"{task.task_id}: no head for task type {task.task_type!r}")


def _registered(registry: dict[str, Callable[..., nn.Module]], name: str, kind: str) -> Callable[..., nn.Module]:
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} head {name!r}; known: {', '.join(registry)}") from None
