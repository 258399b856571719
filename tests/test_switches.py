"""fmuia's fixes as named switches on the official recipe: the registry, how a config applies
them, and the docs table generated from it."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fmuia_lib import switches
from fmuia_lib.config import ConfigError, TrainConfig
from fmuia_lib.switches import FMUIA_RECIPE, SPEED_SETTINGS, SWITCHES

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def test_the_registry_has_the_named_switches_and_each_changes_the_official_recipe():
    assert list(SWITCHES) == ["trained_fpn", "centernet_detection", "whole_set_validation", "epoch_batcher",
                              "temperature_sampler", "dice_ce", "per_task_norm_stats", "head_priors", "smooth_l1",
                              "warmup_cosine", "grad_clipping", "antialiased_resize", "geometric_augmentation",
                              "light_augmentation", "sigmoid_landmarks", "heatmap_landmarks"]
    official = TrainConfig()
    alternative = {name for group in switches.ALTERNATIVES for name in group}
    seen: dict[str, str] = {}
    for switch in SWITCHES.values():
        assert switch.baseline and switch.fmuia and switch.why
        for field, value in switch.sets.items():
            assert field in FIELDS and field not in SPEED_SETTINGS, (switch.name, field)
            assert getattr(official, field) != value, (switch.name, field)  # the switch changes something
            if field in seen:  # only alternatives share a field, and they are declared as such
                assert {seen[field], switch.name} <= alternative, f"{field} is set by two switches"
            seen[field] = switch.name
    assert set(SPEED_SETTINGS) <= FIELDS


def test_the_fmuia_recipe_lists_one_of_each_group_of_alternatives():
    assert switches.conflicting(FMUIA_RECIPE) == []
    assert set(SWITCHES) - set(FMUIA_RECIPE) == {
        name for group in switches.ALTERNATIVES for name in group} - set(FMUIA_RECIPE)
    for group in switches.ALTERNATIVES:
        assert len(set(group) & set(FMUIA_RECIPE)) == 1, group
    with pytest.raises(ConfigError, match="'sigmoid_landmarks' and 'heatmap_landmarks' are alternatives"):
        TrainConfig.from_dict({"switches": ["sigmoid_landmarks", "heatmap_landmarks"]})
    with pytest.raises(ConfigError, match="are alternatives"):
        TrainConfig(switches=["sigmoid_landmarks", "heatmap_landmarks"], landmark_head="sigmoid")
    swapped = [s for s in FMUIA_RECIPE if s not in {"sigmoid_landmarks", "heatmap_landmarks"}]
    for head in ("sigmoid", "heatmap"):
        config = TrainConfig.from_dict({"switches": swapped + [f"{head}_landmarks"]})
        assert config.landmark_head == head


def test_from_dict_is_official_defaults_then_switches_then_own_keys():
    config = TrainConfig.from_dict({"switches": ["dice_ce", "warmup_cosine", "grad_clipping"], "lr": 3e-4,
                                    "warmup_steps": 5})
    expected = TrainConfig().to_dict()
    expected.update(seg_loss="dice_ce", schedule="warmup_cosine", warmup_fraction=0.05, grad_clip=1.0, lr=3e-4,
                    warmup_steps=5, switches=["dice_ce", "warmup_cosine", "grad_clipping"])
    assert config.to_dict() == expected
    assert config.active_switches() == ["dice_ce", "warmup_cosine", "grad_clipping"]
    assert config.own_values() == {"switches": ["dice_ce", "warmup_cosine", "grad_clipping"], "lr": 3e-4,
                                   "warmup_steps": 5}
    assert config.warmup_length(1000) == 5 and TrainConfig.from_dict(
        {"switches": ["warmup_cosine"]}).warmup_length(1000) == 50  # warm-up on: 5 % of the run
    assert TrainConfig.from_dict(config.own_values()) == config
    assert TrainConfig.from_dict({}) == TrainConfig() and TrainConfig().active_switches() == []
    # a key that agrees with a listed switch is allowed; one that contradicts it names both
    assert TrainConfig.from_dict({"switches": ["dice_ce"], "seg_loss": "dice_ce"}).seg_loss == "dice_ce"
    with pytest.raises(ConfigError, match="grad_clip=0.5 contradicts switch 'grad_clipping'.*grad_clip=1.0"):
        TrainConfig.from_dict({"switches": ["grad_clipping"], "grad_clip": 0.5})
    # the plain constructor does not apply switches, and says so
    with pytest.raises(ConfigError, match="seg_loss='dice' contradicts switch 'dice_ce'.*from_dict"):
        TrainConfig(switches=["dice_ce"])


def test_overrides_rederive_what_switches_set():
    fmuia = TrainConfig.from_dict({"switches": list(FMUIA_RECIPE), "lr": 1e-3})
    assert fmuia.sampler == "temperature" and fmuia.freeze_fpn is False
    fewer = fmuia.with_overrides({"switches": switches.agreeing(FMUIA_RECIPE, sampler="uniform")})
    assert fewer.active_switches() == [s for s in FMUIA_RECIPE if s != "temperature_sampler"]
    assert fewer.sampler == "official" and fewer.lr == 1e-3  # back to the baseline's, own keys kept
    assert fewer.with_overrides(["sampler=uniform"]).sampler == "uniform"
    with pytest.raises(ConfigError, match="contradicts switch 'temperature_sampler'"):
        fmuia.with_overrides(["sampler=uniform"])
    assert switches.agreeing(FMUIA_RECIPE, freeze_fpn=True, sampler="temperature") == [
        s for s in FMUIA_RECIPE if s != "trained_fpn"]


def test_docs_switch_table_is_the_registry():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    start = text.index("<!-- switch table")
    table = text[text.index("\n", start) + 1:text.index("\n<!-- end of switch table -->")]
    assert table == switches.switch_table()
    for name in SWITCHES:
        assert f"| `{name}` |" in table
