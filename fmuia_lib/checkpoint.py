"""Checkpoints: what a run needs to continue exactly, written atomically, read safely.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(weights_only=True)`` (no pickled code is executed). It is written and
read by ``fmuia_lib.state_file``: atomically (a killed save leaves the previous file and,
until the next save, a ``.tmp`` file) and with every record's CRC-32 checksum verified
on load, so a flipped byte, a truncated or an empty file is refused with a message
naming it. ``last.pt`` holds everything resuming reads:

* ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``loss`` state dicts;
* ``step`` (optimiser steps done), ``total_steps``, ``best_score`` and ``sampler`` (the batch
  sampler's epoch and position for the next step);
* ``rng``: the Python, NumPy and torch (CPU and CUDA) generator states;
* ``config`` (``TrainConfig.to_dict()``), ``task_ids``, ``manifest_hash`` and ``encoder``,
  so a checkpoint is refused when it does not fit the tasks, encoder or settings asked for
  (:func:`check_compatible`, :func:`check_resumable`);
* ``history`` and ``val_history`` (lists of row dicts), so a resumed run returns the whole
  history even when the checkpoint was moved away from its run's CSV files (the step
  history is a few hundred bytes per hundred steps, against tens of MB of weights);
* ``versions``: Python, the libraries and torch's CUDA / cuDNN the run used
  (:func:`library_versions`), which ``fmuia export`` pins in the Docker image.

``best.pt`` is for inference and analysis, never resumed: :func:`model_state` leaves out
:data:`RESUME_ONLY` (the optimiser's moments alone are twice the weights). The model's
per-task BatchNorm statistics are buffers of the model and travel in both.

:func:`load_checkpoint` rebuilds the model from the stored config (encoder, head types,
per-task statistics) and loads its weights. Format 2 stores the config with its
``switches`` and head types; a format-1 checkpoint (written before the head types were
configurable) is refused with an explanation.

The batch stream is a pure function of ``(seed, step)`` (see ``training.loop.StepBatches``)
and every item's augmentation of ``(seed, step, slot)`` (``training.data.SeededItems``),
so a resumed run sees the same batches, augmentations and dropout masks as an
uninterrupted one, whatever the loader workers.
"""
from __future__ import annotations

import dataclasses
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmuia_lib.config import TrainConfig
from fmuia_lib.env_info import PACKAGES, package_versions
from fmuia_lib.model import MultiTaskNet, build_model
from fmuia_lib.state_file import load_state
from fmuia_lib.switches import SPEED_SETTINGS
from fmuia_lib.tasks import manifest_hash, select_tasks

#: Distributions whose versions a checkpoint records: those that change results, and
#: the rest of what inference imports.
VERSIONED_PACKAGES = (*PACKAGES, "pillow", "tqdm", "pyyaml", "huggingface-hub", "safetensors")

FORMAT_VERSION = 2


#: A run's checkpoints: ``out_dir/CHECKPOINT_DIR/{LAST_CHECKPOINT, BEST_CHECKPOINT}``.
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


class CheckpointMismatch(ValueError):
    """The checkpoint was made for other tasks, task definitions, encoder or settings."""


#: What only resuming reads: ``last.pt`` holds it, ``best.pt`` (for inference and analysis) does not.
RESUME_ONLY = ("optimizer", "scheduler", "scaler", "loss", "rng", "sampler", "history")


def model_state(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without :data:`RESUME_ONLY`: the weights, config, scores and validation
    history that :func:`load_checkpoint` reads (what ``best.pt`` holds)."""
    return {k: v for k, v in state.items() if k not in RESUME_ONLY}


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True`` after verifying its checksums; a missing,
    empty, truncated or corrupted file is a :class:`~fmuia_lib.state_file.StateFileError`,
    a foreign or outdated one a :class:`CheckpointMismatch`, each naming the file."""
    state = load_state(path, map_location=map_location, what="checkpoint")
    if isinstance(state, dict) and state.get("format") == 1:
        raise CheckpointMismatch(f"{path}: an fmuia checkpoint of format 1, written before head types and "
                                 f"switches were stored; this version reads format {FORMAT_VERSION}: retrain")
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointMismatch(f"{path}: not an fmuia checkpoint (format {FORMAT_VERSION})")
    return state


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[MultiTaskNet, TrainConfig, dict[str, Any]]:
    """``(model in eval mode, its TrainConfig, info)`` from a checkpoint.

    The model is rebuilt from the stored config (encoder, detection and landmark head
    types, per-task BatchNorm statistics), without downloading encoder weights. ``info``
    holds ``step``, ``best_score``, ``task_ids``, ``encoder``, ``manifest_hash`` and the
    last validation rows. Refuses a checkpoint whose task definitions no longer match
    the manifest.
    """
    state = read_checkpoint(path, map_location=map_location)
    config = TrainConfig.from_dict(state["config"])
    task_ids = list(state["task_ids"])
    tasks = select_tasks(task_ids, config.manifest)
    # Only the manifest hash can differ here: the tasks and encoder compared are the checkpoint's own.
    check_compatible(state, path, task_ids, state["encoder"], config.manifest)
    model = build_model(dataclasses.replace(config, encoder=state["encoder"], encoder_weights=None), tasks)
    model.load_state_dict(state["model"])
    model.place(map_location, config.channels_last).eval()  # the memory format it was validated in
    last_step = max((r["step"] for r in state["val_history"]), default=None)
    info = {"step": int(state["step"]), "best_score": float(state["best_score"]), "task_ids": task_ids,
            "encoder": state["encoder"], "manifest_hash": state["manifest_hash"],
            "val_scores": [r for r in state["val_history"] if r["step"] == last_step]}
    return model, config, info


def check_compatible(state: dict[str, Any], path: str | Path, task_ids: list[str],
                     encoder: str, manifest: str | None = None) -> None:
    """Refuse a checkpoint whose tasks, task definitions or encoder differ from the run's."""
    problems = []
    if list(state["task_ids"]) != list(task_ids):
        only_ckpt = sorted(set(state["task_ids"]) - set(task_ids))
        only_run = sorted(set(task_ids) - set(state["task_ids"]))
        problems.append(f"tasks differ (only in checkpoint: {only_ckpt or '-'}; "
                        f"only in this run: {only_run or '-'})")
    elif state["manifest_hash"] != manifest_hash(task_ids, manifest):
        problems.append("the manifest defines these tasks differently (classes or types changed) "
                        f"than when the checkpoint was written (hash {state['manifest_hash']})")
    if state["encoder"] != encoder:
        problems.append(f"encoder differs (checkpoint: {state['encoder']!r}, this run: {encoder!r})")
    if problems:
        raise CheckpointMismatch(f"{path}: checkpoint does not match: " + "; ".join(problems))


#: Settings a resumed run may change: how fast it runs, where it reads and writes, when it
#: stops. Every other field changes the batch stream, the model or the schedule, so a run
#: resumed with another value would not be the run the checkpoint started.
RESUME_MAY_CHANGE = (*SPEED_SETTINGS, "out_dir", "resume", "stop_at_step", "data_root", "val_root", "manifest")


def resume_differences(state: dict[str, Any], config: TrainConfig) -> list[str]:
    """The settings of ``config`` that differ from the checkpoint ``state``'s and may not change
    on resume (every field but :data:`RESUME_MAY_CHANGE`), as ``"key (checkpoint: a, now: b)"``,
    sorted. ``fmuia train --resume`` refuses a checkpoint with any; the notebooks' run folder
    resumes an interrupted run when there are none (``runner.run_folder.resume_if_interrupted``)."""
    # a field added after the checkpoint was written holds its default there (defaults keep
    # what earlier versions did), so such a checkpoint resumes under its own settings
    before, now = {**TrainConfig().to_dict(), **state["config"]}, config.to_dict()
    return sorted(f"{key} (checkpoint: {before.get(key)!r}, now: {now.get(key)!r})"
                  for key in now.keys() | before.keys()
                  if key not in RESUME_MAY_CHANGE and before.get(key) != now.get(key))


def check_resumable(state: dict[str, Any], path: str | Path, config: TrainConfig) -> None:
    """Refuse to resume from ``state`` with settings that break exactness (see
    :data:`RESUME_MAY_CHANGE`), or from a file that holds no optimiser state (a ``best.pt``)."""
    missing = [key for key in RESUME_ONLY if key not in state]
    if missing:
        raise CheckpointMismatch(f"{path}: holds the model only ({', '.join(missing)} left out, as in best.pt): "
                                 "resume from the run's last.pt")
    changed = resume_differences(state, config)
    if changed:
        raise CheckpointMismatch(f"{path}: cannot resume with other settings than the checkpoint's, which would "
                                 f"change the batches, the model or the schedule: {'; '.join(changed)}. "
                                 "Resume with the checkpoint's values, or train from step 0 without resume")


def rng_state() -> dict[str, Any]:
    """Every generator state that training consumes, as weights_only-safe types."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def library_versions() -> dict[str, Any]:
    """The software a checkpoint is trained with: ``python`` (``major.minor.micro``),
    ``packages`` (distribution -> version, installed ones of :data:`VERSIONED_PACKAGES`),
    ``torch_cuda`` and ``cudnn`` (None on a CPU-only build). Plain strings and ints, so
    the checkpoint still loads with ``weights_only=True``."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(),
            "packages": {name: version for name, version in package_versions(VERSIONED_PACKAGES).items()
                         if version != "not installed"},
            "torch_cuda": torch.version.cuda, "cudnn": None if cudnn is None else int(cudnn)}
