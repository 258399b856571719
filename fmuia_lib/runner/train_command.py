"""``fmuia train``: a config file (or the official defaults), ``--set`` overrides, ``--resume``."""
from __future__ import annotations

import argparse

from fmuia_lib.config import TrainConfig, check_runnable
from fmuia_lib.training.loop import train


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """``--config`` profile (or the defaults), then every ``--set key=value``, then ``--resume``:
    :func:`fmuia_lib.profiles.train_config`, the settings every way of starting a run shares."""
    from fmuia_lib.profiles import train_config

    return train_config(args.config, args.overrides or [], getattr(args, "resume", None))


def train_main(args: argparse.Namespace) -> int:
    """``fmuia train --config FILE --set key=value ... [--resume CKPT]``.

    Every value is checked before anything is built (:meth:`TrainConfig.validate`, then
    :func:`~fmuia_lib.config.check_runnable`: device, encoder, weights file, ``out_dir``
    beside the data roots); bad input raises an exception that ``fmuia_lib.cli.main``
    reports as one message with exit status 2.
    """
    config = config_from_args(args)
    check_runnable(config)
    result = train(config, progress=True)  # a bar in a terminal, whole lines in a log (fmuia_lib.progress)
    print(f"trained {len(result.history)} steps; best selection score {result.best_score:.4f}")
    print(f"best checkpoint: {result.best_checkpoint}\nlast checkpoint: {result.last_checkpoint}")
    return 0
