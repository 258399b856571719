"""`TrainConfig`: every training knob in one dataclass.

The same object drives a notebook (each field is one papermill parameter), the
``fmuia train --config FILE --set key=value`` command and a checkpoint (stored as a
plain dict, so ``torch.load(weights_only=True)`` can read it back).

**The defaults are the official FM_UIA 2026 baseline's recipe** (its ``train.py``):
EfficientNet-B4 with ImageNet weights, 256 px, batch 20, AdamW at 1e-4 with heads at 10x
and the FPN decoder in no optimiser group, cosine annealing stepped once per epoch for 50
epochs, the grid detection head, the linear landmark head, Dice / cross-entropy / MSE /
grid-detection losses, photometric augmentation only, the baseline's task sampler, a
seeded ``random_split`` of all rows, per-batch validation, fp32, seed 42.

fmuia's fixes are named switches on top of it (``fmuia_lib.switches``), listed in the
``switches`` field: the effective config is the official defaults, then the listed
switches' values, then the config's own keys (:meth:`TrainConfig.from_dict`).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fmuia_lib import switches as switch_registry
from fmuia_lib.tasks import TASK_TYPES

SAMPLERS = ("official", "uniform", "proportional", "temperature")
SPLITS = ("random", "stratified")
SEG_LOSSES = ("dice", "dice_ce")
REG_LOSSES = ("mse", "smooth_l1")
AMP_DTYPES = ("auto", "bf16", "fp16")
NORM_STATS = ("running", "shared", "per_task")
SCHEDULES = ("cosine_epochs", "warmup_cosine")
VALIDATIONS = ("per_batch", "whole_set")


class ConfigError(ValueError):
    """A configuration value is unknown or invalid; the message names the key."""


def _default_loss_weights() -> dict[str, float]:
    return {t: 1.0 for t in TASK_TYPES}


@dataclass
class TrainConfig:
    """Every knob of a training run. Field names are the YAML keys and the notebook parameters.

    Build one with :meth:`from_dict` (or :meth:`from_yaml`), which applies the listed
    ``switches``; the plain constructor only checks that the listed switches' fields hold
    their values.
    """

    # -- data ---------------------------------------------------------------------------
    data_root: str | None = None  #: training data root (holds csv_files/)
    val_root: str | None = None  #: validation data root; None: split data_root by val_fraction
    val_fraction: float = 0.2  #: share of the rows held out when val_root is None
    split: str = "random"  #: "random" (the baseline: random_split of all rows, seeded by seed, val size
    #: int(N * val_fraction)) | "stratified" (per task, stratified by class; data.sampler.stratified_split)
    manifest: str | None = None  #: task manifest CSV (None: the packaged one)
    tasks: list[str] | None = None  #: subset of task_ids (None: every task found in the data)
    image_size: int = 256  #: square model input size in pixels (multiple of 32)
    augment: str = "official"  #: augmentation preset of data.transforms.build_transforms:
    #: "official" (the baseline's) | "light" | "none"
    sampler: str = "official"  #: "official" (the baseline's) | "uniform" | "proportional" | "temperature"
    sampler_temperature: float = 2.0  #: T in p_task ~ n_task^(1/T) (temperature sampler)
    num_workers: int = 4  #: DataLoader worker processes (a speed setting)
    # -- model --------------------------------------------------------------------------
    encoder: str = "efficientnet-b4"  #: any smp encoder name, or "tu-<timm model>"
    encoder_weights: str | None = "imagenet"  #: "imagenet", a local .pth/.safetensors file, or None
    freeze_fpn: bool = True  #: the baseline's FPN decoder is in no optimiser group (switch trained_fpn)
    det_head: str = "grid"  #: detection head: "grid" (the baseline's) | "centernet" (heads.DETECTION_HEADS)
    landmark_head: str = "linear"  #: Regression head: "linear" (the baseline's) | "sigmoid" | "heatmap"
    #: (heads.LANDMARK_HEADS; "heatmap" reads the FPN map, heads.reads_fpn)
    fpn_pyramid_channels: int = 256  #: FPN decoder width: its pyramid levels (smp.FPN's default, the baseline's)
    fpn_segmentation_channels: int = 128  #: channels of the FPN map the dense heads read (smp.FPN's default)
    head_priors: bool = False  #: start Regression heads at the training set's mean landmarks
    norm_stats: str = "running"  #: BatchNorm statistics used at evaluation: "running" (PyTorch's
    #: running averages, the baseline), "shared" (re-estimated over every task) or "per_task"
    #: (re-estimated for each task and kept in the model); see training.norm_stats
    norm_stats_batches: int = 8  #: training batches per task that re-estimate them before each validation
    # -- how long, and when to validate --------------------------------------------------
    epochs: int | None = 50  #: run length in epochs of len(training rows) // batch_size steps (None: max_steps)
    max_steps: int | None = None  #: run length in optimiser steps, instead of epochs
    eval_every: int = 1  #: validate and checkpoint every N epochs (N steps when max_steps is set), and at the end
    validation: str = "per_batch"  #: "per_batch" (the baseline's rule, training.per_batch_validation) |
    #: "whole_set" (per-task challenge metrics over the whole set, training.validation)
    val_batch_size: int | None = 8  #: None: same as batch_size (the per-batch rule depends on it)
    # -- optimisation -------------------------------------------------------------------
    batch_size: int = 20
    lr: float = 1e-4  #: encoder learning rate
    head_lr_mult: float = 10.0  #: task heads learn at lr * head_lr_mult (baseline: 10)
    fpn_lr_mult: float | None = None  #: trained FPN decoder's multiplier (None: same as head_lr_mult)
    weight_decay: float = 1e-2  #: AdamW's default, as the baseline
    schedule: str = "cosine_epochs"  #: "cosine_epochs" (the baseline: CosineAnnealingLR over the run's
    #: epochs, stepped once per epoch, floor eta_min) | "warmup_cosine" (per step: warmup_steps of linear
    #: warm-up, then cosine to min_lr_ratio of each group's peak)
    eta_min: float = 1e-6  #: absolute LR floor of "cosine_epochs", every group
    warmup_steps: int = 0  #: linear warm-up steps ("warmup_cosine" only)
    min_lr_ratio: float = 0.01  #: floor of "warmup_cosine" as a fraction of each group's peak LR
    grad_clip: float | None = None  #: max global gradient norm (None: no clipping, the baseline)
    # -- speed settings (change speed and memory, not the recipe) -------------------------
    amp: bool = False  #: mixed precision (the baseline trains in fp32)
    amp_dtype: str = "auto"  #: "auto" (bf16 where the GPU supports it, else fp16; off on CPU) | "bf16" |
    #: "fp16" (honoured on CPU too)
    channels_last: bool = False  #: NHWC memory format (faster convolutions on recent GPUs)
    # -- losses -------------------------------------------------------------------------
    seg_loss: str = "dice"  #: "dice" (the baseline) | "dice_ce"
    cls_label_smoothing: float = 0.0
    reg_loss: str = "mse"  #: "mse" (the baseline) | "smooth_l1"
    det_size_weight: float = 5.0  #: weight of the box-size L1 term of the CenterNet loss
    det_offset_weight: float = 1.0  #: weight of the centre-offset L1 term of the CenterNet loss
    landmark_heatmap_weight: float = 1.0  #: weight of the heat-map landmark head's KL term
    #: (losses.HeatmapLandmarkLoss)
    loss_weights: dict[str, float] = field(default_factory=_default_loss_weights)  #: per task type
    uncertainty_weighting: bool = False  #: learn per-type weights (Kendall et al. 2018)
    # -- run ----------------------------------------------------------------------------
    switches: list[str] = field(default_factory=list)  #: fmuia's fixes switched on (fmuia_lib.switches)
    seed: int = 42  #: fixes the split, sampling, augmentation and initialisation
    deterministic: bool = False  #: deterministic cuDNN kernels (slower)
    device: str | None = None  #: "cpu", "cuda", "cuda:1"... (None: CUDA when available)
    out_dir: str = "runs/train"  #: every file the run writes goes here
    resume: str | None = None  #: checkpoint to continue from
    stop_at_step: int | None = None  #: end early after this step (the schedule still spans the whole run)

    def __post_init__(self) -> None:
        self.validate()

    # -- checks -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        from fmuia_lib.data.transforms import AUGMENT_LEVELS
        from fmuia_lib.heads import DETECTION_HEADS, LANDMARK_HEADS

        def choice(name: str, options) -> None:
            if getattr(self, name) not in options:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected one of {tuple(options)}")

        choice("sampler", SAMPLERS)
        choice("split", SPLITS)
        choice("augment", AUGMENT_LEVELS)
        choice("det_head", DETECTION_HEADS)
        choice("landmark_head", LANDMARK_HEADS)
        choice("validation", VALIDATIONS)
        choice("schedule", SCHEDULES)
        choice("seg_loss", SEG_LOSSES)
        choice("reg_loss", REG_LOSSES)
        choice("amp_dtype", AMP_DTYPES)
        choice("norm_stats", NORM_STATS)
        positive = ("image_size", "batch_size", "eval_every", "lr", "norm_stats_batches", "fpn_pyramid_channels",
                    "fpn_segmentation_channels")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be > 0")
        if self.image_size % 32:
            raise ConfigError(f"image_size={self.image_size}: must be a multiple of 32 "
                              "(the encoder halves the resolution five times)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction}: must be in [0, 1)")
        if (self.epochs is None) == (self.max_steps is None):
            raise ConfigError(f"epochs={self.epochs!r}, max_steps={self.max_steps!r}: set exactly one "
                              "(the run length, in epochs or in steps), the other to null")
        for name in ("epochs", "max_steps"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be > 0")
        if self.fpn_segmentation_channels % 32:
            raise ConfigError(f"fpn_segmentation_channels={self.fpn_segmentation_channels}: must be a multiple of 32 "
                              "(the FPN's segmentation blocks use GroupNorm with 32 groups)")
        if self.landmark_heatmap_weight < 0:
            raise ConfigError(f"landmark_heatmap_weight={self.landmark_heatmap_weight}: must be >= 0")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps}: must be >= 0")
        if self.warmup_steps and self.schedule != "warmup_cosine":
            raise ConfigError(f"warmup_steps={self.warmup_steps}: only the 'warmup_cosine' schedule warms up "
                              f"(schedule={self.schedule!r})")
        if self.max_steps is not None and self.warmup_steps >= self.max_steps:
            raise ConfigError(f"warmup_steps={self.warmup_steps}: must be in [0, max_steps)")
        if self.freeze_fpn and self.fpn_lr_mult is not None:
            raise ConfigError(f"fpn_lr_mult={self.fpn_lr_mult}: the FPN decoder is frozen (freeze_fpn, the baseline); "
                              "switch trained_fpn on or drop fpn_lr_mult")
        if self.eta_min < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"eta_min={self.eta_min}, min_lr_ratio={self.min_lr_ratio}: "
                              "need eta_min >= 0 and min_lr_ratio in [0, 1]")
        if self.stop_at_step is not None and self.stop_at_step <= 0:
            raise ConfigError(f"stop_at_step={self.stop_at_step}: must be positive")
        if self.stop_at_step is not None and self.max_steps is not None and self.stop_at_step % self.eval_every:
            raise ConfigError(f"stop_at_step={self.stop_at_step}: must be a positive multiple of "
                              f"eval_every ({self.eval_every}), where checkpoints are written")
        unknown = sorted(set(self.loss_weights) - set(TASK_TYPES))
        if unknown:
            raise ConfigError(f"loss_weights: unknown task type(s) {unknown}; expected {TASK_TYPES}")
        self._check_switches()

    def _check_switches(self) -> None:
        unknown = switch_registry.unknown_switches(self.switches)
        if unknown:
            raise ConfigError(f"switches: unknown {unknown}; known: {list(switch_registry.SWITCHES)}")
        if len(set(self.switches)) != len(self.switches):
            raise ConfigError(f"switches: {self.switches} lists a switch twice")
        _check_alternatives(self.switches)
        for name, (value, switch) in switch_registry.implied_values(self.switches).items():
            if getattr(self, name) != value:
                raise ConfigError(f"{name}={getattr(self, name)!r} contradicts switch {switch!r}, which sets "
                                  f"{name}={value!r} (TrainConfig.from_dict applies the switches' values)")

    # -- the recipe ---------------------------------------------------------------------
    def active_switches(self) -> list[str]:
        """The fixes this config runs, in the registry's order (``fmuia_lib.switches``)."""
        return [name for name in switch_registry.SWITCHES if name in self.switches]

    def own_values(self) -> dict[str, Any]:
        """The fields this config sets beyond the official defaults and its switches (a
        profile's own keys), plus ``switches``: ``from_dict(config.own_values()) == config``."""
        base = type(self).from_dict({"switches": list(self.switches)}).to_dict()
        return {"switches": list(self.switches),
                **{k: v for k, v in self.to_dict().items() if k != "switches" and v != base[k]}}

    @property
    def effective_fpn_lr_mult(self) -> float:
        return self.head_lr_mult if self.fpn_lr_mult is None else self.fpn_lr_mult

    def steps_per_epoch(self, num_train_rows: int, world_size: int = 1) -> int:
        """Optimiser steps in one epoch: ``num_train_rows // batch_size`` batches (the baseline's
        epoch), shared among ``world_size`` data-parallel processes."""
        steps = num_train_rows // self.batch_size // world_size
        if steps < 1:
            raise ConfigError(f"batch_size={self.batch_size}: {num_train_rows} training rows do not fill one "
                              f"batch per process ({world_size} process(es))")
        return steps

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run length in optimiser steps."""
        return self.max_steps if self.max_steps is not None else self.epochs * steps_per_epoch

    def eval_interval(self, steps_per_epoch: int) -> int:
        """Steps between two validations."""
        return self.eval_every if self.max_steps is not None else self.eval_every * steps_per_epoch

    def schedule_epochs(self, steps_per_epoch: int) -> int:
        """Length of the "cosine_epochs" schedule in epochs (``T_max``): the run's epochs."""
        return self.epochs if self.epochs is not None else math.ceil(self.max_steps / steps_per_epoch)

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (safe for YAML and ``weights_only`` checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Official defaults + the listed ``switches`` + ``values``' own keys.

        An unknown key is an error that suggests the closest field; a key whose value
        contradicts a listed switch is an error naming both.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise ConfigError(_unknown_key_message(key, names))
        own = {k: _coerce(cls, k, v) for k, v in values.items()}
        if "loss_weights" in own:
            own["loss_weights"] = {k: float(v) for k, v in
                                   {**_default_loss_weights(), **(own["loss_weights"] or {})}.items()}
        listed = list(own.get("switches") or [])
        unknown = switch_registry.unknown_switches(listed)
        if unknown:
            raise ConfigError(f"switches: unknown {unknown}; known: {list(switch_registry.SWITCHES)}")
        _check_alternatives(listed)
        implied = switch_registry.implied_values(listed)
        for key, value in own.items():
            if key in implied and value != implied[key][0]:
                raise ConfigError(f"{key}={value!r} contradicts switch {implied[key][1]!r}, which sets "
                                  f"{key}={implied[key][0]!r}: drop the key or the switch")
        return cls(**{**{k: v for k, (v, _) in implied.items()}, **own})

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return path

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML mapping of fields, or a profile (``fmuia_lib/profiles/*.yaml``),
        whose ``train:`` section holds the fields."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of TrainConfig fields, got {type(values).__name__}")
        if isinstance(values.get("train"), dict):  # a suite profile: its `train:` section
            values = values["train"]
        try:
            return cls.from_dict(values)
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> "TrainConfig":
        """A copy with ``["key=value", ...]`` applied; values are parsed as YAML scalars.

        ``loss_weights.detection=2`` sets one entry of a dict field. The overrides join
        this config's own keys (:meth:`own_values`), so ``switches=[...]`` re-derives what
        the switches set, and a key that contradicts a listed switch is an error.
        """
        values = self.own_values()
        items = overrides.items() if isinstance(overrides, dict) else map(_split_override, overrides)
        for key, value in items:
            if "." in key:
                outer, inner = key.split(".", 1)
                current = values.get(outer, getattr(self, outer, None))
                if not isinstance(current, dict):
                    raise ConfigError(f"{key}: {outer!r} is not a dict field")
                values[outer] = {**current, inner: value}
            else:
                values[key] = value
        return type(self).from_dict(values)


def _check_alternatives(names: list[str]) -> None:
    for first, second, field_name in switch_registry.conflicting(names):
        raise ConfigError(f"switches: {first!r} and {second!r} are alternatives (both set {field_name}): "
                          "list one of them")


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def _unknown_key_message(key: str, names: list[str]) -> str:
    close = difflib.get_close_matches(key, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown TrainConfig field {key!r}{hint}"


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Accept YAML's spelling of numbers (``1e-4`` is a str in YAML 1.1, ``10`` an int)."""
    hint = typing.get_type_hints(cls)[name]
    args = set(typing.get_args(hint)) or {hint}
    if value is None:
        if type(None) not in args:
            raise ConfigError(f"{name}: None is not allowed")
        return None
    if float in args and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r}: expected a number") from None
    if int in args and isinstance(value, float) and value.is_integer():
        return int(value)
    if int in args and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r}: expected an integer") from None
    if bool in args and not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r}: expected true or false")
    if name in ("tasks", "switches") and isinstance(value, str):
        return [value]
    return value
