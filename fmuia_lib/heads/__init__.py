"""One small head per subtask, and the registry of head types: each entry carries its
builder, its loss, whether it reads the FPN map, and its decoding (the head's ``decode``).

Which features a head reads is the routing rule (:func:`reads_fpn`, which ``MultiTaskNet``
applies once per task): it is a property of the head type, so a new type says it once.

============== ====================================== ==========================================
task type      input                                  output of ``head(x)``
============== ====================================== ==========================================
segmentation   FPN map ``B x F x H/4 x W/4``          logits ``B x C x H x W``
classification deepest encoder map ``B x D x h x w``  logits ``B x C``
Regression     deepest encoder map (``linear``,       points ``B x K x 2`` (x, y), normalised;
               ``sigmoid``); FPN map (``heatmap``)    ``heatmap``: a dict (``heads.landmarks``)
detection      FPN map                                the head type's dense map(s) (``heads.detection``)
============== ====================================== ==========================================

Modules by role: :mod:`.segmentation`, :mod:`.classification`, :mod:`.detection` (``grid``,
``centernet``), :mod:`.landmarks` (``linear``, ``sigmoid``, ``heatmap``), :mod:`.common`.
Adding a head type is one class (``forward``, ``decode``), its loss, and one
:class:`HeadType` entry in :data:`HEAD_TYPES`.

**Precision.** Each head computes its last layer and activation in float32, even under
autocast (:func:`float32_layer`): their outputs become probabilities and coordinates,
and bf16 keeps 8 bits of mantissa (steps of 0.004 near 0.7, a pixel at 256 px).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from fmuia_lib.heads.classification import ClassificationTaskHead
from fmuia_lib.heads.common import FPN_STRIDE, cell_centres, float32_layer
from fmuia_lib.heads.detection import (CenterNetHead, CenterNetLoss, GridDetectionHead, GridDetectionLoss,
                                       centernet_focal_loss, centre_heatmap, decode_centernet)
from fmuia_lib.heads.landmarks import (HeatmapLandmarkHead, HeatmapLandmarkLoss, LinearLandmarkHead,
                                       RegressionLoss, SigmoidLandmarkHead, gaussian_centres_for_mean,
                                       landmark_heatmap, set_output_prior, soft_argmax, spatial_median)
from fmuia_lib.heads.segmentation import SegmentationLoss, SegmentationTaskHead
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec


@dataclass(frozen=True)
class HeadType:
    """One head type: how to build it, its loss, its input, where it comes from.

    ``build(in_channels, task, dropout)`` returns the head (an ``nn.Module`` whose ``decode``
    turns its raw output into probabilities, boxes or points); ``loss(options)`` returns its
    loss from the loss options (:class:`fmuia_lib.losses.MultiTaskLoss`'s arguments);
    ``reads_fpn``: True when it reads the FPN map, False for the deepest encoder map.
    """

    name: str
    task_type: str
    build: Callable[[int, TaskSpec, float], nn.Module]
    loss: Callable[[Mapping[str, Any]], nn.Module]
    reads_fpn: bool
    origin: str  # "baseline" (the official code's) or "fmuia"


def _entries(*types: HeadType) -> dict[str, HeadType]:
    return {t.name: t for t in types}


#: task type -> head type name -> :class:`HeadType`. Segmentation and classification have one
#: type each; detection and landmarks are chosen by ``TrainConfig.det_head`` / ``landmark_head``.
HEAD_TYPES: dict[str, dict[str, HeadType]] = {
    SEGMENTATION: _entries(HeadType(
        "fpn", SEGMENTATION, lambda c, task, dropout: SegmentationTaskHead(c, task.num_classes),
        lambda o: SegmentationLoss(with_ce=o["seg_loss"] == "dice_ce"), reads_fpn=True, origin="baseline")),
    CLASSIFICATION: _entries(HeadType(
        "pooled", CLASSIFICATION, lambda c, task, dropout: ClassificationTaskHead(c, task.num_classes, dropout),
        lambda o: nn.CrossEntropyLoss(label_smoothing=o["cls_label_smoothing"]), reads_fpn=False, origin="baseline")),
    DETECTION: _entries(
        # each type keeps its own width: the baseline's grid head 128 channels, CenterNet 64
        HeadType("grid", DETECTION, lambda c, task, dropout: GridDetectionHead(c),
                 lambda o: GridDetectionLoss(), reads_fpn=True, origin="baseline"),
        HeadType("centernet", DETECTION, lambda c, task, dropout: CenterNetHead(c),
                 lambda o: CenterNetLoss(o["det_size_weight"], o["det_offset_weight"]), reads_fpn=True,
                 origin="fmuia")),
    REGRESSION: _entries(
        # the baseline's: no dropout
        HeadType("linear", REGRESSION, lambda c, task, dropout: LinearLandmarkHead(c, task.num_points),
                 lambda o: RegressionLoss(o["reg_loss"]), reads_fpn=False, origin="baseline"),
        HeadType("sigmoid", REGRESSION, lambda c, task, dropout: SigmoidLandmarkHead(c, task.num_points, dropout),
                 lambda o: RegressionLoss(o["reg_loss"]), reads_fpn=False, origin="fmuia"),
        # dense: no dropout
        HeadType("heatmap", REGRESSION, lambda c, task, dropout: HeatmapLandmarkHead(c, task.num_points),
                 lambda o: HeatmapLandmarkLoss(o["reg_loss"], o["landmark_heatmap_weight"]), reads_fpn=True,
                 origin="fmuia")),
}


def head_type(task_type: str, det_head: str = "grid", landmark_head: str = "linear") -> HeadType:
    """The head type a task of ``task_type`` gets under the chosen detection and landmark types."""
    types = HEAD_TYPES[task_type]
    name = {DETECTION: det_head, REGRESSION: landmark_head}.get(task_type, next(iter(types)))
    if name not in types:
        kind = "detection" if task_type == DETECTION else "landmark"
        raise ValueError(f"unknown {kind} head {name!r}; known: {', '.join(types)}")
    return types[name]


def reads_fpn(task: TaskSpec, landmark_head: str = "linear", det_head: str = "grid") -> bool:
    """The routing rule: True when ``task``'s head reads the FPN map, False when it reads the
    deepest encoder map. Segmentation and detection heads read the FPN map, classification
    heads the deepest map; landmark heads as their type says (``linear`` and ``sigmoid``: the
    deepest map, the baseline's rule for global tasks; ``heatmap``: the FPN map)."""
    return head_type(task.task_type, det_head, landmark_head).reads_fpn


def build_head(task: TaskSpec, fpn_channels: int, deepest_channels: int, dropout: float = 0.2,
               det_head: str = "grid", landmark_head: str = "linear") -> nn.Module:
    """The head for one subtask, sized from its TaskSpec, of the given head types."""
    kind = head_type(task.task_type, det_head, landmark_head)
    return kind.build(fpn_channels if kind.reads_fpn else deepest_channels, task, dropout)


__all__ = ["HeadType", "HEAD_TYPES", "head_type", "reads_fpn", "build_head", "FPN_STRIDE", "float32_layer",
           "cell_centres", "SegmentationTaskHead", "SegmentationLoss", "ClassificationTaskHead",
           "GridDetectionHead", "GridDetectionLoss", "CenterNetHead", "CenterNetLoss", "centre_heatmap",
           "centernet_focal_loss", "decode_centernet", "LinearLandmarkHead", "SigmoidLandmarkHead",
           "HeatmapLandmarkHead", "RegressionLoss", "HeatmapLandmarkLoss", "landmark_heatmap",
           "soft_argmax", "spatial_median", "gaussian_centres_for_mean", "set_output_prior"]
