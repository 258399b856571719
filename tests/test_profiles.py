"""The profiles and the recipes they run: official-baseline is the official recipe,
official-smoke differs from it only in size, gpu-full only in switches and speed settings,
and the CPU profiles run the whole fmuia recipe."""
from __future__ import annotations

from pathlib import Path

import pytest

from fmuia_lib import profiles
from fmuia_lib.config import TrainConfig
from fmuia_lib.switches import FMUIA_RECIPE, RECIPES, SPEED_SETTINGS, SWITCHES, switch_fields

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "fmuia_lib" / "profiles"
SIZE_KNOBS = {"encoder", "encoder_weights", "image_size", "epochs"}



def effective(name_or_path) -> TrainConfig:
    return TrainConfig.from_dict(profiles.load_profile(name_or_path).train)


def packaged(name: str) -> Path:
    return PACKAGED / f"{name}.yaml"


@pytest.mark.parametrize("profile", ["cpu-smoke", "real-slice", "gpu-full", packaged("official-baseline"),
                                     packaged("official-smoke")], ids=str)
def test_effective_config_is_official_defaults_plus_switches_plus_own_keys(profile):
    loaded = profiles.load_profile(profile)
    listed = loaded.train.get("switches", [])
    listed = list(RECIPES[listed]) if isinstance(listed, str) else listed  # `switches: fmuia`
    values = TrainConfig().to_dict()
    for name in listed:
        values.update(SWITCHES[name].sets)
    values.update({**loaded.train, "switches": listed})
    if "max_steps" in loaded.train and "epochs" not in loaded.train:
        values["epochs"] = None  # a run length named in steps clears the defaults' epochs
    config = effective(profile)
    assert config.to_dict() == {**values, "loss_weights": config.loss_weights}
    assert config.active_switches() == listed
    assert loaded.description and loaded.data["source"] in {"phantom", "real", "user"}


def test_official_baseline_is_the_official_recipe():
    config = effective(packaged("official-baseline"))
    # the recipe, with the baseline's row order (glob: the file system's, see the profile)
    assert config == TrainConfig(row_order="glob") and config.active_switches() == []
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
    allowed = switch_fields() | set(SPEED_SETTINGS) | {"switches", "row_order"}  # sorted: the same rows everywhere
    assert differ <= allowed, differ - allowed
    assert {"amp", "channels_last"} <= differ


@pytest.mark.parametrize("name", ["cpu-smoke", "real-slice"])
def test_cpu_profiles_run_the_fmuia_recipe(name):
    config = effective(name)
    assert config.active_switches() == list(FMUIA_RECIPE)
    assert (config.lr, config.head_lr_mult, config.fpn_lr_mult, config.warmup_steps) == (1e-3, 3.0, 1.0, 30)



def test_switches_fmuia_names_the_whole_recipe_in_profiles_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ntrain:\n  switches: fmuia\n  image_size: 64\n", encoding="utf-8")
    assert profiles.run_settings(path).config.switches == list(FMUIA_RECIPE)
    official = profiles.run_settings("official-baseline", {"switches": "fmuia"}).config
    assert official.active_switches() == list(FMUIA_RECIPE)
    assert profiles.run_settings(path, {"switches": "official"}).config.switches == []


def test_a_profile_extends_another_key_by_key(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("name: child\nextends: cpu-smoke\ntrain:\n  max_steps: 40\n  eval_every: 40\n"
                     "notebooks:\n  06_experiments:\n    jobs: 1\n", encoding="utf-8")
    base, mine = profiles.load_profile("cpu-smoke"), profiles.load_profile(child)
    assert mine.train == {**base.train, "max_steps": 40, "eval_every": 40}
    assert mine.data == base.data and mine.seeds == base.seeds
    assert mine.notebooks["06_experiments"] == {**base.notebooks.get("06_experiments", {}), "jobs": 1}
    grandchild = tmp_path / "grandchild.yaml"  # a path is read beside the extending profile
    grandchild.write_text("name: gc\nextends: child.yaml\ntrain:\n  lr: 0.002\n", encoding="utf-8")
    assert profiles.load_profile(grandchild).train == {**mine.train, "lr": 0.002}


def test_a_profile_that_extends_itself_or_a_missing_one_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nextends: b.yaml\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("name: b\nextends: a.yaml\n", encoding="utf-8")
    with pytest.raises(profiles.ProfileError, match="extends itself"):
        profiles.load_profile(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("name: c\nextends: no-such-profile\n", encoding="utf-8")
    with pytest.raises(profiles.ProfileError, match="c.yaml: extends no-such-profile: profile 'no-such-profile' not found"):
        profiles.load_profile(tmp_path / "c.yaml")


@pytest.mark.parametrize("name", profiles.list_profiles())
def test_no_shipped_profile_restates_a_value_it_would_have_anyway(name):
    """Each key a shipped profile writes changes its run: dropping it (leaving the defaults,
    the switches and the profile it extends) gives another config."""
    import yaml

    raw = yaml.safe_load((PACKAGED / f"{name}.yaml").read_text(encoding="utf-8"))
    full = profiles.load_profile(name)
    for key in (raw.get("train") or {}):
        if key == "switches":
            continue
        without = profiles.Profile(name="without", train={k: v for k, v in full.train.items() if k != key})
        if "extends" in raw:  # the key's value as the extended profile has it
            base = profiles.load_profile(raw["extends"]).train
            if key in base:
                without.train[key] = base[key]
        try:
            dropped = profiles.run_settings(without).config
        except profiles.ProfileError:
            continue  # without it the profile is not valid (e.g. `epochs: null` beside max_steps)
        kept = profiles.run_settings(profiles.Profile(name="with", train=full.train)).config
        assert dropped != kept, f"{name}.yaml restates train.{key}"
