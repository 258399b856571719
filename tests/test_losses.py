"""Losses: targets, options, uncertainty weighting, and over-fitting one tiny batch per task type."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

from fmuia_lib.losses import (CenterNetLoss, HeatmapLandmarkLoss, MultiTaskLoss, RegressionLoss, SegmentationLoss,
                              centernet_focal_loss, centre_heatmap, landmark_heatmap)
from fmuia_lib.model import MultiTaskNet
from fmuia_lib.tasks import CLASSIFICATION, REGRESSION, SEGMENTATION, select_tasks

SIZE = 64
#: A narrow FPN keeps these CPU tests fast; the routing and heads are the same.
SMALL = dict(encoder_name="resnet18", encoder_weights=None, fpn_pyramid_channels=64,
             fpn_segmentation_channels=32)
BOXES = torch.tensor([[0.15, 0.20, 0.45, 0.50], [0.50, 0.55, 0.90, 0.80]])


def blob_images(boxes: torch.Tensor) -> torch.Tensor:
    """Dark images with one bright rectangle per box (plus a little noise)."""
    gen = torch.Generator().manual_seed(0)
    images = 0.1 * torch.randn(len(boxes), 3, SIZE, SIZE, generator=gen)
    for image, box in zip(images, boxes):
        x0, y0, x1, y1 = (box * SIZE).long().tolist()
        image[:, y0:y1, x0:x1] += 2.0
    return images


def targets_for(task, images: torch.Tensor) -> torch.Tensor:
    if task.task_type == SEGMENTATION:
        return (images[:, 0] > 1).long() * (task.num_classes - 1)
    if task.task_type == CLASSIFICATION:
        return torch.tensor([0, 1])
    if task.task_type == REGRESSION:
        centres = torch.stack([(BOXES[:, 0] + BOXES[:, 2]) / 2, (BOXES[:, 1] + BOXES[:, 3]) / 2], dim=1)
        return centres[:, None, :].repeat(1, task.num_points, 1)
    return BOXES


def test_centre_heatmap_peaks_at_the_centre_cell():
    heat, cell, offset = centre_heatmap(BOXES, 16, 16)
    assert heat.shape == (2, 16, 16)
    for i in range(2):
        row, col = cell[i].tolist()
        assert heat[i, row, col] == 1.0
        assert (heat[i] == 1.0).sum() == 1  # one positive; every other cell is a (soft) negative
        assert heat[i].min() < 0.01
    cx = (BOXES[:, 0] + BOXES[:, 2]) / 2 * 16
    torch.testing.assert_close(cell[:, 1].float() + offset[:, 0], cx)


def test_focal_loss_rewards_the_peak_and_punishes_confident_negatives():
    target, cell, _ = centre_heatmap(BOXES[:1], 16, 16)
    good = torch.full((1, 16, 16), -6.0)
    good[0, cell[0, 0], cell[0, 1]] = 6.0
    shifted = torch.full((1, 16, 16), -6.0)
    shifted[0, 0, 0] = 6.0  # confident at a far, wrong cell
    flat = torch.zeros(1, 16, 16)  # 0.5 everywhere
    assert centernet_focal_loss(good, target) < centernet_focal_loss(flat, target)
    assert centernet_focal_loss(good, target) < centernet_focal_loss(shifted, target)


def test_loss_options():
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    dice = SegmentationLoss()(logits, target)
    dice_ce = SegmentationLoss(with_ce=True)(logits, target)
    torch.testing.assert_close(dice_ce, dice + torch.nn.functional.cross_entropy(logits, target))
    points, gt = torch.rand(2, 3, 2), torch.rand(2, 3, 2)
    torch.testing.assert_close(RegressionLoss("mse")(points, gt), ((points - gt) ** 2).mean())
    # SmoothL1 with beta 0.05: 0.5 d^2 / beta below beta, |d| - beta / 2 beyond it
    near, far = torch.zeros(1, 1, 2), torch.tensor([[[0.02, 0.3]]])
    torch.testing.assert_close(RegressionLoss("smooth_l1")(far, near),
                               torch.tensor((0.5 * 0.02 ** 2 / 0.05 + 0.3 - 0.025) / 2))
    outlier = torch.tensor([[[0.9, 0.0]]])  # beyond beta it grows linearly, MSE quadratically
    assert RegressionLoss("smooth_l1")(outlier, near) == pytest.approx((0.9 - 0.025) / 2)
    assert RegressionLoss("mse")(outlier, near) == pytest.approx(0.81 / 2)


def test_type_weights_and_uncertainty_weighting():
    task = select_tasks(["organ_cls"])[0]
    logits, target = torch.randn(4, 6), torch.randint(0, 6, (4,))
    fixed = MultiTaskLoss(loss_weights={CLASSIFICATION: 3.0})
    loss, raw = fixed(logits, target, task)
    torch.testing.assert_close(loss, 3.0 * raw)
    learned = MultiTaskLoss(uncertainty_weighting=True)
    with torch.no_grad():
        learned.log_vars[CLASSIFICATION].fill_(math.log(2.0))
    loss, raw = learned(logits, target, task)
    torch.testing.assert_close(loss, raw / 2 + math.log(2.0))
    loss.backward()
    assert learned.log_vars[CLASSIFICATION].grad is not None
    assert learned.log_vars[SEGMENTATION].grad is None


@pytest.mark.parametrize("heads", [{"det_head": "grid", "landmark_head": "linear"},  # the baseline's
                                   {"det_head": "centernet", "landmark_head": "sigmoid"},
                                   {"det_head": "centernet", "landmark_head": "heatmap"}],
                         ids=["official", "sigmoid", "heatmap"])
@pytest.mark.parametrize("task_id", ["cardiac_multi", "organ_cls", "IUGC", "thyroid_nodule_det"])
def test_each_loss_decreases_when_overfitting_one_batch(task_id, heads):
    torch.manual_seed(0)
    task = select_tasks([task_id])[0]
    net = MultiTaskNet([task], **SMALL, **heads)
    criterion = MultiTaskLoss(**heads)
    images = blob_images(BOXES)
    target = targets_for(task, images)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def eval_loss() -> float:
        net.eval()
        with torch.no_grad():
            return criterion(net(images, task_id), target, task)[1].item()

    before = eval_loss()
    net.train()
    for _ in range(25):  # enough for every head type at every seed tried (0-3)
        loss, _ = criterion(net(images, task_id), target, task)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = eval_loss()
    assert after < 0.7 * before, (task.task_type, before, after)


def test_detection_selects_the_trained_box():
    """After over-fitting two images, the highest-scoring cell is the true centre cell
    and the box decoded there overlaps the true box (the baseline's grid head offers
    neither: it never trains objectness away from the true cell)."""
    torch.manual_seed(0)
    task = select_tasks(["thyroid_nodule_det"])[0]
    net = MultiTaskNet([task], **SMALL, fpn_dropout=0.0, det_head="centernet")
    images = blob_images(BOXES)
    criterion = CenterNetLoss()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(30):
        loss = criterion(net(images, task.task_id), BOXES)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pred = net.predict(images, task.task_id)
    ious = box_iou(pred["boxes"], BOXES).diag()
    assert (ious > 0.5).all(), ious
    net.eval()
    with torch.no_grad():
        heat = net(images, task.task_id)["heatmap"][:, 0]
    _, cell, _ = centre_heatmap(BOXES, heat.shape[1], heat.shape[2])
    peak = heat.flatten(1).argmax(dim=1)
    assert torch.equal(peak, cell[:, 0] * heat.shape[2] + cell[:, 1])


def test_landmark_heatmap_is_a_gaussian_probability_map_around_the_point():
    points = torch.tensor([[[0.5, 0.5], [0.1, 0.9]]])
    maps = landmark_heatmap(points, 8, 16, sigma_cells=1.0)
    assert maps.shape == (1, 2, 8, 16)
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(1, 2))
    # (0.5, 0.5) lies on the corner of four cells: they share the peak equally
    top = maps[0, 0].flatten().topk(4).indices
    assert sorted((int(i) // 16, int(i) % 16) for i in top) == [(3, 7), (3, 8), (4, 7), (4, 8)]
    # x 0.1 of 16 columns is 1.6 cells: column 1 (centre 1.5) holds the peak; y 0.9 of 8 rows: row 7
    assert divmod(int(maps[0, 1].argmax()), 16) == (7, 1)


def test_heatmap_landmark_loss_is_the_point_loss_plus_a_kl_term_that_vanishes_at_the_target():
    target = torch.tensor([[[0.3, 0.6], [0.7, 0.2]]])
    perfect = landmark_heatmap(target, 16, 16).clamp_min(1e-30).log()
    from fmuia_lib.heads import soft_argmax

    outputs = {"heatmap": perfect, "points": soft_argmax(perfect)}
    loss = HeatmapLandmarkLoss("smooth_l1", heatmap_weight=2.0)
    parts = loss.parts(outputs, target)
    assert parts["heatmap"].item() == pytest.approx(0.0, abs=1e-5)
    assert parts["points"].item() < 1e-4  # the Gaussian's mean is the point, up to the map's edge
    flat = {"heatmap": torch.zeros(1, 2, 16, 16), "points": torch.full((1, 2, 2), 0.5)}
    parts = loss.parts(flat, target)
    assert parts["heatmap"].item() > 1.0
    assert parts["points"].item() == pytest.approx(RegressionLoss("smooth_l1")(flat["points"], target).item())
    torch.testing.assert_close(loss(flat, target), parts["points"] + parts["heatmap"])
    assert HeatmapLandmarkLoss(heatmap_weight=0.0).parts(flat, target)["heatmap"].item() == 0.0
