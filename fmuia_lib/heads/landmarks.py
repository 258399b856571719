"""Landmarks (Regression): the baseline's linear head, fmuia's sigmoid head and its heat-map
head, their losses, their decoding, and the mean-landmark prior.

* ``linear`` (the baseline's landmark head): average pool, one linear layer to ``2K``
  unbounded coordinates.
* ``sigmoid`` (fmuia): average pool, dropout, linear layer, sigmoid: points stay in [0, 1].
* ``heatmap`` (fmuia): integral regression (Sun et al. 2018, "Integral Human Pose
  Regression"; Nibali et al. 2018, DSNT) on the FPN map: one heat map per landmark, whose
  spatial softmax is a probability map; training fits its expectation (a soft-argmax), which
  is differentiable, stays in the image and is finer than the map's cells. Returns
  ``{"heatmap": B x K x H/4 x W/4 logits, "points": B x K x 2}``. Prediction reads each map's
  spatial median instead (the point of least expected distance, what MRE scores).
"""
from __future__ import annotations

import torch
from segmentation_models_pytorch.base import ClassificationHead
from torch import nn
from torch.nn import functional as F

from fmuia_lib.heads.common import cell_centres, float32_layer
from fmuia_lib.tasks import REGRESSION, TaskSpec

#: Factor on the heat-map head's logits. Adam moves each weight by about the learning rate per
#: step, and the head's last layer starts at zero: unscaled, its 64-channel logits need hundreds
#: of steps to reach the ~10 nats of contrast of a map peaked on one cell, while a landmark
#: task gets a few dozen steps in a CPU run. Scaling the logits scales that speed.
HEATMAP_LOGIT_SCALE = 5.0
#: Spread of the heat-map head's mean-landmark prior (``HeatmapLandmarkHead.set_prior``), as a
#: fraction of the image side: wide enough that the image overrides it wherever it shows the point.
HEATMAP_PRIOR_SIGMA = 0.25


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


class SigmoidLandmarkHead(nn.Module):
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
