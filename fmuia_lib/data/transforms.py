"""Joint transforms: image, mask, box and landmarks move together.

A *sample* is a dict of torchvision ``tv_tensors``: ``image`` (:class:`~torchvision.tv_tensors.Image`,
uint8 ``3 x H x W``) and, depending on the task type, ``mask`` (:class:`~torchvision.tv_tensors.Mask`),
``boxes`` (:class:`~torchvision.tv_tensors.BoundingBoxes`, XYXY) or ``points``
(:class:`~torchvision.tv_tensors.KeyPoints`). ``torchvision.transforms.v2`` knows how
each type follows a resize, flip or affine warp (masks with nearest-neighbour
interpolation, boxes and points through their coordinates), so no coordinate
arithmetic is written here.

Which augmentations are *label-safe* depends on the task type, not on task names
(:func:`geometric_augmentation`):

* segmentation and detection: horizontal flip and a small affine warp; the mask
  or box moves with the image and stays true.
* Regression: the affine warp only. Landmarks are named by anatomy in a view with a
  fixed orientation (IUGC's symphysis lies on one side of the fetal head); a mirrored
  view never occurs at test time, and landmarks named by side would need their
  indices swapped. With flips, a head that reads the pooled deepest feature must
  first tell the mirrored view apart, and on the phantom it learned to predict
  points pulled towards the image centre instead.
* classification: none. A class label cannot follow the image: an orientation
  class such as ``deg045`` of ``fetal_head_pos_cls`` becomes wrong after a flip.

Brightness, contrast and noise never change a label and apply to every task.

Presets (``augment``): ``"official"`` is the official baseline's training augmentation
(albumentations ``RandomBrightnessContrast(p=0.2)`` and ``GaussNoise(p=0.1)`` with
albumentations 2.0.8's defaults), written here as two small v2 transforms with
albumentations' formulas (:class:`BrightnessContrastShift`, :class:`StrongGaussNoise`);
``"light"`` is fmuia's milder jitter and noise; ``"none"`` adds nothing. The label-safe
warps are a separate setting (``geometric``: config ``geometric_augment``, switch
``geometric_augmentation``).

Resizing (``resize``): ``"bilinear"`` is the official code's (albumentations ``A.Resize``
in training, ``cv2.resize`` in its Docker model: OpenCV's ``INTER_LINEAR``, no
antialiasing): :class:`Cv2BilinearResize` calls the same ``cv2.resize`` on the image;
``"antialias"`` (switch ``antialiased_resize``) is torchvision's antialiased bilinear
resize, which low-pass filters an image it shrinks. Masks follow with nearest-neighbour
interpolation, boxes and points through their coordinates, under both.
"""
from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENT_LEVELS = ("official", "light", "none")
RESIZES = ("bilinear", "antialias")

Sample = dict  # {"image": Image, optional "mask" | "boxes" | "points"}


#: The geometric augmentation each task type takes (see the module docstring).
GEOMETRIC_AUGMENTATION = {SEGMENTATION: "flip+affine", DETECTION: "flip+affine", REGRESSION: "affine",
                          CLASSIFICATION: "none"}


def geometric_augmentation(task: TaskSpec) -> str:
    """``"flip+affine"``, ``"affine"`` or ``"none"``: the warps that keep ``task``'s label true."""
    return GEOMETRIC_AUGMENTATION[task.task_type]


class BrightnessContrastShift(v2.Transform):
    """albumentations' ``RandomBrightnessContrast`` (2.0.8 defaults) on uint8 images:
    ``out = floor(clip(img * alpha + beta * 255, 0, 255))`` with ``alpha = 1 + U(-c, c)`` and
    ``beta = U(-b, b)``, one draw per image; masks, boxes and points pass through.

    Written by hand because ``v2.ColorJitter`` is a different transform: its brightness
    *multiplies* the image and its contrast blends with the image's mean grey, while
    albumentations (with ``brightness_by_max``) *adds* a fraction of the maximum value and
    scales contrast about 0 (``albucore.multiply_add``: a float32 lookup table, clipped and
    truncated to uint8).
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, brightness_limit: float = 0.2, contrast_limit: float = 0.2) -> None:
        super().__init__()
        self.brightness_limit, self.contrast_limit = brightness_limit, contrast_limit

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        alpha = 1.0 + float(torch.empty(()).uniform_(-self.contrast_limit, self.contrast_limit))
        beta = float(torch.empty(()).uniform_(-self.brightness_limit, self.brightness_limit))
        return {"alpha": alpha, "beta": beta}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return tv_tensors.wrap(brightness_contrast_shift(inpt, params["alpha"], params["beta"]), like=inpt)


def brightness_contrast_shift(image: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """``floor(clip(image * alpha + beta * 255, 0, 255))`` of a uint8 image, in float32 as
    albumentations' lookup table computes it."""
    _require_uint8(image, "BrightnessContrastShift")
    out = image.as_subclass(torch.Tensor).to(torch.float32) * alpha + beta * 255.0
    return out.clamp_(0, 255).to(torch.uint8)  # the cast truncates, as numpy's astype(uint8)


class StrongGaussNoise(v2.Transform):
    """albumentations' ``GaussNoise`` (2.0.8 defaults) on uint8 images: zero-mean Gaussian
    noise, independent per pixel and channel, whose standard deviation is ``U(0.2, 0.44)``
    of the maximum value (51 to 112 grey levels), drawn once per image;
    ``out = floor(clip(img + noise, 0, 255))``. Masks, boxes and points pass through.

    Written by hand because ``v2.GaussianNoise`` has one fixed standard deviation and
    rounds differently; albumentations adds float32 noise and truncates back to uint8.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, std_range: tuple[float, float] = (0.2, 0.44)) -> None:
        super().__init__()
        self.std_range = std_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = next(x for x in flat_inputs if isinstance(x, tv_tensors.Image))
        sigma = float(torch.empty(()).uniform_(*self.std_range))
        return {"noise": torch.randn(image.shape, dtype=torch.float32) * sigma * 255.0}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return tv_tensors.wrap(add_noise_uint8(inpt, params["noise"]), like=inpt)


def add_noise_uint8(image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``floor(clip(image + noise, 0, 255))`` of a uint8 image and float32 noise."""
    _require_uint8(image, "StrongGaussNoise")
    out = image.as_subclass(torch.Tensor).to(torch.float32) + noise
    return out.clamp_(0, 255).to(torch.uint8)


def _require_uint8(image: torch.Tensor, name: str) -> None:
    if image.dtype != torch.uint8:
        raise TypeError(f"{name} works on uint8 images (as the baseline's albumentations pipeline), "
                        f"got {image.dtype}")


class Cv2BilinearResize(v2.Transform):
    """Resize to ``size`` (height, width) as the official code does: the image with
    ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)`` (what albumentations' ``A.Resize``
    calls), masks with nearest-neighbour interpolation, boxes and points scaled with the image.

    The image goes through OpenCV itself because no torch resize rounds as OpenCV's
    fixed-point bilinear kernel does (torchvision's ``antialias=False`` bilinear lies within
    one grey level of it, not on it); everything else uses torchvision's own resize.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = tuple(size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Image):
            return tv_tensors.wrap(cv2_resize(inpt, self.size), like=inpt)
        if isinstance(inpt, (tv_tensors.Mask, tv_tensors.BoundingBoxes, tv_tensors.KeyPoints)):
            return v2.functional.resize(inpt, list(self.size), antialias=False)
        return inpt


def cv2_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize`` (``INTER_LINEAR``) of a ``C x H x W`` image tensor to ``size`` (height, width)."""
    array = np.ascontiguousarray(image.as_subclass(torch.Tensor).permute(1, 2, 0).numpy())
    out = cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    if out.ndim == 2:  # OpenCV drops a single channel
        out = out[:, :, None]
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()


def build_resize(size: tuple[int, int], resize: str) -> v2.Transform:
    """The resize step ``resize`` names (see the module docstring)."""
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {RESIZES}, not {resize!r}")
    return Cv2BilinearResize(size) if resize == "bilinear" else v2.Resize(size, antialias=True)


class JointTransform:
    """``transform(sample, task) -> sample``: resize to the model size, then augment.

    ``geometric`` maps a :func:`geometric_augmentation` policy to its transform
    (a policy without an entry, such as ``"none"``, leaves the geometry alone);
    ``photometric`` runs for all (fmuia's ``light`` preset converts the image to float32 in
    [0, 1]; the others leave it uint8, as the baseline normalises it: :func:`normalize_image`).
    """

    def __init__(self, size: tuple[int, int], geometric: dict[str, Callable] | None, photometric: Callable,
                 resize: str = "antialias"):
        self.size = size
        self.resize = build_resize(size, resize)
        self.geometric = dict(geometric or {})
        self.photometric = photometric

    def warps(self, task: TaskSpec) -> bool:
        """Whether ``task``'s samples go through a geometric augmentation (beyond the resize)."""
        return self.geometric.get(geometric_augmentation(task)) is not None

    def __call__(self, sample: Sample, task: TaskSpec) -> Sample:
        return self.augment(self.resize(sample), task)

    def augment(self, sample: Sample, task: TaskSpec) -> Sample:
        """What follows the resize: a sample already at :attr:`size` (the data cache's,
        ``data.cache``) goes through here alone."""
        warp = self.geometric.get(geometric_augmentation(task))
        if warp is not None:
            sample = warp(sample)
        return self.photometric(sample)

    def __repr__(self) -> str:
        return (f"JointTransform(size={self.size}, geometric={self.geometric}, "
                f"photometric={self.photometric})")


def build_transforms(image_size: int | tuple[int, int], train: bool, augment: str = "light",
                     resize: str = "antialias", geometric: bool | None = None) -> JointTransform:
    """The joint transform for training (``train=True``) or evaluation.

    Every transform first resizes as ``resize`` names (``"bilinear"``: the official code's
    OpenCV resize; ``"antialias"``: torchvision's antialiased one; see the module docstring).

    Evaluation: resize to ``image_size`` (an int = square, or ``(height, width)``).
    Training adds two independent parts. **Geometric** (``geometric``; None: on for the
    ``"light"`` preset only, as it always came): a small affine warp (p=0.5: rotation up to
    10 degrees, shift up to 5 %, scale 0.9-1.1) for segmentation, detection and Regression,
    preceded by a horizontal flip (p=0.5) for segmentation and detection
    (:func:`geometric_augmentation`); boxes and points that a warp pushes past the border are
    clamped to it. **Photometric** (``augment``): ``"official"`` (the baseline's), on the
    uint8 image, :class:`BrightnessContrastShift` (p=0.2) then :class:`StrongGaussNoise`
    (p=0.1); ``"light"``, brightness/contrast jitter (p=0.5) and Gaussian noise (p=0.3);
    ``"none"``, nothing.
    """
    if augment not in AUGMENT_LEVELS:
        raise ValueError(f"augment must be one of {AUGMENT_LEVELS}, not {augment!r}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if not train:  # the image stays uint8: normalize_image scales it as the baseline
        return JointTransform(size, None, v2.Identity(), resize)
    warps = None
    if augment == "light" if geometric is None else geometric:
        affine = [v2.RandomApply([v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1))], p=0.5),
                  v2.ClampBoundingBoxes(), v2.ClampKeyPoints()]
        warps = {"flip+affine": v2.Compose([v2.RandomHorizontalFlip(p=0.5), *affine]),
                 "affine": v2.Compose(affine)}
    if augment == "none":
        photometric = v2.Identity()
    elif augment == "official":
        photometric = v2.Compose([v2.RandomApply([BrightnessContrastShift()], p=0.2),
                                  v2.RandomApply([StrongGaussNoise()], p=0.1)])
    else:
        photometric = v2.Compose([
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.5),
            v2.RandomApply([v2.GaussianNoise(sigma=0.03)], p=0.3),
        ])
    return JointTransform(size, warps, photometric, resize)


#: albumentations' ``Normalize`` (the baseline's) in float32: ``(x - mean * 255) * (1 / (std * 255))``
_MEAN_255 = torch.tensor(IMAGENET_MEAN, dtype=torch.float32) * 255.0
_INV_STD_255 = torch.reciprocal(torch.tensor(IMAGENET_STD, dtype=torch.float32) * 255.0)


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float image ``(..., 3, H, W)`` -> float32 ImageNet-normalised plain tensor.

    ``(x - mean * 255) * (1 / (std * 255))`` on the 0-255 scale, each factor rounded to
    float32, as albumentations' ``Normalize`` (the baseline's) computes it: a uint8 image
    comes out bit-identical to the baseline's input (a float image is scaled by 255 first)."""
    image = image.as_subclass(torch.Tensor)
    scaled = image.to(torch.float32) if image.dtype == torch.uint8 else image.to(torch.float32) * 255.0
    return (scaled - _MEAN_255.view(3, 1, 1)) * _INV_STD_255.view(3, 1, 1)


def denormalize_image(image: torch.Tensor) -> torch.Tensor:
    """Undo :func:`normalize_image`: float image in [0, 1] (for display)."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1)
