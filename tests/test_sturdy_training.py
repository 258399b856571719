"""Training that survives what goes wrong: damaged checkpoints, divergence, a batch of one,
resuming with other settings or elsewhere, a save killed half-way, a killed process."""
from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fmuia_lib import cli
from fmuia_lib.config import ConfigError, TrainConfig
from fmuia_lib.data.sampler import TaskBatchSampler
from fmuia_lib.challenge.predict import ModelLoadError, load_model
from fmuia_lib.state_file import StateFileError, load_state, save_state
from fmuia_lib.switches import FMUIA_RECIPE
from fmuia_lib.training import load_checkpoint, train
from fmuia_lib.checkpoint import RESUME_ONLY, CheckpointMismatch, read_checkpoint
from fmuia_lib.training.loop import Trainer, TrainingDiverged
from fmuia_lib.training.distributed import DistributedContext
from conftest import TINY_MODEL

TASKS = ["cardiac_multi", "organ_cls", "thyroid_nodule_det", "IUGC"]
ROOT = Path(__file__).resolve().parents[1]


def tiny(root: Path, out: Path, **changes) -> TrainConfig:
    """The fmuia recipe at 32 px on four tasks: a few seconds on one core."""
    values = dict(data_root=str(root), val_root=str(root), tasks=TASKS, **TINY_MODEL,
                  image_size=32, batch_size=2, epochs=None, max_steps=4, eval_every=2, num_workers=0,
                  norm_stats_batches=1, device="cpu", out_dir=str(out), seed=4, switches=list(FMUIA_RECIPE))
    values.update(changes)
    return TrainConfig.from_dict(values)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from conftest import make_root
    return make_root(tmp_path_factory.mktemp("sturdy"), tasks=TASKS, n=4)


@pytest.fixture(scope="module")
def run(root, tmp_path_factory):
    """An uninterrupted 4-step run (checkpoints at steps 2 and 4)."""
    out = tmp_path_factory.mktemp("run")
    return train(tiny(root, out), progress=False)


def flip_byte(source: Path, target: Path, at: float = 0.5) -> Path:
    data = bytearray(source.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    target.write_bytes(bytes(data))
    return target


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# -- checksums ------------------------------------------------------------------------------------
def test_a_flipped_byte_is_refused_by_every_reader(run, tmp_path):
    bad = flip_byte(run.last_checkpoint, tmp_path / "flipped.pt")
    assert torch.load(bad, weights_only=True)["step"] == 4  # torch.load alone would not notice
    with pytest.raises(StateFileError, match=r"flipped\.pt is corrupted.*checksum"):
        read_checkpoint(bad)
    with pytest.raises(ModelLoadError, match=r"flipped\.pt is corrupted"):
        load_model(bad)
    with pytest.raises(StateFileError, match="flipped.pt"):
        Trainer(run.config.with_overrides({"resume": str(bad), "out_dir": str(tmp_path / "r")}),
                DistributedContext(), torch.device("cpu"), progress=False)


@pytest.mark.parametrize("cut", [0, 1000, -200], ids=["empty", "truncated", "end cut off"])
def test_an_empty_or_truncated_file_is_a_message(run, tmp_path, cut):
    data = run.last_checkpoint.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(StateFileError, match=r"cut\.pt cannot be read") as info:
        load_state(path)
    assert ("the file is empty (0 bytes" in str(info.value)) == (cut == 0)


def test_checkpoints_load_with_weights_only_and_best_holds_no_resume_state(run):
    last = torch.load(run.last_checkpoint, weights_only=True)
    best = torch.load(run.best_checkpoint, weights_only=True)
    assert set(RESUME_ONLY) <= set(last) and not set(RESUME_ONLY) & set(best)
    assert set(best) == set(last) - set(RESUME_ONLY)
    assert run.best_checkpoint.stat().st_size < 0.5 * run.last_checkpoint.stat().st_size  # AdamW's moments
    assert any(k.startswith("task_norm_stats.") for k in best["model"])  # per-task statistics travel
    model, config, info = load_checkpoint(run.best_checkpoint)
    assert config == run.config and info["val_scores"]
    with pytest.raises(CheckpointMismatch, match="holds the model only.*last.pt"):
        train(run.config.with_overrides({"resume": str(run.best_checkpoint)}), progress=False)


def test_weights_only_export_for_sharing(run, tmp_path, capsys):
    assert cli.main(["export", "--checkpoint", str(run.best_checkpoint), "--out", str(tmp_path), "--weights-only"]) == 0
    weights = tmp_path / "weights.pt"
    state = torch.load(weights, weights_only=True)
    assert state["format"].startswith("fmuia-weights/") and "optimizer" not in state and "config" not in state
    model, size, _ = load_model(weights)
    reference, _, _ = load_checkpoint(run.best_checkpoint)
    assert size == 32 and same_weights(model, reference)
    assert weights.stat().st_size < run.best_checkpoint.stat().st_size * 1.01
    assert cli.main(["export", "--checkpoint", str(run.best_checkpoint), "--out", str(tmp_path), "--weights-only"]) == 2
    assert "exists" in capsys.readouterr().err


# -- divergence -----------------------------------------------------------------------------------
@pytest.mark.parametrize("log_every", [1, 3], ids=["read every step", "read in groups (as on a GPU)"])
def test_divergence_stops_training_before_any_checkpoint(root, tmp_path, log_every):
    trainer = Trainer(tiny(root, tmp_path / "run", lr=1e30, max_steps=6, eval_every=3), DistributedContext(),
                      torch.device("cpu"), progress=False)
    trainer.log_every = log_every
    with pytest.raises(TrainingDiverged, match=r"diverged at step [23] \(task \w+\): loss (nan|inf).*"
                                               r"no checkpoint was written.*lr=1e\+30"):
        trainer.run()
    assert not list((tmp_path / "run").rglob("*.pt"))


def test_divergence_after_a_checkpoint_keeps_it_finite(root, tmp_path):
    trainer = Trainer(tiny(root, tmp_path / "run", max_steps=6, eval_every=2), DistributedContext(),
                      torch.device("cpu"), progress=False)
    step = trainer.train_step

    def blow_up_at_step_3(batch):
        if trainer.step == 2:
            for group in trainer.optimizer.param_groups:
                group["lr"] = 1e30
        return step(batch)

    trainer.train_step = blow_up_at_step_3
    with pytest.raises(TrainingDiverged, match=r"step [34] .*the last checkpoint, .*last\.pt, is from before it"):
        trainer.run()
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_nonfinite_statistics_are_never_saved(root, tmp_path):
    """BatchNorm's running statistics are not used by a training step, so a non-finite one
    leaves the loss finite: the check before saving stops it."""
    trainer = Trainer(tiny(root, tmp_path / "run"), DistributedContext(), torch.device("cpu"), progress=False)
    name, bn = next((n, m) for n, m in trainer.model.encoder.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var.fill_(math.inf)
    bn.momentum = 0.0  # training leaves the statistic as it is
    assert trainer.nonfinite_weights() == [f"encoder.{name}.running_var"]
    with pytest.raises(TrainingDiverged, match=rf"step 2: 1 non-finite weight tensor\(s\), e\.g\. encoder\.{re.escape(name)}"):
        trainer.run()
    assert not list((tmp_path / "run").rglob("*.pt"))


# -- a batch of one -------------------------------------------------------------------------------
def test_the_sampler_never_yields_a_batch_of_one():
    sampler = TaskBatchSampler({"a": list(range(9)), "b": list(range(9, 14))}, batch_size=4, seed=0)
    batches = []
    for epoch in range(5):
        sampler.set_epoch(epoch)
        batches += list(sampler)
    assert min(len(b) for b in batches) >= 2 and max(len(b) for b in batches) == 5  # 9 = 4 + 5, 5 = 5
    assert {i for b in batches for i in b} == set(range(14))  # every row still comes


def test_a_remainder_of_one_trains_at_32_px_and_a_single_image_task_is_refused(make_root, tmp_path):
    """3 images in batches of 2 leave a remainder of one: it joins the batch (a batch of one would
    stop BatchNorm at 32 px, where the deepest feature map is 1 x 1)."""
    data = make_root(tmp_path, tasks=["organ_cls", "IUGC"], n=3)
    result = train(tiny(data, tmp_path / "run", tasks=["organ_cls", "IUGC"]), progress=False)
    assert set(result.history["batch_size"]) == {3}
    single = make_root(tmp_path, tasks=["organ_cls", "IUGC"], n=1, name="single")
    with pytest.raises(ConfigError, match=r"\['IUGC', 'organ_cls'\] have a single training image"):
        train(tiny(single, tmp_path / "run1", tasks=["organ_cls", "IUGC"]), progress=False)
    with pytest.raises(ConfigError, match="batch_size=1"):
        train(tiny(data, tmp_path / "run2", tasks=["organ_cls", "IUGC"], batch_size=1), progress=False)


# -- resuming -------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, named", [({"image_size": 64}, "image_size"), ({"seed": 5}, "seed"),
                                           ({"norm_stats": "shared", "switches": [s for s in FMUIA_RECIPE
                                             if s != "per_task_norm_stats"]}, "norm_stats"),
                                           ({"batch_size": 4}, "batch_size"), ({"max_steps": 8}, "max_steps"),
                                           ({"sampler_type_weights.Regression": 2.0}, "sampler_type_weights")])
def test_resume_refuses_settings_that_break_exactness(run, tmp_path, change, named):
    config = run.config.with_overrides({**change, "resume": str(run.last_checkpoint), "out_dir": str(tmp_path)})
    with pytest.raises(CheckpointMismatch, match=f"cannot resume with other settings.*{named} \\(checkpoint"):
        train(config, progress=False)


def test_a_checkpoint_written_before_a_field_existed_resumes_with_the_fields_default(run, tmp_path):
    state = read_checkpoint(run.last_checkpoint)
    del state["config"]["sampler_type_weights"]  # as a checkpoint of the release before it
    (tmp_path / "old").mkdir()
    save_state(state, tmp_path / "old" / "last.pt")
    config = run.config.with_overrides({"resume": str(tmp_path / "old" / "last.pt"), "out_dir": str(tmp_path / "new")})
    with pytest.warns(UserWarning, match="no best.pt beside"):  # only last.pt was copied
        assert train(config, progress=False).history["step"].max() == run.history["step"].max()
    with pytest.raises(CheckpointMismatch, match=r"sampler_type_weights \(checkpoint: \{'segmentation': 1.0"):
        train(config.with_overrides({"sampler_type_weights.Regression": 3.0}), progress=False)


def test_resume_with_loader_workers_into_a_new_folder_is_exact_and_keeps_the_best(root, run, tmp_path):
    """Workers draw the same augmentations as the training process; the interrupted run's best
    checkpoint comes along to the new folder."""
    first = train(tiny(root, tmp_path / "first", stop_at_step=2), progress=False)
    resumed = train(tiny(root, tmp_path / "second", num_workers=1, resume=str(first.last_checkpoint)),
                    progress=False)
    assert same_weights(resumed.model, run.model)
    assert resumed.history["loss"].tolist() == run.history["loss"].tolist()
    assert resumed.best_checkpoint is not None and resumed.best_checkpoint.parent == tmp_path / "second" / "checkpoints"
    assert resumed.best_score == run.best_score


def test_a_save_killed_half_way_leaves_the_last_checkpoint_and_its_temporary_is_cleaned(root, run, tmp_path,
                                                                                     monkeypatch):
    folder = tmp_path / "checkpoints"
    good = save_state({"format": 2, "x": torch.ones(3)}, folder / "last.pt")
    leftover = folder / ".last.pt.k1ll3d.tmp"  # what a SIGKILL during torch.save leaves
    leftover.write_bytes(b"half a checkpoint")

    def killed(state, fh):
        fh.write(b"partial")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(torch, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            save_state({"format": 2, "x": torch.zeros(3)}, good)
    assert torch.equal(load_state(good)["x"], torch.ones(3))
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]  # the leftover went with the next save
    stale = tmp_path / "run" / "checkpoints" / ".best.pt.x.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    Trainer(tiny(root, tmp_path / "run"), DistributedContext(), torch.device("cpu"), progress=False)
    assert not stale.exists()  # and at the start of a run


def test_resume_after_kill_9_is_exact(root, tmp_path):
    """``fmuia train`` killed with SIGKILL once its first checkpoint exists (or in the middle of a
    later save); resuming from its last.pt ends with the weights of an uninterrupted run."""
    config = tiny(root, tmp_path / "killed", max_steps=8, eval_every=2)
    config_file = config.to_yaml(tmp_path / "run.yaml")
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fmuia_lib.cli", "train", "--config", str(config_file)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = torch.load(last, weights_only=True)["step"]
    assert killed_at < 8
    resumed = train(config.with_overrides({"resume": str(last)}), progress=False)
    uninterrupted = train(config.with_overrides({"out_dir": str(tmp_path / "whole")}), progress=False)
    assert same_weights(resumed.model, uninterrupted.model)
    assert resumed.history["loss"].tolist() == uninterrupted.history["loss"].tolist()
