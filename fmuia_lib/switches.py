"""fmuia's fixes to the official baseline, each one named switch on top of its recipe.

``TrainConfig()`` is the official FM_UIA 2026 baseline's recipe. Each switch below sets a
few config fields to fmuia's values; a config lists the switches it runs in its
``switches`` field, and the effective config is

    official defaults  +  the listed switches' values  +  the config's own keys

(``TrainConfig.from_dict``). A key of its own that contradicts a listed switch is an
error naming both, so a profile can never half-apply a fix. The fmuia recipe is every
switch (:data:`FMUIA_RECIPE`); listing a subset measures what each fix is worth.

:func:`switch_table` renders the registry as the Markdown table of
``docs/architecture.md`` (a test keeps the two identical).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Switch:
    """One fix: the config values it sets, and what it changes."""

    name: str
    sets: Mapping[str, Any]  #: TrainConfig field -> fmuia's value (the official value is the field's default)
    baseline: str  #: what the official baseline does
    fmuia: str  #: what fmuia does instead
    why: str
    #: for a switch that changes several things at once: why they are one change ("" for one idea)
    bundle: str = ""


_SWITCHES = (
    Switch("trained_fpn", {"freeze_fpn": False},
           "The FPN decoder is in no optimiser group: it keeps smp's initialisation for the whole run.",
           "The FPN decoder is trained, at `lr * fpn_lr_mult` (default: the heads' rate).",
           "Segmentation and detection heads otherwise read a fixed random projection of the encoder "
           "features."),
    Switch("centernet_detection", {"det_head": "centernet"},
           "Grid head: objectness is trained only at the true centre cell, always towards 1, yet the "
           "box is read at the cell of highest objectness.",
           "CenterNet head: a focal loss on a Gaussian centre heat map trains every cell; box size and "
           "centre offset are read at the peak.",
           "Untrained cells can out-score the true one, so the grid head may read its box from a "
           "cell that never learned one.",
           "A head with its loss and its decoding: the CenterNet maps mean nothing to the grid loss or "
           "the grid decoder, so none of the three can be switched alone."),
    Switch("whole_set_validation", {"validation": "whole_set"},
           "Metrics are averaged per validation mini-batch (batches of 8 that mix tasks); the selection "
           "score leaves Regression out.",
           "Challenge metrics per task over the whole validation set; the selection score covers every "
           "task type, Regression included.",
           "Per-batch means weight a task's images by how the batches fell, and a model may get worse "
           "at landmarks without the selection noticing.",
           "Its selection score (the mean task quality, every type) is defined on whole-set challenge "
           "metrics: a landmark task's quality is its radial error over the set, and the per-batch rule "
           "keeps only a pixel MAE per batch. The other half alone (whole-set metrics, the baseline's "
           "selection score) is possible but not offered as a switch."),
    Switch("epoch_batcher", {"sampler": "uniform"},
           "The official sampler: every task's row list shuffled once, a cursor per task, wrapped "
           "round with a re-shuffle.",
           "fmuia's batcher (`TaskBatchSampler`) with the official's uniform task probabilities: every "
           "task's rows re-shuffled in each epoch, seeded per epoch, resumable mid-epoch; never a batch "
           "of one.",
           "Isolates the batcher from the task probabilities of `temperature_sampler`."),
    Switch("temperature_sampler", {"sampler": "temperature"},
           "Each step picks a task uniformly at random.",
           "Tasks are drawn with probability proportional to n_task ** (1 / sampler_temperature).",
           "Uniform sampling repeats the smallest tasks many times per epoch and starves the largest.",
           "Its probabilities need fmuia's batcher (the official sampler is uniform by construction): "
           "`epoch_batcher` is that batcher with the official's uniform probabilities, so "
           "`+temperature_sampler` against `+epoch_batcher` is what the probabilities alone change."),
    Switch("dice_ce", {"seg_loss": "dice_ce"},
           "Segmentation loss: multiclass Dice.",
           "Segmentation loss: multiclass Dice + cross-entropy.",
           "Dice alone gives small structures almost no gradient at first; on the phantom it still "
           "predicts empty masks where Dice + CE has learned them."),
    Switch("per_task_norm_stats", {"norm_stats": "per_task"},
           "Evaluation uses BatchNorm running averages, which mix whichever tasks came last.",
           "BatchNorm statistics are re-estimated for each task before validation and kept in the model.",
           "Every training batch holds one task, so each task's head only ever saw its own task's "
           "statistics."),
    Switch("head_priors", {"head_priors": True},
           "Landmark heads start from a random initialisation.",
           "Landmark heads start at the training set's mean landmarks.",
           "Training starts at the trivial baseline instead of at random points."),
    Switch("smooth_l1", {"reg_loss": "smooth_l1"},
           "Landmark loss: MSE on normalised coordinates.",
           "Landmark loss: SmoothL1 (L1 beyond 0.05 of the image).",
           "MSE's gradients vanish near the mean landmarks, where an untrained head sits."),
    Switch("warmup_cosine", {"schedule": "warmup_cosine", "warmup_fraction": 0.05},
           "Cosine annealing stepped once per epoch down to an absolute `eta_min`; no warm-up.",
           "One schedule per optimiser step: linear warm-up over the first `warmup_fraction` of the run (or "
           "`warmup_steps`), then cosine down to `min_lr_ratio` of each group's peak.",
           "Guards the first steps while heads learn at 10x the encoder's rate; a per-step schedule has "
           "the same shape for runs of any length.",
           "One learning-rate schedule: its warm-up, per-step cosine and relative floor are the parts of "
           "one curve, not separate fixes."),
    Switch("grad_clipping", {"grad_clip": 1.0},
           "No gradient clipping.",
           "The global gradient norm is clipped at 1.",
           "A gradient spike (a rare hard batch, a head far from its target) cannot throw the shared "
           "encoder far in one step."),
    Switch("antialiased_resize", {"resize": "antialias"},
           "Images are resized with OpenCV's bilinear interpolation (`INTER_LINEAR`), without antialiasing.",
           "Images are resized with torchvision's antialiased bilinear interpolation.",
           "Shrinking a speckled image without a low-pass filter aliases the speckle into the input."),
    Switch("geometric_augmentation", {"geometric_augment": True},
           "No geometric augmentation.",
           "Label-safe warps per task type: horizontal flips and small affine warps for segmentation "
           "and detection, the affine warp only for landmarks, none for classification.",
           "Flips and small warps add label-safe variety the baseline never uses."),
    Switch("light_augmentation", {"augment": "light"},
           "Brightness/contrast shift (p 0.2) and strong Gaussian noise (p 0.1).",
           "Milder brightness/contrast jitter (p 0.5) and Gaussian noise (p 0.3, std 0.03).",
           "The baseline's noise (std 20-44 % of the intensity range, per channel) is stronger than "
           "the speckle it sits on."),
    Switch("sigmoid_landmarks", {"landmark_head": "sigmoid"},
           "Landmark head: average pool and one linear layer to 2K unbounded coordinates.",
           "Landmark head: average pool, dropout, linear layer and a sigmoid, so points stay in the "
           "image.",
           "An unbounded head can predict points outside the image, and dropout regularises the "
           "small landmark subsets.",
           "One head type (`heads.HEAD_TYPES`): its dropout and its sigmoid are two layers of the "
           "same head; an arm with one of them alone is not offered."),
    Switch("heatmap_landmarks", {"landmark_head": "heatmap"},
           "Landmark head: average pool and one linear layer to 2K unbounded coordinates, on the "
           "deepest encoder map.",
           "Landmark head on the FPN map: one heat map per landmark; loss: the point loss on its "
           "soft-argmax plus a KL term towards a Gaussian at the true point; prediction: the map's "
           "spatial median.",
           "The pooled deepest feature keeps little of where a structure lies; the FPN map keeps it "
           "(what each landmark head is worth: the `+heatmap_landmarks` and `+sigmoid_landmarks` arms "
           "of `results/06_ablation.csv`; the study that chose it: `results/history.md`).",
           "A head with its loss and its decoding: heat maps need the soft-argmax and KL loss to train "
           "and a decoder that reads a point off a map."),
)

#: Every switch by name, in the order of the docs table.
SWITCHES: dict[str, Switch] = {s.name: s for s in _SWITCHES}

#: Switches that are alternatives to one another (they set the same field to different
#: values): a config lists at most one of each group.
ALTERNATIVES: tuple[tuple[str, ...], ...] = (("sigmoid_landmarks", "heatmap_landmarks"),
                                             ("epoch_batcher", "temperature_sampler"))

#: The fmuia recipe: the official recipe with every fix switched on (of alternatives, the one
#: the measurements chose: ``heatmap_landmarks``, see its "why"; ``temperature_sampler``, whose
#: batcher ``epoch_batcher`` measures alone).
FMUIA_RECIPE: tuple[str, ...] = tuple(n for n in SWITCHES if n not in ("sigmoid_landmarks", "epoch_batcher"))
#: Names a config may give instead of a list of switches (``switches: fmuia`` in a profile,
#: ``--set switches=fmuia``): the recipe, spelled out in one place.
RECIPES: dict[str, tuple[str, ...]] = {"fmuia": FMUIA_RECIPE, "official": ()}

#: Fields that change speed or memory, not what is learned; a profile sets them freely.
SPEED_SETTINGS: tuple[str, ...] = ("amp", "amp_dtype", "channels_last", "num_workers", "device",
                                   "deterministic", "fused_adamw", "data_cache")


def unknown_switches(names: Iterable[str]) -> list[str]:
    return [n for n in names if n not in SWITCHES]


def conflicting(names: Iterable[str]) -> list[tuple[str, str, str]]:
    """``(switch, switch, field)`` for each pair among ``names`` that sets one field to two
    values (alternatives listed together)."""
    setters: dict[str, tuple[Any, str]] = {}
    out = []
    for name in names:
        for field, value in SWITCHES[name].sets.items():
            if field in setters and setters[field][0] != value:
                out.append((setters[field][1], name, field))
            setters.setdefault(field, (value, name))
    return out


def implied_values(names: Iterable[str]) -> dict[str, tuple[Any, str]]:
    """``{field: (value, switch name)}`` for the switches ``names`` (unknown names raise
    KeyError; alternatives listed together raise ValueError, see :func:`conflicting`)."""
    names = list(names)
    clash = conflicting(names)
    if clash:
        first, second, field = clash[0]
        raise ValueError(f"switches {first!r} and {second!r} are alternatives (both set {field}): list one")
    return {field: (value, name) for name in names for field, value in SWITCHES[name].sets.items()}


def switch_fields() -> set[str]:
    """Every config field some switch sets."""
    return {field for s in SWITCHES.values() for field in s.sets}


def agreeing(names: Iterable[str], **values: Any) -> list[str]:
    """The switches among ``names`` that do not contradict ``values``.

    ``agreeing(FMUIA_RECIPE, sampler="uniform")`` is every switch but ``temperature_sampler``:
    what to list when a run forces ``sampler="uniform"`` onto the fmuia recipe.
    """
    return [n for n in names
            if all(values.get(field, value) == value for field, value in SWITCHES[n].sets.items())]


def switch_table() -> str:
    """The registry as a Markdown table (switch, config values, baseline, fmuia, why, and for a
    switch that changes several things, why they are one change)."""
    rows = ["| switch | sets | the baseline | fmuia | why | one change because |", "|---|---|---|---|---|---|"]
    for s in SWITCHES.values():
        sets = ", ".join(f"`{k}: {_yaml_scalar(v)}`" for k, v in s.sets.items())
        rows.append(f"| `{s.name}` | {sets} | {s.baseline} | {s.fmuia} | {s.why} | {s.bundle or '-'} |")
    return "\n".join(rows)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)
