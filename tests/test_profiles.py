"""The profiles and the recipes they run: official-baseline is the official recipe,
official-smoke differs from it only in size, gpu-full only in switches and speed settings,
and cpu-smoke still trains with exactly what it trained with before the switches existed, but
for the values retuned since (each measured: cpu-smoke.yaml's comments)."""
from __future__ import annotations

from pathlib import Path

import pytest

from fmuia_lib import profiles
from fmuia_lib.config import TrainConfig
from fmuia_lib.switches import FMUIA_RECIPE, SPEED_SETTINGS, SWITCHES, switch_fields

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "fmuia_lib" / "profiles"
SIZE_KNOBS = {"encoder", "encoder_weights", "image_size", "epochs"}

#: cpu-smoke's effective TrainConfig before the recipe became configurable (measured with the
#: previous release's TrainConfig.from_dict(load_profile("cpu-smoke").train).to_dict()), except
#: ``device``: profiles leave it to the machine (None: CUDA when present), it was "cpu" then
CPU_SMOKE_BEFORE = {
    "data_root": None, "val_root": None, "val_fraction": 0.2, "manifest": None, "tasks": None, "image_size": 64,
    "augment": "light", "sampler": "temperature", "sampler_temperature": 2.0, "num_workers": 0,
    "encoder": "resnet18", "encoder_weights": None, "freeze_fpn": False, "head_priors": True,
    "norm_stats": "per_task", "norm_stats_batches": 8, "batch_size": 8, "val_batch_size": None,
    "max_steps": 1000, "eval_every": 500, "lr": 0.001, "head_lr_mult": 3.0, "fpn_lr_mult": 1.0,
    "weight_decay": 0.01, "warmup_steps": 30, "min_lr_ratio": 0.01, "grad_clip": 1.0, "amp": False,
    "amp_dtype": "auto", "channels_last": False, "seg_loss": "dice_ce", "cls_label_smoothing": 0.0,
    "reg_loss": "smooth_l1", "det_size_weight": 5.0, "det_offset_weight": 1.0,
    "loss_weights": {"segmentation": 1.0, "classification": 1.0, "detection": 1.0, "Regression": 10.0},
    "uncertainty_weighting": False, "seed": 0, "deterministic": False, "device": None, "out_dir": "runs/train",
    "resume": None, "stop_at_step": None}
#: the values cpu-smoke retuned since then (1000 steps; sampling weights per task type are a
#: new field, below; both chosen from seed margins, README), and a
#: default changed since then: channels_last where it pays (None), off for its ResNet-18 on CPU
CPU_SMOKE_RETUNED = {"max_steps": 1000, "eval_every": 1000, "norm_stats_batches": 4, "channels_last": None,
                     "loss_weights": {"segmentation": 1.0, "classification": 1.0, "detection": 1.0, "Regression": 1.0}}
#: what the fields added since then hold for cpu-smoke: the fmuia recipe's values, and the
#: FPN at half smp.FPN's widths
CPU_SMOKE_NEW_FIELDS = {"split": "random", "det_head": "centernet", "landmark_head": "heatmap", "epochs": None,
                        "validation": "whole_set", "schedule": "warmup_cosine", "eta_min": 1e-6,
                        "switches": list(FMUIA_RECIPE), "fpn_pyramid_channels": 128, "fpn_segmentation_channels": 64,
                        "landmark_heatmap_weight": 1.0, "freeze_encoder_steps": 0,
                        "sampler_type_weights": {"segmentation": 0.75, "classification": 1.5, "detection": 1.0,
                                                 "Regression": 3.0}}


def effective(name_or_path) -> TrainConfig:
    return TrainConfig.from_dict(profiles.load_profile(name_or_path).train)


def packaged(name: str) -> Path:
    return PACKAGED / f"{name}.yaml"


@pytest.mark.parametrize("profile", ["cpu-smoke", "real-slice", "gpu-full", packaged("official-baseline"),
                                     packaged("official-smoke")], ids=str)
def test_effective_config_is_official_defaults_plus_switches_plus_own_keys(profile):
    loaded = profiles.load_profile(profile)
    values = TrainConfig().to_dict()
    for name in loaded.train.get("switches", []):
        values.update(SWITCHES[name].sets)
    values.update(loaded.train)
    config = effective(profile)
    assert config.to_dict() == {**values, "loss_weights": config.loss_weights}
    assert config.active_switches() == list(loaded.train.get("switches", []))
    assert loaded.description and loaded.data["source"] in {"phantom", "real", "user"}


def test_official_baseline_is_the_official_recipe():
    config = effective(packaged("official-baseline"))
    assert config == TrainConfig() and config.active_switches() == []
    assert (config.encoder, config.encoder_weights, config.image_size, config.batch_size, config.epochs,
            config.seed, config.val_fraction, config.num_workers) == (
        "efficientnet-b4", "imagenet", 256, 20, 50, 42, 0.2, 4)
    assert config.val_root is None and config.split == "random"
    assert profiles.load_profile(packaged("official-baseline")).data["source"] == "user"


def test_official_smoke_differs_only_in_size_knobs():
    baseline, smoke = effective(packaged("official-baseline")), effective(packaged("official-smoke"))
    differ = {k for k, v in smoke.to_dict().items() if baseline.to_dict()[k] != v}
    assert differ == SIZE_KNOBS
    assert (smoke.encoder, smoke.encoder_weights, smoke.image_size) == ("resnet18", None, 64)
    assert profiles.load_profile(packaged("official-smoke")).data["source"] == "phantom"


def test_gpu_full_is_official_baseline_with_every_switch_and_speed_settings():
    baseline, gpu = effective(packaged("official-baseline")), effective("gpu-full")
    assert gpu.active_switches() == list(FMUIA_RECIPE)
    differ = {k for k, v in gpu.to_dict().items() if baseline.to_dict()[k] != v}
    allowed = switch_fields() | set(SPEED_SETTINGS) | {"switches"}
    assert differ <= allowed, differ - allowed
    assert {"amp", "channels_last"} <= differ


@pytest.mark.parametrize("name", ["cpu-smoke", "real-slice"])
def test_cpu_profiles_run_the_fmuia_recipe(name):
    config = effective(name)
    assert config.active_switches() == list(FMUIA_RECIPE)
    assert (config.lr, config.head_lr_mult, config.fpn_lr_mult, config.warmup_steps) == (1e-3, 3.0, 1.0, 30)


def test_cpu_smoke_trains_with_what_it_trained_with_before():
    config = effective("cpu-smoke").to_dict()
    assert {k: config[k] for k in CPU_SMOKE_BEFORE} == CPU_SMOKE_BEFORE | CPU_SMOKE_RETUNED
    assert {k: v for k, v in config.items() if k not in CPU_SMOKE_BEFORE} == CPU_SMOKE_NEW_FIELDS
