"""Joint transforms: masks, boxes and landmarks stay on the structure they annotate."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fmuia_lib.data.transforms import build_transforms, denormalize_image, geometric_augmentation, normalize_image
from fmuia_lib.tasks import CLASSIFICATION, REGRESSION, load_manifest

TASKS = load_manifest()
H, W = 60, 80
BLOB = (20, 12, 44, 32)  # x_min, y_min, x_max, y_max (x_max/y_max exclusive) of a bright rectangle
DOTS = ((10, 45, 250), (65, 8, 130))  # (x, y, intensity) of two 5x5 landmark squares


def synthetic_sample() -> dict:
    """A dark image with a bright rectangle (mask + box) and two landmark squares of different brightness."""
    image = torch.full((3, H, W), 20, dtype=torch.uint8)
    x0, y0, x1, y1 = BLOB
    image[:, y0:y1, x0:x1] = 200
    mask = torch.zeros(H, W, dtype=torch.int64)
    mask[y0:y1, x0:x1] = 1
    for x, y, value in DOTS:
        image[:, y - 2:y + 3, x - 2:x + 3] = value
    return {
        "image": tv_tensors.Image(image),
        "mask": tv_tensors.Mask(mask),
        "boxes": tv_tensors.BoundingBoxes([BLOB], format="XYXY", canvas_size=(H, W), dtype=torch.float32),
        "points": tv_tensors.KeyPoints([[x, y] for x, y, _ in DOTS], canvas_size=(H, W), dtype=torch.float32),
    }


def check_annotations_follow(out: dict, dot_tolerance: float = 45) -> None:
    image = out["image"].as_subclass(torch.Tensor)[0].float()
    if image.max() <= 1:  # float image in [0, 1]
        image = image * 255
    h, w = image.shape
    assert out["mask"].shape == (h, w)
    # the mask covers the blob: the blob's pixels are the bright-but-not-landmark ones
    blob = (image > 140) & (image < 230)
    mask = out["mask"].as_subclass(torch.Tensor) == 1
    iou = (blob & mask).sum() / (blob | mask).sum()
    assert iou > 0.8, f"mask IoU with the blob {iou:.2f}"
    # the box is the blob's bounding box (edge convention: max = last pixel + 1)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    blob_box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    box = out["boxes"].as_subclass(torch.Tensor)[0]
    assert torch.allclose(box, blob_box, atol=2.5), (box, blob_box)
    # each landmark still sits on its own square (they differ in brightness)
    for (x, y), (_, _, value) in zip(out["points"].as_subclass(torch.Tensor).tolist(), DOTS):
        patch = image[max(round(y) - 1, 0):round(y) + 2, max(round(x) - 1, 0):round(x) + 2]
        assert abs(patch.mean() - value) < dot_tolerance, (x, y, patch)


@pytest.mark.parametrize("name, transform", [
    ("resize", v2.Resize((48, 64))),
    ("resize non-uniform", v2.Resize((90, 50))),
    ("flip", v2.Compose([v2.Resize((48, 64)), v2.RandomHorizontalFlip(p=1.0)])),
    ("vertical flip", v2.RandomVerticalFlip(p=1.0)),
    ("affine", v2.RandomAffine(degrees=(15, 15), translate=(0.0, 0.0), scale=(1.1, 1.1))),
    ("rotate 90", v2.RandomAffine(degrees=(90, 90))),
])
def test_geometric_round_trip(name, transform):
    out = transform(synthetic_sample())
    assert isinstance(out["boxes"], tv_tensors.BoundingBoxes) and isinstance(out["points"], tv_tensors.KeyPoints)
    assert tuple(out["points"].canvas_size) == tuple(out["image"].shape[-2:])
    check_annotations_follow(out)


@pytest.mark.parametrize("task_id", ["breast_lesion", "thyroid_nodule_det", "IUGC"])
def test_training_transform_keeps_annotations_on_structure(task_id):
    transform = build_transforms(96, train=True)
    transform.photometric = v2.ToDtype(torch.float32, scale=True)  # intensities only; checked below
    moved = 0
    eval_out = build_transforms(96, train=False)(synthetic_sample(), TASKS[task_id])
    for seed in range(12):
        torch.manual_seed(seed)
        out = transform(synthetic_sample(), TASKS[task_id])
        assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 96, 96)
        check_annotations_follow(out)
        moved += not torch.allclose(out["boxes"], eval_out["boxes"], atol=1.0)
    assert moved > 0, "geometric augmentation never changed the geometry"


def test_classification_gets_no_geometric_augmentation():
    policy = {t.task_id: geometric_augmentation(t) for t in TASKS.values()}
    assert policy["fetal_head_pos_cls"] == policy["fetal_sacral_pos_cls"] == "none"
    assert {t.task_id for t in TASKS.values() if policy[t.task_id] == "none"} == \
        {t.task_id for t in TASKS.values() if t.task_type == CLASSIFICATION}
    transform = build_transforms(64, train=True)
    reference = build_transforms(64, train=False)(synthetic_sample(), TASKS["fetal_head_pos_cls"])
    for seed in range(12):
        torch.manual_seed(seed)
        out = transform(synthetic_sample(), TASKS["fetal_head_pos_cls"])
        assert torch.equal(out["mask"], reference["mask"])  # geometry untouched
        assert torch.equal(out["points"], reference["points"])


def mirrored(points: torch.Tensor, reference: torch.Tensor) -> bool:
    """True when the first landmark (left of centre in the reference) ended up right of centre."""
    return bool(points[0, 0] > 48) and bool(reference[0, 0] < 48)


def test_landmarks_are_warped_but_never_mirrored():
    regression = [t for t in TASKS.values() if t.task_type == REGRESSION]
    assert regression and all(geometric_augmentation(t) == "affine" for t in regression)
    transform = build_transforms(96, train=True)
    reference = build_transforms(96, train=False)(synthetic_sample(), TASKS["IUGC"])["points"]
    warped = mirrored_seg = 0
    for seed in range(24):
        torch.manual_seed(seed)
        points = transform(synthetic_sample(), TASKS["IUGC"])["points"].as_subclass(torch.Tensor)
        assert not mirrored(points, reference), f"seed {seed}: a Regression sample was mirrored"
        warped += not torch.allclose(points, reference)
        torch.manual_seed(seed)
        seg = transform(synthetic_sample(), TASKS["breast_lesion"])["points"].as_subclass(torch.Tensor)
        mirrored_seg += mirrored(seg, reference)
    assert warped > 0, "the affine warp never moved the landmarks"
    assert mirrored_seg > 0, "segmentation samples were never flipped either: the check cannot tell"


def test_photometric_augmentation_changes_intensities_only():
    transform = build_transforms(64, train=True)
    transform.geometric = {}
    reference = build_transforms(64, train=False)(synthetic_sample(), TASKS["breast_lesion"])
    changed = 0
    for seed in range(6):
        torch.manual_seed(seed)
        out = transform(synthetic_sample(), TASKS["breast_lesion"])
        assert torch.equal(out["mask"], reference["mask"]) and torch.equal(out["boxes"], reference["boxes"])
        assert 0 <= out["image"].min() and out["image"].max() <= 1
        changed += not torch.allclose(out["image"], reference["image"])
    assert changed > 0


def test_eval_transform_is_resize_only():
    out = build_transforms((40, 56), train=False)(synthetic_sample(), TASKS["FUGC"])
    expected = v2.Resize((40, 56), antialias=True)(synthetic_sample())
    assert torch.allclose(out["image"], v2.functional.to_dtype(expected["image"], torch.float32, scale=True))
    assert torch.equal(out["points"], expected["points"])
    with pytest.raises(ValueError, match="augment must be one of"):
        build_transforms(64, train=True, augment="heavy")


def test_normalize_round_trip():
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    normalized = normalize_image(image)
    assert normalized.dtype == torch.float32
    assert torch.allclose(denormalize_image(normalized), image.float() / 255, atol=1e-6)
