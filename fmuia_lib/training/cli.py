"""``fmuia train``: a config file (or the official defaults), ``--set`` overrides, ``--resume``."""
from __future__ import annotations

import argparse
import sys

from fmuia_lib.config import ConfigError, TrainConfig
from fmuia_lib.data.layout import LayoutError
from fmuia_lib.model import PretrainedWeightsUnavailable
from fmuia_lib.state_file import StateFileError
from fmuia_lib.training import checkpoint as ckpt
from fmuia_lib.training.loop import TrainingDiverged, train


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """``--config`` profile (or the defaults), then every ``--set key=value``, then ``--resume``:
    :func:`fmuia_lib.profiles.train_config`, the settings every way of starting a run shares."""
    from fmuia_lib.profiles import train_config

    return train_config(args.config, args.overrides or [], getattr(args, "resume", None))


def train_main(args: argparse.Namespace) -> int:
    """``fmuia train --config FILE --set key=value ... [--resume CKPT]``."""
    try:
        config = config_from_args(args)
        result = train(config, progress=sys.stderr.isatty())
    except (ConfigError, LayoutError, ckpt.CheckpointMismatch, PretrainedWeightsUnavailable,
            FileNotFoundError, StateFileError, TrainingDiverged) as exc:
        print(f"fmuia train: error: {exc}", file=sys.stderr)
        return 2
    print(f"trained {len(result.history)} steps; best selection score {result.best_score:.4f}")
    print(f"best checkpoint: {result.best_checkpoint}\nlast checkpoint: {result.last_checkpoint}")
    return 0
