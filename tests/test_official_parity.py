"""The cheap parts of an exact re-run of the official baseline, checked without its repository.

``benchmarks/compare_official.py --official DIR`` runs the official code beside fmuia's
trainer step for step; these tests keep each ingredient honest on their own: the resize
and normalisation of the inputs, the targets' rounding, the optimiser, the skipped step
on an all-negative detection batch, the construction order of the weights, the row order
before the split and the sampler's task order.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fmuia_lib.config import TrainConfig
from fmuia_lib.data.dataset import _unwarped_target
from fmuia_lib.data.layout import read_root
from fmuia_lib.data.transforms import Cv2BilinearResize, build_transforms, normalize_image
from fmuia_lib.losses import GridDetectionLoss
from fmuia_lib.model import build_model
from fmuia_lib.profiles import run_settings
from fmuia_lib.switches import FMUIA_RECIPE
from fmuia_lib.tasks import load_manifest
from fmuia_lib.training.optim import build_optimizer
from fmuia_lib.losses import build_loss

MANIFEST = load_manifest(None)


def speckle(h: int = 151, w: int = 204, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_official_resize_is_cv2_bilinear_and_torchvision_without_antialias_is_within_one_grey_level():
    image = speckle()
    out = Cv2BilinearResize((64, 96))(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)))
    expected = cv2.resize(image, (96, 64), interpolation=cv2.INTER_LINEAR)
    assert torch.equal(out.permute(1, 2, 0), torch.from_numpy(expected))
    plain = v2.functional.resize(torch.from_numpy(image).permute(2, 0, 1), [64, 96], antialias=False)
    assert (plain.permute(1, 2, 0).int() - torch.from_numpy(expected).int()).abs().max() <= 1
    antialiased = v2.functional.resize(torch.from_numpy(image).permute(2, 0, 1), [64, 96], antialias=True)
    assert (antialiased.permute(1, 2, 0).int() - torch.from_numpy(expected).int()).abs().max() > 1


def test_resize_setting_official_bilinear_fmuia_antialias_and_labels_follow():
    assert TrainConfig().resize == "bilinear"
    assert TrainConfig.from_dict({"switches": list(FMUIA_RECIPE)}).resize == "antialias"
    sample = {"image": tv_tensors.Image(torch.from_numpy(speckle(40, 80)).permute(2, 0, 1)),
              "boxes": tv_tensors.BoundingBoxes([[8.0, 4.0, 40.0, 20.0]], format="XYXY", canvas_size=(40, 80))}
    out = build_transforms(32, train=False, resize="bilinear")(sample, MANIFEST["thyroid_nodule_det"])
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 32, 32)
    assert torch.allclose(out["boxes"].as_subclass(torch.Tensor), torch.tensor([[3.2, 3.2, 16.0, 16.0]]))


def test_normalisation_is_albumentations_lookup_table_bit_for_bit():
    """albumentations' Normalize on uint8: a float32 table (v - mean * 255) * (1 / (std * 255))."""
    image = speckle(9, 11)
    mean = np.array((0.485, 0.456, 0.406), dtype=np.float32) * 255.0
    inverse = np.reciprocal(np.array((0.229, 0.224, 0.225), dtype=np.float32) * 255.0, dtype=np.float32)
    table = (np.arange(256, dtype=np.float32)[None] - mean[:, None]) * inverse[:, None]  # 3 x 256
    expected = np.stack([table[c][image[:, :, c]] for c in range(3)])
    out = normalize_image(torch.from_numpy(image).permute(2, 0, 1))
    assert out.dtype == torch.float32 and np.array_equal(out.numpy(), expected)


def test_targets_round_as_the_baseline():
    box = [10.3, 7.7, 120.9, 88.1]
    got = _unwarped_target(MANIFEST["thyroid_nodule_det"], box, (151, 204), (64, 64))
    ref = (np.array(box) / np.array([204, 151, 204, 151]) * 64).astype(np.float32) / np.float32(64)
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), ref)
    points = [[10.3, 7.7], [120.9, 88.1]]
    got = _unwarped_target(MANIFEST["FUGC"], points, (151, 204), (64, 64))
    ref = np.array(points, dtype=np.float32) / np.array([204, 151], dtype=np.float32)
    assert np.array_equal(got.numpy(), ref)


def test_adamw_is_the_default_implementation_unless_fused_is_asked():
    tasks = [MANIFEST["breast_2cls"]]
    base = {"encoder": "resnet18", "encoder_weights": None}
    model = build_model(TrainConfig.from_dict(base), tasks)
    official = build_optimizer(model, build_loss(TrainConfig()), TrainConfig.from_dict(base))
    assert not official.defaults["fused"] and not official.defaults["foreach"]
    fused = build_optimizer(model, build_loss(TrainConfig()), TrainConfig.from_dict({**base, "fused_adamw": True}))
    assert fused.defaults["fused"]


def test_an_all_negative_grid_detection_batch_changes_no_weight():
    config = TrainConfig.from_dict({"encoder": "resnet18", "encoder_weights": None})
    model = build_model(config, [MANIFEST["thyroid_nodule_det"]])
    optimizer = build_optimizer(model, build_loss(config), config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()  # leaves BatchNorm statistics alone: only the update is checked
    outputs = model(torch.randn(2, 3, 64, 64), "thyroid_nodule_det")
    loss = GridDetectionLoss()(outputs, torch.full((2, 4), -1.0))
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not optimizer.state  # AdamW took no step: no moments, no step count


def test_same_seed_gives_the_baselines_construction_order():
    """Encoder, then a whole smp.FPN (second encoder, decoder, head, initialised), then heads by
    task type and id: the official factory's order, whatever order the tasks come in."""
    ids = ["breast_lesion", "FUGC", "thyroid_nodule_det", "breast_2cls"]
    config = TrainConfig.from_dict({"encoder": "resnet18", "encoder_weights": None})
    torch.manual_seed(3)
    model = build_model(config, [MANIFEST[t] for t in ids])
    torch.manual_seed(3)
    other = build_model(config, [MANIFEST[t] for t in reversed(ids)])
    assert list(model.heads) == ids
    theirs = other.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    torch.manual_seed(3)
    smp.encoders.get_encoder("resnet18", in_channels=3, depth=5, weights=None)
    decoder = smp.FPN(encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=1).decoder
    assert all(torch.equal(v, model.fpn_decoder.state_dict()[k]) for k, v in decoder.state_dict().items())


def test_glob_row_order_is_the_file_systems(tmp_path, make_root):
    root = make_root(tmp_path / "root")
    listed = [os.path.basename(p) for p in glob.glob(os.path.join(root, "csv_files", "*.csv"))]
    frame = read_root(root, csv_order="glob")
    assert list(dict.fromkeys(frame["csv_file"])) == listed
    assert list(dict.fromkeys(read_root(root)["csv_file"])) == sorted(listed)
    official = run_settings("official-baseline", data_dir=tmp_path).config
    assert official.row_order == "glob" and TrainConfig().row_order == "sorted"


def test_official_sampler_lists_tasks_by_first_training_row():
    from fmuia_lib.training.data import build_sampler

    class Rows:
        task_indices = {"a": [3, 4, 6], "b": [0, 5, 7], "c": [1, 2, 8]}  # manifest order a, b, c
        tasks = []

    sampler = build_sampler(TrainConfig(batch_size=2), Rows())
    assert list(sampler.task_indices) == ["b", "c", "a"]


@pytest.mark.parametrize("switches", [[], list(FMUIA_RECIPE)])
def test_inputs_stay_uint8_until_normalised_except_under_light_augmentation(switches):
    config = TrainConfig.from_dict({"switches": switches})
    sample = {"image": tv_tensors.Image(torch.from_numpy(speckle(40, 40)).permute(2, 0, 1))}
    out = build_transforms(32, train=True, augment=config.augment, resize=config.resize)(sample,
                                                                                           MANIFEST["breast_2cls"])
    assert out["image"].dtype == (torch.float32 if config.augment == "light" else torch.uint8)


def test_a_model_remembers_its_inputs_resize_for_prediction():
    tiny = {"encoder": "resnet18", "encoder_weights": None}
    official = build_model(TrainConfig.from_dict(tiny), [MANIFEST["breast_2cls"]])
    fmuia = build_model(TrainConfig.from_dict({**tiny, "switches": ["antialiased_resize"]}), [MANIFEST["breast_2cls"]])
    assert (official.input_resize, fmuia.input_resize) == ("bilinear", "antialias")
    from fmuia_lib.challenge.predict import _model_from_weights, inference_state

    loaded, _ = _model_from_weights(inference_state(official, 64), Path("weights.pt"))
    assert loaded.input_resize == "bilinear"
