"""Joint transforms: masks, boxes and landmarks stay on the structure they annotate."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fmuia_lib.data.transforms import (BrightnessContrastShift, StrongGaussNoise, add_noise_uint8,
                                       brightness_contrast_shift, build_transforms, denormalize_image,
                                       geometric_augmentation, normalize_image)
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
        changed += not torch.allclose(out["image"], v2.functional.to_dtype(reference["image"], torch.float32,
                                                                           scale=True))
    assert changed > 0


def test_eval_transform_is_resize_only():
    out = build_transforms((40, 56), train=False)(synthetic_sample(), TASKS["FUGC"])
    expected = v2.Resize((40, 56), antialias=True)(synthetic_sample())
    assert torch.equal(out["image"], expected["image"])  # uint8, normalised later as the baseline
    assert torch.equal(out["points"], expected["points"])
    with pytest.raises(ValueError, match="augment must be one of"):
        build_transforms(64, train=True, augment="heavy")


def test_normalize_round_trip():
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    normalized = normalize_image(image)
    assert normalized.dtype == torch.float32
    assert torch.allclose(denormalize_image(normalized), image.float() / 255, atol=1e-6)


# -- the baseline's augmentation ("official") ---------------------------------------------------------

def test_brightness_contrast_shift_is_albumentations_formula():
    """out = floor(clip(x * alpha + beta * 255, 0, 255)): contrast about 0, brightness additive."""
    image = torch.tensor([[[0, 10, 100, 250]]], dtype=torch.uint8)
    # alpha 1.1, beta 0.1: 0 + 25.5 -> 25; 11 + 25.5 = 36.5 -> 36; 110 + 25.5 = 135.5 -> 135; 300.5 -> 255
    assert brightness_contrast_shift(image, 1.1, 0.1).tolist() == [[[25, 36, 135, 255]]]
    # alpha 0.8, beta -0.2: -51 -> 0; 8 - 51 -> 0; 80 - 51 = 29; 200 - 51 = 149
    assert brightness_contrast_shift(image, 0.8, -0.2).tolist() == [[[0, 0, 29, 149]]]
    # v2.ColorJitter's brightness would multiply instead: 0 stays 0 under any brightness factor
    assert v2.functional.adjust_brightness(image, 1.5)[0, 0, 0] == 0


def test_strong_gauss_noise_is_per_channel_and_its_std_is_a_fraction_of_255():
    image = tv_tensors.Image(torch.full((3, 64, 64), 128, dtype=torch.uint8))
    transform = StrongGaussNoise()
    sigmas = []
    for seed in range(20):
        torch.manual_seed(seed)
        noise = transform.make_params([image])["noise"]
        assert noise.shape == (3, 64, 64) and noise.dtype == torch.float32
        assert abs(noise.mean().item()) < 3.0  # zero mean (std of the mean: ~112 / 110 < 1.1)
        assert not torch.equal(noise[0], noise[1])  # independent per channel
        sigmas.append(noise.std().item() / 255)
    assert min(sigmas) > 0.2 * 0.97 and max(sigmas) < 0.44 * 1.03 and max(sigmas) - min(sigmas) > 0.05
    # added in float, clipped, truncated to uint8
    out = add_noise_uint8(torch.tensor([[[10, 100, 250]]], dtype=torch.uint8), torch.tensor([[[-20.0, 5.7, 9.9]]]))
    assert out.tolist() == [[[0, 105, 255]]]


def test_brightness_contrast_parameters_span_the_default_limits():
    transform = BrightnessContrastShift()
    params = [transform.make_params([]) for _ in range(400)]
    alphas, betas = [p["alpha"] for p in params], [p["beta"] for p in params]
    assert 0.8 <= min(alphas) < 0.82 and 1.18 < max(alphas) <= 1.2
    assert -0.2 <= min(betas) < -0.18 and 0.18 < max(betas) <= 0.2


def test_official_preset_is_photometric_only_with_the_baselines_probabilities():
    transform = build_transforms(48, train=True, augment="official")
    assert transform.geometric == {}
    steps = transform.photometric.transforms
    assert [(type(t), t.p, type(t.transforms[0])) for t in steps[:2]] == [
        (v2.RandomApply, 0.2, BrightnessContrastShift), (v2.RandomApply, 0.1, StrongGaussNoise)]
    reference = build_transforms(48, train=False)(synthetic_sample(), TASKS["breast_lesion"])
    changed = 0
    torch.manual_seed(0)
    for _ in range(300):
        out = transform(synthetic_sample(), TASKS["breast_lesion"])
        for key in ("mask", "boxes", "points"):  # labels never move
            assert torch.equal(out[key], reference[key]), key
        changed += not torch.equal(out["image"], reference["image"])
    # P(changed) = 1 - 0.8 * 0.9 = 0.28: 84 of 300 expected, std 7.8
    assert 60 < changed < 108, changed
