"""The phantom's labels are learnable: cheap models beat label-only baselines on held-out
phantom images, for every task type.

Each check trains on a few dozen images of one subtask, downsampled to 64 x 64, and
scores images it never saw against a baseline that knows the training labels but not the
image (majority class, average mask / box / landmarks). A recipe whose label did not follow
from the image would leave the model at the baseline.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from fmuia_lib.sources.phantom import render
from fmuia_lib.sources.phantom.render import image_rng
from fmuia_lib.tasks import load_manifest

SIZE = 64


def _orientation_histograms(image: np.ndarray, cell: int = 8, bins: int = 9) -> np.ndarray:
    """HOG-like features: gradient-magnitude-weighted orientation histograms per cell."""
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1)
    magnitude = np.hypot(gx, gy)
    which = (np.mod(np.arctan2(gy, gx), np.pi) / np.pi * bins).astype(int).clip(0, bins - 1)
    hist = np.zeros((SIZE // cell, SIZE // cell, bins), np.float32)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] // cell
    np.add.at(hist, (rows, cols, which), magnitude)
    return np.sqrt(hist).ravel()


def _render_set(task_id: str, n: int, split: str):
    """``n`` samples of a task at ``SIZE x SIZE``: images (n, S, S) float in [0, 1] and
    targets rescaled to that frame (masks resized with nearest neighbour)."""
    task = load_manifest()[task_id]
    images, targets = [], []
    for i in range(n):
        sample = render(task, image_rng(2024, task_id, split, i))
        h, w = sample.image.shape
        images.append(cv2.resize(sample.image, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
        target = sample.target
        if isinstance(target, np.ndarray) and target.ndim == 2 and target.shape == (h, w):
            target = cv2.resize(target, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
        elif isinstance(target, np.ndarray):
            target = target.reshape(-1, 2) * [SIZE / w, SIZE / h]
        targets.append(target)
    return np.stack(images).astype(np.float32) / 255.0, targets


def _fcn(out_channels: int) -> nn.Module:
    """A tiny fully convolutional net: two stride-2 convolutions down to 16 x 16, dilated
    convolutions there (receptive field ~ the whole image), a 1x1 classifier, and bilinear
    upsampling back to 64 x 64. Two coordinate channels let it use position too."""
    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation),
                nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, 16, stride=2), *block(16, 24, stride=2), *block(24, 24, dilation=2),
                         *block(24, 24, dilation=4), *block(24, 24), nn.Conv2d(24, out_channels, 1),
                         nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False))


def _with_coords(images: np.ndarray) -> torch.Tensor:
    n = len(images)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    coords = torch.stack([xx, yy]).expand(n, 2, SIZE, SIZE)
    return torch.cat([torch.from_numpy(images)[:, None], coords], 1)


def _train_dense(images: np.ndarray, target: torch.Tensor, out_channels: int, loss_fn, steps: int = 250) -> nn.Module:
    torch.manual_seed(0)
    model = _fcn(out_channels)
    optimiser = torch.optim.Adam(model.parameters(), lr=4e-3)
    x = _with_coords(images)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (16,), generator=generator)
        loss = loss_fn(model(x[batch]), target[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def _dice(pred: np.ndarray, gt: np.ndarray, k: int) -> float:
    p, g = pred == k, gt == k
    return 2.0 * (p & g).sum() / max(1, p.sum() + g.sum())


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("task_id", ["lung_disease_3cls", "fetal_plane_cls", "fetal_head_pos_cls", "breast_2cls"])
def test_classification_beats_the_majority_class(task_id):
    def features(images):
        hog = np.stack([_orientation_histograms(im) for im in images])
        small = np.stack([cv2.resize(im, (16, 16), interpolation=cv2.INTER_AREA).ravel() for im in images])
        return np.hstack([hog, small])

    x_train, y_train = _render_set(task_id, 100, "train")
    x_test, y_test = _render_set(task_id, 50, "val")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000))
    model.fit(features(x_train), y_train)
    accuracy = float((model.predict(features(x_test)) == np.asarray(y_test)).mean())
    majority = float((np.asarray(y_test) == np.bincount(y_train).argmax()).mean())
    assert accuracy > majority + 0.1, (task_id, accuracy, majority)


@pytest.mark.parametrize("task_id", ["breast_lesion", "cardiac_multi"])
def test_segmentation_beats_the_average_mask(task_id):
    x_train, m_train = _render_set(task_id, 64, "train")
    x_test, m_test = _render_set(task_id, 24, "val")
    classes = load_manifest()[task_id].num_classes
    model = _train_dense(x_train, torch.from_numpy(np.stack(m_train)).long(), classes, nn.CrossEntropyLoss())
    with torch.no_grad():
        pred = model(_with_coords(x_test)).argmax(1).numpy()
    # baseline: the per-pixel majority class of the training masks (where structures usually are)
    prior = np.stack([(np.stack(m_train) == k).mean(0) for k in range(classes)]).argmax(0)
    for k in range(1, classes):
        ours = np.mean([_dice(p, g, k) for p, g in zip(pred, m_test)])
        base = np.mean([_dice(prior, g, k) for g in m_test])
        assert ours > base + 0.1 and ours > 0.4, (task_id, k, ours, base)


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_detection_beats_the_mean_box():
    """Segment the box area, then take the bounds of the largest predicted component."""
    x_train, b_train = _render_set("thyroid_nodule_det", 64, "train")
    x_test, b_test = _render_set("thyroid_nodule_det", 24, "val")
    masks = np.zeros((len(b_train), SIZE, SIZE), np.float32)
    for mask, box in zip(masks, b_train):
        (x0, y0), (x1, y1) = np.floor(box[0]).astype(int), np.ceil(box[1]).astype(int)
        mask[y0:y1, x0:x1] = 1.0
    model = _train_dense(x_train, torch.from_numpy(masks)[:, None], 1, nn.BCEWithLogitsLoss())
    with torch.no_grad():
        prob = torch.sigmoid(model(_with_coords(x_test)))[:, 0].numpy()
    ious, base = [], []
    mean_box = np.mean([b.ravel() for b in b_train], axis=0)
    for p, box in zip(prob, b_test):
        n, labels, stats, _ = cv2.connectedComponentsWithStats((p > 0.5).astype(np.uint8))
        if n > 1:
            k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            x, y, w, h = stats[k, :4]
            pred = np.array([x, y, x + w, y + h], dtype=float)
        else:
            pred = mean_box
        ious.append(_box_iou(pred, box.ravel()))
        base.append(_box_iou(mean_box, box.ravel()))
    assert np.mean(ious) > np.mean(base) + 0.12, (np.mean(ious), np.mean(base))


def test_landmarks_beat_the_mean_points():
    """One spatial-softmax map per landmark, trained with cross-entropy against a small
    Gaussian around the true point; the prediction is the map's expected position."""
    x_train, p_train = _render_set("IUGC", 64, "train")
    x_test, p_test = _render_set("IUGC", 24, "val")
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    heat = np.stack([np.stack([np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2)) for x, y in pts])
                     for pts in p_train]).astype(np.float32)
    heat /= heat.sum(axis=(2, 3), keepdims=True)

    def spatial_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -(target.flatten(2) * torch.log_softmax(logits.flatten(2), dim=2)).sum(2).mean()

    model = _train_dense(x_train, torch.from_numpy(heat), 3, spatial_cross_entropy)
    with torch.no_grad():
        prob = torch.softmax(model(_with_coords(x_test)).flatten(2), dim=2).numpy()
    pred = np.stack([prob @ xx.ravel().astype(float), prob @ yy.ravel().astype(float)], axis=2)
    truth = np.stack(p_test)
    mre = np.linalg.norm(pred - truth, axis=2).mean()
    baseline = np.linalg.norm(np.mean(np.stack(p_train), axis=0) - truth, axis=2).mean()
    assert mre < 0.8 * baseline, (mre, baseline)
