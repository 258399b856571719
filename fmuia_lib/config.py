"""`TrainConfig`: every training knob in one dataclass.

The same object drives a notebook (each field is one papermill parameter), the
``fmuia train --config FILE --set key=value`` command and a checkpoint (stored as a
plain dict, so ``torch.load(weights_only=True)`` can read it back).

Defaults reproduce the challenge baseline's recipe where it is sound
(EfficientNet-B4, 256 px, batch 20, AdamW at 1e-4 with heads at 10x, cosine
annealing) and fix it where it is not (the FPN decoder is trained, batches are
drawn with temperature sampling, detection is CenterNet-style, segmentation adds
cross-entropy to Dice, which on the phantom learns small structures within a
hundred steps where Dice alone still predicts empty masks). The baseline's choices
stay reachable: ``freeze_fpn=True``, ``sampler="uniform"``, ``seg_loss="dice"``.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fmuia_lib.tasks import TASK_TYPES

SAMPLERS = ("uniform", "proportional", "temperature")
SEG_LOSSES = ("dice", "dice_ce")
REG_LOSSES = ("mse", "smooth_l1")
AMP_DTYPES = ("auto", "bf16", "fp16")
NORM_STATS = ("running", "shared", "per_task")


class ConfigError(ValueError):
    """A configuration value is unknown or invalid; the message names the key."""


def _default_loss_weights() -> dict[str, float]:
    return {t: 1.0 for t in TASK_TYPES}


@dataclass
class TrainConfig:
    """Every knob of a training run. Field names are the YAML keys and the notebook parameters."""

    # -- data ---------------------------------------------------------------------------
    data_root: str | None = None  #: training data root (holds csv_files/)
    val_root: str | None = None  #: validation data root; None: split data_root by val_fraction
    val_fraction: float = 0.2  #: share of each task held out when val_root is None
    manifest: str | None = None  #: task manifest CSV (None: the packaged one)
    tasks: list[str] | None = None  #: subset of task_ids (None: every task found in the data)
    image_size: int = 256  #: square model input size in pixels (multiple of 32)
    augment: str = "light"  #: augmentation preset passed to data.transforms.build_transforms
    sampler: str = "temperature"  #: "uniform" (baseline) | "proportional" | "temperature"
    sampler_temperature: float = 2.0  #: T in p_task ~ n_task^(1/T) (temperature sampler)
    num_workers: int = 2  #: DataLoader worker processes
    # -- model --------------------------------------------------------------------------
    encoder: str = "efficientnet-b4"  #: any smp encoder name, or "tu-<timm model>"
    encoder_weights: str | None = "imagenet"  #: "imagenet", a local .pth/.safetensors file, or None
    freeze_fpn: bool = False  #: True reproduces the baseline, whose FPN decoder is never optimised
    head_priors: bool = True  #: start Regression heads at the training set's mean landmarks
    #: (False: the baseline's random initialisation)
    norm_stats: str = "per_task"  #: BatchNorm statistics used at evaluation: "running" (PyTorch's
    #: running averages, the baseline), "shared" (re-estimated over every task) or "per_task"
    #: (re-estimated for each task and kept in the model); see training.norm_stats
    norm_stats_batches: int = 8  #: training batches per task that re-estimate them before each validation
    # -- optimisation -------------------------------------------------------------------
    batch_size: int = 20
    val_batch_size: int | None = None  #: None: same as batch_size
    max_steps: int = 2000  #: optimiser steps (one task-homogeneous batch each)
    eval_every: int = 250  #: validate and checkpoint every N steps (and at the end)
    lr: float = 1e-4  #: encoder learning rate
    head_lr_mult: float = 10.0  #: task heads learn at lr * head_lr_mult (baseline: 10)
    fpn_lr_mult: float | None = None  #: FPN decoder multiplier (None: same as head_lr_mult)
    weight_decay: float = 1e-2
    warmup_steps: int = 0  #: linear warm-up steps before the cosine decay
    min_lr_ratio: float = 0.01  #: cosine floor as a fraction of each group's peak LR
    grad_clip: float | None = 1.0  #: max global gradient norm (None: no clipping)
    amp: bool = True  #: mixed precision on CUDA (always off on CPU)
    amp_dtype: str = "auto"  #: "auto" (bf16 where supported, else fp16) | "bf16" | "fp16"
    channels_last: bool = False  #: NHWC memory format (faster convolutions on recent GPUs)
    # -- losses -------------------------------------------------------------------------
    seg_loss: str = "dice_ce"  #: "dice_ce" | "dice" (baseline; learns small structures slowly)
    cls_label_smoothing: float = 0.0
    reg_loss: str = "mse"  #: "mse" (baseline) | "smooth_l1"
    det_size_weight: float = 5.0  #: weight of the box-size L1 term of the detection loss
    det_offset_weight: float = 1.0  #: weight of the centre-offset L1 term
    loss_weights: dict[str, float] = field(default_factory=_default_loss_weights)  #: per task type
    uncertainty_weighting: bool = False  #: learn per-type weights (Kendall et al. 2018)
    # -- run ----------------------------------------------------------------------------
    seed: int = 0
    deterministic: bool = False  #: deterministic cuDNN kernels (slower)
    device: str | None = None  #: "cpu", "cuda", "cuda:1"... (None: CUDA when available)
    out_dir: str = "runs/train"  #: every file the run writes goes here
    resume: str | None = None  #: checkpoint to continue from
    stop_at_step: int | None = None  #: end early after this step (the schedule still spans max_steps)

    def __post_init__(self) -> None:
        self.validate()

    # -- checks -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        def choice(name: str, options: tuple[str, ...]) -> None:
            if getattr(self, name) not in options:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected one of {options}")

        choice("sampler", SAMPLERS)
        choice("seg_loss", SEG_LOSSES)
        choice("reg_loss", REG_LOSSES)
        choice("amp_dtype", AMP_DTYPES)
        choice("norm_stats", NORM_STATS)
        positive = ("image_size", "batch_size", "max_steps", "eval_every", "lr", "norm_stats_batches")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be > 0")
        if self.image_size % 32:
            raise ConfigError(f"image_size={self.image_size}: must be a multiple of 32 "
                              "(the encoder halves the resolution five times)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction}: must be in [0, 1)")
        if self.warmup_steps < 0 or self.warmup_steps >= self.max_steps:
            raise ConfigError(f"warmup_steps={self.warmup_steps}: must be in [0, max_steps)")
        if self.stop_at_step is not None and (self.stop_at_step <= 0 or self.stop_at_step % self.eval_every):
            raise ConfigError(f"stop_at_step={self.stop_at_step}: must be a positive multiple of "
                              f"eval_every ({self.eval_every}), where checkpoints are written")
        unknown = sorted(set(self.loss_weights) - set(TASK_TYPES))
        if unknown:
            raise ConfigError(f"loss_weights: unknown task type(s) {unknown}; expected {TASK_TYPES}")

    @property
    def effective_fpn_lr_mult(self) -> float:
        return self.head_lr_mult if self.fpn_lr_mult is None else self.fpn_lr_mult

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (safe for YAML and ``weights_only`` checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict; an unknown key is an error that suggests the closest field."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise ConfigError(_unknown_key_message(key, names))
        merged = dict(values)
        if "loss_weights" in merged:
            merged["loss_weights"] = {k: float(v) for k, v in
                                      {**_default_loss_weights(), **(merged["loss_weights"] or {})}.items()}
        return cls(**{k: _coerce(cls, k, v) for k, v in merged.items()})

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

        ``loss_weights.detection=2`` sets one entry of a dict field.
        """
        values = self.to_dict()
        items = overrides.items() if isinstance(overrides, dict) else map(_split_override, overrides)
        for key, value in items:
            if "." in key:
                outer, inner = key.split(".", 1)
                if not isinstance(values.get(outer), dict):
                    raise ConfigError(f"{key}: {outer!r} is not a dict field")
                values[outer] = {**values[outer], inner: value}
            else:
                values[key] = value
        return type(self).from_dict(values)


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
    if name == "tasks" and isinstance(value, str):
        return [value]
    return value
