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
import numbers
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fmuia_lib import switches as switch_registry
from fmuia_lib.tasks import DETECTION, REGRESSION, TASK_TYPES

#: ``sampler`` values: the baseline's task sampler, then fmuia's strategies (data.sampler.STRATEGIES).
SPLIT_RULES = ("random", "stratified")  #: how training splits one data root (TrainConfig.split)
ROW_ORDERS = ("sorted", "glob")
SEG_LOSSES = ("dice", "dice_ce")
REG_LOSSES = ("mse", "smooth_l1")
AMP_DTYPES = ("auto", "bf16", "fp16")
NORM_STATS = ("running", "shared", "per_task")
SCHEDULES = ("cosine_epochs", "warmup_cosine")
VALIDATIONS = ("per_batch", "whole_set")
#: Device names a run accepts (None: CUDA when available).
DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:\d+)?")
#: The rule of every numeric field: (lowest, is the lowest allowed, highest, is the highest allowed);
#: None: no bound. Every number must also be finite; a field typed ``int`` takes integers only.
NUMBER_RULES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "val_fraction": (0.0, True, 1.0, False),
    "image_size": (32, True, None, False),
    "sampler_temperature": (0.0, False, None, False),
    "num_workers": (0, True, None, False),
    "norm_stats_batches": (1, True, None, False),
    "epochs": (1, True, None, False),
    "max_steps": (1, True, None, False),
    "eval_every": (1, True, None, False),
    "val_batch_size": (1, True, None, False),
    "batch_size": (1, True, None, False),
    "lr": (0.0, False, None, False),
    "head_lr_mult": (0.0, False, None, False),
    "fpn_lr_mult": (0.0, False, None, False),
    "weight_decay": (0.0, True, None, False),
    "eta_min": (0.0, True, None, False),
    "warmup_steps": (0, True, None, False),
    "warmup_fraction": (0.0, True, 1.0, False),
    "freeze_encoder_steps": (0, True, None, False),
    "min_lr_ratio": (0.0, True, 1.0, True),
    "grad_clip": (0.0, False, None, False),  # null: no clipping
    "cls_label_smoothing": (0.0, True, 1.0, False),
    "det_size_weight": (0.0, True, None, False),
    "det_offset_weight": (0.0, True, None, False),
    "seed": (0, True, 2**32 - 1, True),  # numpy's seed range
    "stop_at_step": (1, True, None, False),
    "fpn_pyramid_channels": (1, True, None, False),
    "fpn_segmentation_channels": (32, True, None, False),
    "landmark_heatmap_weight": (0.0, True, None, False),
}
#: Each entry of ``loss_weights`` and ``sampler_type_weights``: a finite weight >= 0 (0 switches
#: a task type's loss off, or never draws its tasks).
LOSS_WEIGHT_RULE = (0.0, True, None, False)
#: The fields that hold one weight per task type.
TYPE_WEIGHT_FIELDS = ("loss_weights", "sampler_type_weights")


class ConfigError(ValueError):
    """A configuration value is unknown or invalid; the message names the key."""


def _default_type_weights() -> dict[str, float]:
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
    row_order: str = "sorted"  #: order of the CSV files whose rows are split: "sorted" (by name: the same rows
    #: on every machine) | "glob" (the baseline's glob.glob order: the file system's directory order, which
    #: depends on the file system and on how the folder was written; the official-baseline profile)
    manifest: str | None = None  #: task manifest CSV (None: the packaged one)
    tasks: list[str] | None = None  #: subset of task_ids (None: every task found in the data)
    image_size: int = 256  #: square model input size in pixels (multiple of 32)
    resize: str = "bilinear"  #: "bilinear" (the baseline's OpenCV INTER_LINEAR, no antialiasing) |
    #: "antialias" (torchvision's antialiased bilinear; switch antialiased_resize); data.transforms
    geometric_augment: bool = False  #: label-safe flips and small affine warps per task type
    #: (data.transforms.build_transforms; switch geometric_augmentation; the baseline has none)
    augment: str = "official"  #: photometric augmentation of data.transforms.build_transforms:
    #: "official" (the baseline's) | "light" | "none"
    sampler: str = "official"  #: "official" (the baseline's) | "uniform" | "proportional" | "temperature"
    sampler_temperature: float = 2.0  #: T in p_task ~ n_task^(1/T) (temperature sampler)
    sampler_type_weights: dict[str, float] = field(default_factory=_default_type_weights)  #: per task type:
    #: each task's sampling weight is multiplied by its type's (fmuia's samplers; 0 never draws the type)
    num_workers: int = 4  #: DataLoader worker processes (a speed setting)
    data_cache: bool = False  #: read images and masks through their prepared form at image_size
    #: (data.cache, built once under out_dir/data_cache; the same items; a speed setting)
    # -- model --------------------------------------------------------------------------
    encoder: str = "efficientnet-b4"  #: any smp encoder name, or "tu-<timm model>"
    encoder_weights: str | None = "imagenet"  #: "imagenet", "imagenet-lite0-package" (encoder
    #: "tu-tf_efficientnet_lite0": ImageNet weights from a package, no download; fmuia_lib.pretrained),
    #: a local .pth/.safetensors file, or None
    freeze_encoder_steps: int = 0  #: the encoder's weights stay as loaded for the first N optimiser
    #: steps (its gradients dropped: no update, no weight decay; its BatchNorm statistics still adapt)
    freeze_fpn: bool = True  #: the baseline's FPN decoder is in no optimiser group (switch trained_fpn)
    det_head: str = "grid"  #: detection head: "grid" (the baseline's) | "centernet" (heads.HEAD_TYPES)
    landmark_head: str = "linear"  #: Regression head: "linear" (the baseline's) | "sigmoid" | "heatmap"
    #: (heads.HEAD_TYPES; "heatmap" reads the FPN map, heads.reads_fpn)
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
    warmup_fraction: float = 0.0  #: warm-up as a share of the run's steps, used when warmup_steps is 0
    #: ("warmup_cosine" only; switch warmup_cosine); see warmup_length
    min_lr_ratio: float = 0.01  #: floor of "warmup_cosine" as a fraction of each group's peak LR
    grad_clip: float | None = None  #: max global gradient norm (None: no clipping, the baseline)
    # -- speed settings (change speed and memory, not the recipe) -------------------------
    amp: bool = False  #: mixed precision (the baseline trains in fp32)
    amp_dtype: str = "auto"  #: "auto" (bf16 where the GPU supports it, else fp16; off on CPU) | "bf16" |
    #: "fp16" (honoured on CPU too)
    channels_last: bool | None = None  #: NHWC memory format; None: where it pays
    #: (model.channels_last_pays: on CUDA, and on CPU for every encoder but the ResNets)
    fused_adamw: bool = False  #: AdamW's fused kernel (faster; rounds differently from torch's default
    #: for-loop AdamW, the baseline's, so weights drift apart from the second step)
    # -- losses -------------------------------------------------------------------------
    seg_loss: str = "dice"  #: "dice" (the baseline) | "dice_ce"
    cls_label_smoothing: float = 0.0
    reg_loss: str = "mse"  #: "mse" (the baseline) | "smooth_l1"
    det_size_weight: float = 5.0  #: weight of the box-size L1 term of the CenterNet loss
    det_offset_weight: float = 1.0  #: weight of the centre-offset L1 term of the CenterNet loss
    landmark_heatmap_weight: float = 1.0  #: weight of the heat-map landmark head's KL term
    #: (losses.HeatmapLandmarkLoss)
    loss_weights: dict[str, float] = field(default_factory=_default_type_weights)  #: per task type
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
        """Raise :class:`ConfigError` naming the first invalid field.

        Every field has an explicit rule: its type (booleans are booleans, integers are
        integers, numbers finite), the bounds in ``NUMBER_RULES``, the options of a choice,
        and the relations between fields (run length, warm-up, LR floor, switches).
        """
        from fmuia_lib.data.sampler import STRATEGIES
        from fmuia_lib.data.transforms import AUGMENT_LEVELS, RESIZES
        from fmuia_lib.heads import HEAD_TYPES

        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            problem = _type_problem(f.name, getattr(self, f.name), hints[f.name])
            if problem:
                raise ConfigError(problem)
        for name, rule in NUMBER_RULES.items():
            value = getattr(self, name)
            if value is not None:
                _check_bounds(name, value, rule)

        def choice(name: str, options) -> None:
            if getattr(self, name) not in options:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected one of {tuple(options)}")

        choice("sampler", ("official", *STRATEGIES))
        choice("split", SPLIT_RULES)
        choice("row_order", ROW_ORDERS)
        choice("resize", RESIZES)
        choice("augment", AUGMENT_LEVELS)
        choice("det_head", HEAD_TYPES[DETECTION])
        choice("landmark_head", HEAD_TYPES[REGRESSION])
        choice("validation", VALIDATIONS)
        choice("schedule", SCHEDULES)
        choice("seg_loss", SEG_LOSSES)
        choice("reg_loss", REG_LOSSES)
        choice("amp_dtype", AMP_DTYPES)
        choice("norm_stats", NORM_STATS)
        for name in ("data_root", "val_root", "manifest", "encoder", "encoder_weights", "device", "out_dir",
                     "resume"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ConfigError(f"{name}={getattr(self, name)!r}: empty; give a value or null")
        if self.device is not None and not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(f"device={self.device!r}: not a device name (cpu, cuda, cuda:1, mps, or null for "
                              "the best available)")
        if self.image_size % 32:
            raise ConfigError(f"image_size={self.image_size}: must be a multiple of 32 "
                              "(the encoder halves the resolution five times)")
        if (self.epochs is None) == (self.max_steps is None):
            raise ConfigError(f"epochs={self.epochs!r}, max_steps={self.max_steps!r}: set exactly one "
                              "(the run length, in epochs or in steps), the other to null")
        if self.fpn_segmentation_channels % 32:
            raise ConfigError(f"fpn_segmentation_channels={self.fpn_segmentation_channels}: must be a multiple of 32 "
                              "(the FPN's segmentation blocks use GroupNorm with 32 groups)")
        if self.warmup_steps and self.schedule != "warmup_cosine":
            raise ConfigError(f"warmup_steps={self.warmup_steps}: only the 'warmup_cosine' schedule warms up "
                              f"(schedule={self.schedule!r})")
        if self.warmup_fraction and self.schedule != "warmup_cosine":
            raise ConfigError(f"warmup_fraction={self.warmup_fraction}: only the 'warmup_cosine' schedule warms up "
                              f"(schedule={self.schedule!r})")
        if self.max_steps is not None and self.warmup_steps >= self.max_steps:
            raise ConfigError(f"warmup_steps={self.warmup_steps}: must be in [0, max_steps)")
        if self.freeze_fpn and self.fpn_lr_mult is not None:
            raise ConfigError(f"fpn_lr_mult={self.fpn_lr_mult}: the FPN decoder is frozen (freeze_fpn, the baseline); "
                              "switch trained_fpn on or drop fpn_lr_mult")
        if self.eta_min > self.lr:
            raise ConfigError(f"eta_min={self.eta_min}: the LR floor is above lr={self.lr}, so the schedule "
                              "would raise the learning rate; use eta_min <= lr")
        if self.stop_at_step is not None and self.max_steps is not None and self.stop_at_step % self.eval_every:
            raise ConfigError(f"stop_at_step={self.stop_at_step}: must be a positive multiple of "
                              f"eval_every ({self.eval_every}), where checkpoints are written")
        for name in TYPE_WEIGHT_FIELDS:
            unknown = sorted(set(getattr(self, name)) - set(TASK_TYPES))
            if unknown:
                raise ConfigError(f"{name}: unknown task type(s) {unknown}; expected {TASK_TYPES}")
            for task_type, weight in getattr(self, name).items():
                _check_bounds(f"{name}.{task_type}", weight, LOSS_WEIGHT_RULE)
        if self.sampler == "official" and set(self.sampler_type_weights.values()) != {1.0}:
            raise ConfigError(f"sampler_type_weights={self.sampler_type_weights}: the official sampler draws every "
                              "task equally often; choose sampler uniform, proportional or temperature")
        if not any(self.sampler_type_weights.values()):
            raise ConfigError("sampler_type_weights: every weight is 0, so no task can be drawn")
        self._check_tasks()
        self._check_switches()

    def _check_tasks(self) -> None:
        if self.tasks is None:
            return
        if not self.tasks:
            raise ConfigError("tasks=[]: an empty list trains nothing; list task ids, or null for every task")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks={self.tasks}: lists a task twice")
        from fmuia_lib.tasks import ManifestError, load_manifest

        try:
            known = load_manifest(self.manifest)
        except ManifestError as err:
            raise ConfigError(f"manifest={self.manifest!r}: {err}") from None
        unknown = [t for t in self.tasks if t not in known]
        if unknown:
            close = {t: difflib.get_close_matches(t, list(known), n=1) for t in unknown}
            hints = "; ".join(f"{t!r}: did you mean {c[0]!r}?" for t, c in close.items() if c)
            raise ConfigError(f"tasks: unknown task id(s) {unknown} (not in the manifest)"
                              + (f"; {hints}" if hints else ""))

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

    def warmup_length(self, total_steps: int) -> int:
        """Warm-up steps of a run of ``total_steps``: ``warmup_steps``, or when that is 0,
        ``warmup_fraction`` of the run (rounded)."""
        return self.warmup_steps or round(self.warmup_fraction * total_steps)

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
        _clear_other_length(own, set(own))
        for name in TYPE_WEIGHT_FIELDS:
            if name in own:
                given = own[name] or {}
                if not isinstance(given, dict):
                    raise ConfigError(f"{name}={given!r}: expected a mapping of task type to weight")
                own[name] = {**_default_type_weights(), **{k: _coerce_weight(name, k, v) for k, v in given.items()}}
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
        from fmuia_lib.paths import atomic_write

        return atomic_write(path, yaml.safe_dump(self.to_dict(), sort_keys=False))  # whole or not at all

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML mapping of fields, or a profile (``fmuia_lib/profiles/*.yaml``),
        whose ``train:`` section holds the fields."""
        from fmuia_lib.paths import not_regular_problem

        path = Path(path)
        problem = not_regular_problem(path)
        if problem:  # a named pipe would block the reader
            raise ConfigError(f"config file {path} {problem}")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
            raise ConfigError(f"{path}: cannot be read as a YAML text file: {reason}") from None
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


def _coerce_weight(name: str, task_type: Any, value: Any) -> Any:
    """One entry of a per-task-type weight field (``loss_weights``...): an integer becomes a
    float; anything else is left for :meth:`TrainConfig.validate` to judge (``true`` is no weight)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name}.{task_type}={value!r}: expected a number") from None
    return value


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
    """A config file's value for field ``name``, converted only where nothing is lost.

    A float field takes an integer (``10``) and YAML 1.1's spelling of numbers that
    PyYAML leaves as text (``1e-4``); ``tasks`` and ``switches`` take one name for a
    one-item list, and ``switches`` a recipe's name (``fmuia``: ``switches.RECIPES``). Nothing else is converted: ``true`` is no integer, ``1.5`` or ``2.0``
    no integer, ``"yes"`` no boolean; :meth:`TrainConfig.validate` refuses them by name.
    """
    hint = typing.get_type_hints(cls)[name]
    args = set(typing.get_args(hint)) or {hint}
    if value is None:
        if type(None) not in args:
            raise ConfigError(f"{name}: null is not allowed")
        return None
    if float in args and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r}: expected a number") from None
    if float in args and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return float(value)
    if name == "switches" and isinstance(value, str) and value in switch_registry.RECIPES:
        return list(switch_registry.RECIPES[value])  # `switches: fmuia`: the whole recipe
    if name in ("tasks", "switches") and isinstance(value, str):
        return [value]
    return value


def _type_problem(name: str, value: Any, hint: Any) -> str | None:
    """Why ``value`` does not have the type of field ``name`` (None when it does)."""
    args = set(typing.get_args(hint)) if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}
    if value is None:
        return None if type(None) in args else f"{name}: null is not allowed"
    if bool in args:
        return None if isinstance(value, bool) else f"{name}={value!r}: expected true or false"
    if int in args:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return None
        return f"{name}={value!r}: expected an integer"
    if float in args:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return None
        return f"{name}={value!r}: expected a number"
    if str in args:
        return None if isinstance(value, str) else f"{name}={value!r}: expected text"
    origins = {typing.get_origin(a) for a in args}
    if list in origins:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return None
        return f"{name}={value!r}: expected a list of names"
    if dict in origins:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            bad = {k: v for k, v in value.items() if isinstance(v, bool) or not isinstance(v, numbers.Real)}
            if not bad:
                return None
            key, item = next(iter(bad.items()))
            return f"{name}.{key}={item!r}: expected a number"
        return f"{name}={value!r}: expected a mapping of task type to weight"
    return None


def _check_bounds(name: str, value: float, rule: tuple[float | None, bool, float | None, bool]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is finite and within ``rule`` (see ``NUMBER_RULES``)."""
    low, low_ok, high, high_ok = rule
    if not math.isfinite(value):
        raise ConfigError(f"{name}={value}: must be a finite number")
    too_low = low is not None and (value < low or (value == low and not low_ok))
    too_high = high is not None and (value > high or (value == high and not high_ok))
    if too_low or too_high:
        lower = "" if low is None else f"{'>=' if low_ok else '>'} {_number(low)}"
        upper = "" if high is None else f"{'<=' if high_ok else '<'} {_number(high)}"
        raise ConfigError(f"{name}={value}: must be {' and '.join(b for b in (lower, upper) if b)}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_runnable(config: TrainConfig) -> None:
    """What :meth:`TrainConfig.validate` cannot see from the values alone, checked before a
    run starts: the device exists here, the encoder and its named weights are known, and
    ``out_dir`` is a folder that is not, does not contain and does not lie inside a data
    root. Raises :class:`ConfigError` naming the key. Imports torch and smp."""
    import torch

    if config.device is not None and config.device.startswith("cuda"):
        index = int(config.device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ConfigError(f"device={config.device!r}: no such CUDA device here "
                              f"({torch.cuda.device_count()} available); use device=cpu or null")
    if config.device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device='mps': Apple's MPS backend is not available here; use device=cpu or null")
    _check_encoder(config.encoder, config.encoder_weights)
    from fmuia_lib.paths import linked_out_of, output_folder_problem, output_problem

    if config.resume is not None and not os.path.exists(os.path.expanduser(config.resume)):
        raise ConfigError(f"resume={config.resume!r}: no such checkpoint file")
    for key in ("data_root", "val_root"):
        root = getattr(config, key)
        if root is not None:
            problem = output_folder_problem(config.out_dir, root, name="out_dir", what=f"the {key}")
            if problem:
                raise ConfigError(problem)
    leaving = linked_out_of(config.out_dir) if os.path.isdir(config.out_dir) else None
    if leaving is not None:
        raise ConfigError(f"out_dir={config.out_dir!r}: {leaving} is a symbolic link to "
                          f"{os.path.realpath(leaving)}, outside out_dir; a run writes only inside out_dir")
    problem = output_problem(config.out_dir, name="out_dir", what="the run")  # any data root, not only its own
    if problem:
        raise ConfigError(problem)


RUN_LENGTHS = ("epochs", "max_steps")


def _clear_other_length(values: dict[str, Any], given: set[str]) -> None:
    """A run length named at one level (``max_steps: 27``) clears the other one set at a level
    below (the defaults' ``epochs: 50``): a user who names the run in steps means steps. Given
    both at the same level (``given``), both stand, and :meth:`TrainConfig.validate` refuses them."""
    for name, other in (RUN_LENGTHS, RUN_LENGTHS[::-1]):
        if name in given and values.get(name) is not None and other not in given:
            values[other] = None


def _check_encoder(name: str, weights: str | None) -> None:
    import segmentation_models_pytorch as smp

    if name.startswith("tu-"):
        import timm

        if not timm.is_model(name[3:]):
            raise ConfigError(f"encoder={name!r}: timm has no model {name[3:]!r} (timm.list_models() lists them)")
        named = ["imagenet"]  # smp gives a timm encoder timm's default pretrained weights, by this one tag
    else:
        encoders = smp.encoders.encoders
        if name not in encoders:
            close = difflib.get_close_matches(name, list(encoders), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"encoder={name!r}: not an smp encoder (smp.encoders.get_encoder_names()), "
                              f"nor 'tu-<timm model>'{hint}")
        named = list(encoders[name].get("pretrained_settings") or {})
    if weights is None:
        return
    from fmuia_lib import pretrained

    if weights == pretrained.PACKAGE_WEIGHTS:
        if name != pretrained.PACKAGE_ENCODER:
            raise ConfigError(f"encoder_weights={weights!r}: ImageNet weights of {pretrained.PACKAGE_ENCODER!r}; "
                              f"set encoder={pretrained.PACKAGE_ENCODER!r} (encoder is {name!r})")
        try:
            pretrained.package_weights_path()
        except pretrained.PackageMissing as exc:
            raise ConfigError(str(exc)) from None
        return
    path = os.path.expanduser(weights)
    if weights.endswith((".pth", ".pt", ".bin", ".safetensors")) or os.sep in weights or os.path.exists(path):
        if not os.path.exists(path):
            raise ConfigError(f"encoder_weights={weights!r}: no such file")
        from fmuia_lib.paths import not_regular_problem

        problem = not_regular_problem(path)
        if problem:
            raise ConfigError(f"encoder_weights={weights!r} {problem}")
        return
    if weights not in named:
        raise ConfigError(f"encoder_weights={weights!r}: {name} has pretrained weights {named}; or give "
                          "the path of a weights file, or null")
