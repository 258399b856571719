"""Training, by role.

================================ ==========================================================
``training.loop``                ``train(config)``, :class:`Trainer`, the step stream
``training.optim``               optimiser groups and LR schedules
``training.data``                training/validation sets, the split, the batch sampler
``training.validation``          whole-set per-task validation (switch whole_set_validation)
``training.per_batch_validation`` the baseline's per-batch validation rule
``training.norm_stats``          BatchNorm statistics for evaluation
``training.baselines``           trivial baselines and head priors
``training.distributed``         data parallelism (torchrun + DDP)
================================ ==========================================================
"""
from fmuia_lib.checkpoint import load_checkpoint
from fmuia_lib.training.loop import Trainer, TrainResult, train

__all__ = ["train", "TrainResult", "Trainer", "load_checkpoint"]
