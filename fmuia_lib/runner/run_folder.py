"""What the notebooks of the series share: the run folder, the data, the checkpoint.

Every notebook names one run folder (``run_dir``) and one data folder (``data_dir``, by
default the profile's); every path derives from them:

* ``run_dir/checkpoint.pt``: the trained model, written by notebook 03, read by 04 and 05;
* ``run_dir/train/``: notebook 03's training run (``checkpoints/last.pt`` for resuming);
* ``run_dir/submission/``, ``run_dir/val_predictions/``, ``run_dir/val_baseline/``,
  ``run_dir/sweep/``: what 04, 05 and 06 write;
* ``run_dir/metrics/<notebook>.csv``: the tidy tables the suite collects.

On Colab each notebook runs on a machine of its own; the default ``run_dir`` is then on
Google Drive when it is mounted (the setup cells of 03-06 mount it), so the notebooks hand
their files to each other there, while the data (phantom or conversion) is made again on each machine. The
environment variable ``FMUIA_RUN_DIR`` replaces the default folder (the tests point the
notebooks they execute at a folder of their own with it).

Two notebooks started at once may both find the phantom missing: one makes it while the
other waits (a file lock beside the data folder).
"""
from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from fmuia_lib.env_info import in_colab
from fmuia_lib.data.layout import CSV_DIR, SPLIT_FOLDERS
from fmuia_lib.profiles import TRAINING_FOLDER, project_root, resolve

if TYPE_CHECKING:
    from fmuia_lib.config import TrainConfig
    from fmuia_lib.profiles import DataSettings, Profile, RunSettings

__all__ = ["RunSetupError", "RunPaths", "DataRoots", "in_colab", "default_run_dir", "run_paths", "metrics_path",
           "prepare_data", "make_data", "check_data_root", "check_encoder_weights", "hand_over_checkpoint",
           "require_checkpoint",
           "resume_if_interrupted", "show_settings", "project_root", "resolve"]

#: Where the series keeps its files when run_dir is not given.
LOCAL_RUN_DIR = "runs/notebooks"
COLAB_RUN_DIR = "/content/drive/MyDrive/fmuia/runs"
#: Environment variable that replaces the default run folder.
RUN_DIR_VARIABLE = "FMUIA_RUN_DIR"
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_DIR = "metrics"
TRAINING_NOTEBOOK = "03_multitask_training"


class RunSetupError(RuntimeError):
    """A short, explained problem of the series (missing data, weights or checkpoint)."""


# -- the run folder -------------------------------------------------------------------------
def default_run_dir(profile: str | Path | Profile | None = None) -> str:
    """``$FMUIA_RUN_DIR`` when set; else Google Drive on Colab when it is mounted (the
    notebooks run on separate machines; 01 and 02 leave nothing for the others and do not
    mount it), else ``runs/notebooks``; with ``profile``, its folder ``<that>/<profile name>``,
    so that runs of two profiles never read each other's checkpoint."""
    on_drive = in_colab() and Path(COLAB_RUN_DIR).parents[1].is_dir()  # MyDrive: Drive is mounted
    base = os.environ.get(RUN_DIR_VARIABLE) or (COLAB_RUN_DIR if on_drive else LOCAL_RUN_DIR)
    if profile is None:
        return base
    from fmuia_lib.profiles import load_profile

    return str(Path(base) / load_profile(profile).name)


@dataclass(frozen=True)
class RunPaths:
    """Every file the series hands from one notebook to another, under one folder."""

    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT_NAME

    @property
    def train(self) -> Path:
        """Notebook 03's training run (TrainConfig.out_dir)."""
        return self.root / TRAINING_FOLDER

    @property
    def submission(self) -> Path:
        return self.root / "submission"

    @property
    def val_predictions(self) -> Path:
        return self.root / "val_predictions"

    @property
    def val_baseline(self) -> Path:
        return self.root / "val_baseline"

    @property
    def sweep(self) -> Path:
        return self.root / "sweep"

    def metrics(self, notebook: str) -> Path:
        """Where ``notebook`` writes its tidy metrics table for the suite's summary."""
        return metrics_path(self.root, notebook)


def run_paths(run_dir: str | Path | None = None, profile: str | Path | Profile | None = None) -> RunPaths:
    """The files of the run in ``run_dir`` (None: :func:`default_run_dir` of ``profile``)."""
    return RunPaths(resolve(run_dir if run_dir is not None else default_run_dir(profile)))


def metrics_path(run_dir: str | Path, notebook: str) -> Path:
    """``run_dir/metrics/<notebook>.csv`` (its folder created)."""
    path = resolve(run_dir) / METRICS_DIR / f"{notebook}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# -- data -----------------------------------------------------------------------------------
class DataRoots(NamedTuple):
    train: Path
    val: Path | None  #: None when the run splits its validation set off the training root


def prepare_data(settings: RunSettings) -> DataRoots:
    """Make the run's data when it is missing, check it, and return the data roots.

    The phantom is generated (when missing, or made with another seed or size) and the real
    slice converted into the profile's data folder; a given ``data_dir`` is only checked.
    Then ``config.data_root`` and ``config.val_root`` (unless None) must be data roots.
    """
    data, config = settings.data, settings.config
    if data is not None:
        make_data(data)
    if config.data_root is None:
        raise RunSetupError(f"profile {settings.profile.name} names no data: give data_dir (notebooks), "
                         "--data (fmuia suite) or --set data_root=... (fmuia train)")
    train = check_data_root(config.data_root, "training data root")
    val = check_data_root(config.val_root, "validation data root") if config.val_root is not None else None
    return DataRoots(train, val)


def make_data(data: DataSettings) -> None:
    """Generate the phantom or convert the real slice into ``data.dir`` when missing."""
    if data.source == "phantom":
        _ensure_phantom(data)
    elif data.source == "real" and not (data.dir / SPLIT_FOLDERS[0] / CSV_DIR).is_dir():
        if data.real_src is None or not data.real_src.is_dir():
            raise RunSetupError(f"real-data source {data.real_src} not found: it should hold the public "
                             "slices (BUSI/, HC18/, ...); see docs/real_data.md.")
        from fmuia_lib.sources.real import convert_real

        print(f"converting the real slice {data.real_src} -> {data.dir}")
        convert_real(data.real_src, data.dir, seed=data.data_seed)


def _ensure_phantom(data: DataSettings) -> None:
    from filelock import FileLock

    data.dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(data.dir.parent / f".{data.dir.name}.lock"):  # one process makes it, the others wait
        _make_phantom_if_missing(data)


def _make_phantom_if_missing(data: DataSettings) -> None:
    from fmuia_lib.sources.phantom import generate_phantom
    from fmuia_lib.sources.phantom.generate import VERSION
    from fmuia_lib.tasks import load_manifest

    defaults = inspect.signature(generate_phantom).parameters
    n_train = data.phantom_train if data.phantom_train is not None else defaults["n_train"].default
    n_val = data.phantom_val if data.phantom_val is not None else defaults["n_val"].default
    record = data.dir / "phantom.json"
    if record.is_file():
        made = json.loads(record.read_text(encoding="utf-8"))
        counts = made.get("counts", {})
        same_version = made.get("version") == VERSION
        if (same_version and made.get("seed") == data.data_seed and made.get("tasks") == list(load_manifest())
                and set(counts.get("train", {}).values()) == {n_train}
                and set(counts.get("val", {}).values()) == {n_val}):
            return
        made_by = "other settings" if same_version else "another generator version"
        print(f"{data.dir} holds a phantom made with {made_by}; regenerating it")
    print(f"generating the phantom (seed {data.data_seed}, {n_train} train + {n_val} val images "
          f"per subtask) in {data.dir}")
    generate_phantom(data.dir, seed=data.data_seed, n_train=n_train, n_val=n_val, overwrite=True)


def check_data_root(root: str | Path, what: str = "data root") -> Path:
    """Return ``root`` if it holds ``csv_files/*.csv``; else raise an explained RunSetupError."""
    root = resolve(root)
    if not root.exists():
        raise RunSetupError(f"{what} {root} does not exist. Pass --data (fmuia suite) or data_dir "
                         "(notebooks) pointing at a folder with train/ and val/ data roots, or "
                         "use a profile whose data is the phantom (e.g. cpu-smoke).")
    if not any((root / CSV_DIR).glob("*.csv")):
        raise RunSetupError(f"{what} {root} has no csv_files/*.csv, so it is not in the challenge "
                         "layout (see docs/architecture.md); `fmuia data check ROOT` explains more.")
    return root


def check_encoder_weights(encoder: str, weights: str | None) -> None:
    """Raise an explained RunSetupError when ``weights`` for ``encoder`` cannot be loaded.

    ``None`` (random initialisation) always passes. Otherwise the encoder is built once
    with those weights (from a local file, the local cache or the internet), so that a
    missing file or a machine without internet gives one clear sentence up front instead
    of a deep traceback in the middle of training.
    """
    if weights is None:
        return
    from fmuia_lib.model import PretrainedWeightsUnavailable, build_encoder

    try:
        build_encoder(encoder, str(resolve(weights)) if weights not in ("imagenet", "imagenet-lite0-package") else weights)
    except (PretrainedWeightsUnavailable, FileNotFoundError, ValueError) as exc:
        raise RunSetupError(f"encoder weights {weights!r} for {encoder!r} cannot be loaded: "
                         f"{str(exc).splitlines()[0]}") from None


# -- the checkpoint ---------------------------------------------------------------------------
#: Beside the checkpoint: the profile and data it was trained under (:func:`hand_over_checkpoint`).
CHECKPOINT_RECORD = "checkpoint.json"


def _trained_under(settings: RunSettings) -> dict[str, Any]:
    config = settings.config
    return {"profile": settings.profile.name,
            "data_root": None if config.data_root is None else str(resolve(config.data_root)),
            "val_root": None if config.val_root is None else str(resolve(config.val_root))}


def hand_over_checkpoint(best: str | Path, paths: RunPaths, settings: RunSettings) -> Path:
    """Copy the training run's ``best`` checkpoint to ``paths.checkpoint`` for notebooks 04
    and 05, with a record of the profile and data roots it was trained under
    (``checkpoint.json``), which :func:`require_checkpoint` compares with theirs."""
    import shutil

    paths.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, paths.checkpoint)
    record = paths.root / CHECKPOINT_RECORD
    record.write_text(json.dumps(_trained_under(settings), indent=1) + "\n", encoding="utf-8")
    return paths.checkpoint


def require_checkpoint(paths: RunPaths, settings: RunSettings | str) -> Path:
    """``paths.checkpoint`` when it was trained under ``settings``' profile and data roots;
    a RunSetupError when it is missing (naming the notebook and command that make it) or was
    trained under another profile or data (naming both), so that a notebook never scores a
    model of another run on its data. Given a profile name only, it checks presence."""
    profile = settings if isinstance(settings, str) else settings.profile.name
    if paths.checkpoint.is_file():
        if isinstance(settings, str):
            return paths.checkpoint
        record = paths.root / CHECKPOINT_RECORD
        remake = (f"run {TRAINING_NOTEBOOK}.ipynb with profile {profile} and this data first, "
                  f"or give run_dir the folder of a run of profile {profile}")
        try:
            trained = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise RunSetupError(f"{paths.checkpoint} has no readable record of the profile and data it was trained "
                             f"under ({record}, which notebook {TRAINING_NOTEBOOK} writes beside it): "
                             f"{remake}") from None
        here = _trained_under(settings)
        differs = [f"{key} {trained.get(key)!r} (here: {here[key]!r})" for key in here if trained.get(key) != here[key]]
        if differs:
            raise RunSetupError(f"{paths.checkpoint} was trained under another run than this notebook's: "
                             f"{'; '.join(differs)}. Its scores would not be this profile's: {remake}.")
        return paths.checkpoint
    raise RunSetupError(
        f"no checkpoint at {paths.checkpoint}: notebook {TRAINING_NOTEBOOK} makes it. Run "
        f"{TRAINING_NOTEBOOK}.ipynb first with the same run_dir ({paths.root}), e.g. `papermill "
        f"{TRAINING_NOTEBOOK}.ipynb out.ipynb -p profile {profile} -p run_dir {paths.root}`"
        + (" (on Colab: run 03 in Colab, with the same Google Drive, first)." if in_colab() else
           f"; `fmuia suite --profile {profile}` runs the whole series, 03 first."))


def resume_if_interrupted(config: TrainConfig) -> TrainConfig:
    """``config`` set to resume from ``out_dir/checkpoints/last.pt`` when a run with the same
    config is there: one that stopped before its last step (a lost connection,
    ``stop_at_step``) continues; a finished one is used as it is (resuming it trains no
    step; the seeded run would repeat itself exactly).

    Says what it found: nothing, an interrupted run (resumed), a finished run (used) or a
    run with another config (trained again from step 0, overwriting it).
    """
    from fmuia_lib import checkpoint as ckpt

    last = Path(config.out_dir) / ckpt.CHECKPOINT_DIR / ckpt.LAST_CHECKPOINT
    if config.resume is not None or not last.is_file():
        return config
    state = ckpt.read_checkpoint(last)
    step = int(state["step"])
    changed = ckpt.resume_differences(state, config)  # the rule `fmuia train --resume` applies
    if changed:
        print(f"{last} is from a run with another config (differs in {'; '.join(changed)}): "
              "training from step 0 and replacing it")
        return config
    total = state.get("total_steps", config.max_steps)
    if total is not None and step >= total:
        print(f"{last} is a finished run with this config ({step} steps): using it "
              f"(delete {Path(config.out_dir)} to train it again)")
    else:
        print(f"resuming from {last}: step {step} of {total} (the run with this config stopped early)")
    return config.with_overrides({"resume": str(last)})


def show_settings(settings: RunSettings, config_table: bool = True, **notebook_values: Any) -> None:
    """Print the run's profile, data and folders, this notebook's own settings and (with
    ``config_table``) the TrainConfig values that differ from the library defaults, with
    where each came from."""
    from IPython.display import display

    data = settings.data
    print(f"profile   {settings.profile.name}: {settings.profile.description}")
    if data is not None:
        print(f"data      {data.dir} ({data.source})")
    if settings.run_dir is not None:
        print(f"run_dir   {settings.run_dir}")
    width = max([9, *map(len, notebook_values)])
    for name, value in notebook_values.items():
        print(f"{name:<{width}} {value!r}")
    if config_table:
        print("\nTrainConfig values that differ from the library defaults:")
        display(settings.table())
