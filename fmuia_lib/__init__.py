"""fmuia: multi-task ultrasound image analysis, the FM_UIA 2026 baseline taught and reproduced.

The public face, as smp's is::

    from fmuia_lib import TrainConfig, load_manifest, build_model, MultiTaskLoss, train

The core, readable in one sitting:

=================== ===================================================================
``tasks``           ``load_manifest``: the 27 subtasks of ``data_manifest.csv`` as ``TaskSpec``
``model``           ``MultiTaskNet`` (encoder + FPN decoder + routing), ``build_model(config, tasks)``
``heads``           one registry entry per head type (builder, loss, reads the FPN, decoding);
                    ``reads_fpn``: the routing rule
``losses``          ``MultiTaskLoss``: the per-type losses weighted into one objective
``config``          ``TrainConfig``: the official recipe as defaults, fmuia's fixes as switches
``training``        ``train(config)``: optimiser groups, schedules, the loop, validation
``checkpoint``      ``load_checkpoint``: a trained model back, without the trainer
=================== ===================================================================

Behind it, by role: ``data`` (layout reader, datasets, transforms, samplers), ``sources``
(the phantom, real-data converters), ``challenge`` (prediction, submission, scoring,
export), ``profiles``, ``runner`` (the notebooks' run folder, the papermill suite),
``experiments`` (margins, ablation), ``notebook`` (plots, widgets, analyses), ``course``.

Names are imported on first use (PEP 562), so ``import fmuia_lib.challenge.evaluate`` (the
numpy-only scorer) does not load torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "TaskSpec": "fmuia_lib.tasks", "load_manifest": "fmuia_lib.tasks", "select_tasks": "fmuia_lib.tasks",
    "MultiTaskNet": "fmuia_lib.model", "build_model": "fmuia_lib.model",
    "reads_fpn": "fmuia_lib.heads", "build_head": "fmuia_lib.heads", "HEAD_TYPES": "fmuia_lib.heads",
    "MultiTaskLoss": "fmuia_lib.losses", "build_loss": "fmuia_lib.losses",
    "TrainConfig": "fmuia_lib.config", "ConfigError": "fmuia_lib.config",
    "train": "fmuia_lib.training", "Trainer": "fmuia_lib.training", "TrainResult": "fmuia_lib.training",
    "load_checkpoint": "fmuia_lib.checkpoint",
    "run_settings": "fmuia_lib.profiles", "load_profile": "fmuia_lib.profiles",
    "load_model": "fmuia_lib.challenge.predict", "predict_to_submission": "fmuia_lib.challenge.predict",
    "evaluate_submission": "fmuia_lib.challenge.evaluate",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fmuia_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:  # for type checkers and IDEs
    from fmuia_lib.challenge.evaluate import evaluate_submission
    from fmuia_lib.challenge.predict import load_model, predict_to_submission
    from fmuia_lib.checkpoint import load_checkpoint
    from fmuia_lib.config import ConfigError, TrainConfig
    from fmuia_lib.heads import HEAD_TYPES, build_head, reads_fpn
    from fmuia_lib.losses import MultiTaskLoss, build_loss
    from fmuia_lib.model import MultiTaskNet, build_model
    from fmuia_lib.profiles import load_profile, run_settings
    from fmuia_lib.tasks import TaskSpec, load_manifest, select_tasks
    from fmuia_lib.training import TrainResult, Trainer, train
