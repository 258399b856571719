"""Training: config, optimiser groups, schedule, validation, checkpoints and exact resume."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from fmuia_lib import cli
from fmuia_lib.config import ConfigError, TrainConfig
from fmuia_lib.losses import build_loss
from fmuia_lib.model import MultiTaskNet, build_model
from fmuia_lib.switches import FMUIA_RECIPE
from fmuia_lib.tasks import TASK_TYPES, select_tasks
from fmuia_lib.training import load_checkpoint, train
from fmuia_lib.checkpoint import CheckpointMismatch
from fmuia_lib.training.data import build_datasets
from fmuia_lib.training.optim import build_optimizer, build_schedule, check_param_groups, lr_factor, param_groups
from fmuia_lib.training.validation import validate_whole_set
from conftest import TINY_MODEL

TASKS = ["cardiac_multi", "organ_cls", "thyroid_nodule_det", "IUGC"]


def tiny_config(data_root: Path, out_dir: Path, **changes) -> TrainConfig:
    """A run of the fmuia recipe (every switch) that takes a few seconds on one CPU core."""
    values = dict(data_root=str(data_root), tasks=TASKS, **TINY_MODEL,
                  image_size=64, batch_size=2, epochs=None, max_steps=6, eval_every=3, num_workers=0,
                  device="cpu", out_dir=str(out_dir), seed=3, split="stratified", switches=list(FMUIA_RECIPE))
    values.update(changes)
    return TrainConfig.from_dict(values)


# -- config ---------------------------------------------------------------------------------

def test_config_yaml_round_trip_and_overrides(tmp_path):
    config = TrainConfig(tasks=["cervix"], grad_clip=None).with_overrides(
        ["lr=3e-4", "epochs=null", "max_steps=50", "loss_weights.detection=2", "encoder_weights=null",
         "sampler=uniform"])
    assert config.lr == 3e-4 and config.max_steps == 50 and config.encoder_weights is None
    assert config.loss_weights == {"segmentation": 1.0, "classification": 1.0, "detection": 2.0, "Regression": 1.0}
    assert TrainConfig.from_yaml(config.to_yaml(tmp_path / "c.yaml")) == config
    assert set(yaml.safe_load((tmp_path / "c.yaml").read_text())) == set(config.to_dict())


@pytest.mark.parametrize("change, message", [
    ({"learning_rate": 1.0}, "unknown TrainConfig field 'learning_rate'"),
    ({"sampler": "random"}, "sampler='random'"),
    ({"image_size": 100}, "multiple of 32"),
    ({"warmup_steps": 10, "epochs": None, "max_steps": 10, "schedule": "warmup_cosine"}, "warmup_steps"),
    ({"warmup_steps": 10}, "only the 'warmup_cosine' schedule"),
    ({"max_steps": 10, "epochs": 5}, "set exactly one"),  # both given at one level
    ({"fpn_lr_mult": 2.0}, "the FPN decoder is frozen"),
    ({"epochs": None}, "set exactly one"),
    ({"det_head": "yolo"}, "det_head='yolo'"),
    ({"switches": ["dice_ce", "focal"]}, "unknown \\['focal'\\]"),
    ({"switches": ["dice_ce"], "seg_loss": "dice"}, "seg_loss='dice' contradicts switch 'dice_ce'"),
    ({"loss_weights": {"segmentaton": 1}}, "segmentaton"),
    ({"stop_at_step": 5, "eval_every": 3, "epochs": None, "max_steps": 9}, "multiple of eval_every"),
    ({"amp": "yes"}, "expected true or false"),
    ({"norm_stats": "precise"}, "norm_stats='precise'"),
    ({"norm_stats_batches": 0}, "norm_stats_batches=0"),
])
def test_config_rejects_bad_values(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(change)


def test_a_run_length_given_alone_clears_the_other_one():
    """max_steps alone means steps: the defaults' epochs go (and the other way round)."""
    config = TrainConfig.from_dict({"max_steps": 10})
    assert config.max_steps == 10 and config.epochs is None
    assert TrainConfig.from_dict({"epochs": 3}).max_steps is None


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 1e-4\nbatch_sise: 4\n")
    with pytest.raises(ConfigError, match="bad.yaml.*did you mean batch_size"):
        TrainConfig.from_yaml(bad)


# -- optimiser ------------------------------------------------------------------------------

def _model_and_loss(config: TrainConfig):
    return build_model(config, select_tasks()), build_loss(config)


@pytest.mark.parametrize("options", [{"freeze_fpn": False}, {"freeze_fpn": True},
                                     {"freeze_fpn": False, "uncertainty_weighting": True, "fpn_lr_mult": 3.0}])
def test_every_parameter_in_exactly_one_group_with_its_lr(options):
    config = TrainConfig(encoder="resnet18", encoder_weights=None, lr=2e-4, head_lr_mult=10, **options)
    model, criterion = _model_and_loss(config)
    groups = param_groups(model, criterion, config)
    owner = {}
    for group in groups:
        for p in group["params"]:
            assert id(p) not in owner, f"in two groups: {owner.get(id(p))}, {group['name']}"
            owner[id(p)] = group
    trainable = [p for m in (model, criterion) for p in m.parameters() if p.requires_grad]
    assert len(owner) == len(trainable) and all(id(p) in owner for p in trainable)
    expected = {"encoder": 2e-4, "fpn_decoder": 2e-4 * config.effective_fpn_lr_mult, "loss_weights": 2e-3}
    for group in groups:
        lr = 2e-3 if group["name"].startswith("head:") else expected[group["name"]]
        assert group["lr"] == pytest.approx(lr), group["name"]
    names = {g["name"] for g in groups}
    assert {f"head:{t.task_id}" for t in select_tasks()} <= names
    assert ("fpn_decoder" in names) != config.freeze_fpn
    if config.freeze_fpn:  # the baseline: the FPN decoder keeps its initial weights
        assert not any(p.requires_grad for p in model.fpn_decoder.parameters())
    assert ("loss_weights" in names) == config.uncertainty_weighting


def test_a_parameter_left_out_is_an_error():
    config = TrainConfig(encoder="resnet18", encoder_weights=None, freeze_fpn=False)
    model, criterion = _model_and_loss(config)
    groups = [g for g in param_groups(model, criterion, config) if g["name"] != "fpn_decoder"]
    with pytest.raises(RuntimeError, match="in no optimiser group.*fpn_decoder"):
        check_param_groups(groups, {"model": model})


def test_schedule_warmup_then_cosine_per_step():
    config = TrainConfig.from_dict(dict(encoder="resnet18", encoder_weights=None, lr=1.0, head_lr_mult=10,
                                        epochs=None, max_steps=20, warmup_steps=4, min_lr_ratio=0.1,
                                        switches=["warmup_cosine", "grad_clipping"]))
    model, criterion = _model_and_loss(config)
    optimizer = build_optimizer(model, criterion, config)
    schedule = build_schedule(optimizer, config, steps_per_epoch=7)
    lrs = []
    for step in range(1, config.max_steps + 1):
        lrs.append([g["lr"] for g in optimizer.param_groups][:2])
        optimizer.step()
        schedule.after_step(step)
    assert lrs[0] == pytest.approx([0.25, 2.5]) and lrs[3] == pytest.approx([1.0, 10.0])
    assert all(a[0] >= b[0] for a, b in zip(lrs[3:], lrs[4:]))  # non-increasing after warm-up
    assert lrs[-1][0] == pytest.approx(lr_factor(19, 4, 20, 0.1)) and lrs[-1][0] > 0.1
    assert lr_factor(20, 4, 20, 0.1) == pytest.approx(0.1)
    assert lr_factor(12, 4, 20, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))


# -- validation -----------------------------------------------------------------------------

def test_validation_is_over_the_whole_set_not_per_batch(make_root, tmp_path):
    root = make_root(tmp_path, tasks=TASKS, n=5)
    config = tiny_config(root, tmp_path / "run", val_root=str(root))
    _, val_set, tasks = build_datasets(config)
    torch.manual_seed(0)
    model = build_model(config, tasks)
    one = validate_whole_set(model, val_set, "cpu", batch_size=1)
    big = validate_whole_set(model, val_set, "cpu", batch_size=4)
    assert set(one) == set(TASKS)
    for task_id in TASKS:
        assert one[task_id]["num_samples"] == 5
        assert 0.0 <= one[task_id]["score"] <= 1.0
        for key, value in one[task_id].items():
            if isinstance(value, float):
                assert big[task_id][key] == pytest.approx(value, rel=1e-4, abs=1e-4), (task_id, key)


# -- training, checkpoints, resume ------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One uninterrupted 6-step run (checkpoints at steps 3 and 6)."""
    from conftest import make_root
    base = tmp_path_factory.mktemp("train")
    root = make_root(base, tasks=TASKS, n=6)
    config = tiny_config(root, base / "full")
    return root, base, config, train(config, progress=False)


def test_train_writes_history_and_checkpoints_only_under_out_dir(trained):
    root, base, config, result = trained
    out = Path(config.out_dir)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        ".train.lock", "checkpoints/best.pt", "checkpoints/last.pt", "config.yaml", "history.csv",
        "val_history.csv"]  # .train.lock: the file whose OS lock the run held (loop.hold_out_dir)
    assert {p.name for p in base.iterdir()} == {"data", "full"}
    history = result.history
    assert list(history["step"]) == list(range(1, 7))
    assert set(history["task_id"]) <= set(TASKS)
    assert {"loss", "lr_encoder", "lr_fpn_decoder", "lr_heads", "images_per_s"} <= set(history.columns)
    assert history["loss"].notna().all() and (history["images_per_s"] > 0).all()
    val = result.val_history
    assert sorted(set(val["step"])) == [3, 6] and set(val["task_id"]) == set(TASKS)
    assert set(val["task_type"]) == set(TASK_TYPES)  # every task type is validated and scored
    scores = val.groupby("step")["score"].mean()
    assert val.groupby("step")["selection_score"].first().to_numpy() == pytest.approx(scores.to_numpy())
    assert result.best_score == pytest.approx(scores.max())
    assert TrainConfig.from_yaml(out / "config.yaml") == config


def test_checkpoint_loads_with_weights_only(trained):
    _, _, config, result = trained
    state = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    assert state["task_ids"] == TASKS and state["encoder"] == TINY_MODEL["encoder"] and state["step"] == 6
    model, loaded_config, info = load_checkpoint(result.last_checkpoint)
    assert loaded_config == config and info["step"] == 6 and not model.training
    for name, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value.cpu()), name
    # per-task BatchNorm statistics (the default norm_stats) were estimated and travel with the weights
    assert config.norm_stats == "per_task"
    assert all(bool(model.task_norm_stats.per_task[t].ready) for t in TASKS)
    images = torch.randn(2, 3, 64, 64)
    result.model.eval()
    torch.testing.assert_close(model.predict(images, "IUGC")["points"], result.model.predict(images, "IUGC")["points"])
    running = MultiTaskNet(select_tasks(TASKS), encoder_name=config.encoder, encoder_weights=None,
                           fpn_pyramid_channels=config.fpn_pyramid_channels,
                           fpn_segmentation_channels=config.fpn_segmentation_channels,
                           det_head=config.det_head, landmark_head=config.landmark_head)
    running.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("task_norm_stats.")})
    assert not torch.allclose(running.eval().predict(images, "IUGC")["points"], model.predict(images, "IUGC")["points"])


def test_resume_continues_exactly(trained):
    root, base, config, full = trained
    part_dir = base / "part"
    first = train(tiny_config(root, part_dir, stop_at_step=3), progress=False)
    assert len(first.history) == 3
    resumed = train(tiny_config(root, part_dir, resume=str(first.last_checkpoint)), progress=False)
    assert list(resumed.history["step"]) == list(range(1, 7))
    pd.testing.assert_series_equal(resumed.history["task_id"], full.history["task_id"])
    pd.testing.assert_series_equal(resumed.history["loss"], full.history["loss"])
    for name, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_mismatched_checkpoints_are_refused(trained):
    root, base, _, full = trained
    with pytest.raises(CheckpointMismatch, match="tasks differ.*only in checkpoint: \\['IUGC'\\]"):
        train(tiny_config(root, base / "m1", tasks=TASKS[:3], resume=str(full.last_checkpoint)), progress=False)
    with pytest.raises(CheckpointMismatch, match="encoder differs.*'tu-lcnet_050'.*'resnet34'"):
        train(tiny_config(root, base / "m2", encoder="resnet34", resume=str(full.last_checkpoint)), progress=False)
    state = torch.load(full.last_checkpoint, weights_only=True)
    state["manifest_hash"] = "0" * 16
    torch.save(state, base / "edited.pt")
    with pytest.raises(CheckpointMismatch, match="defines these tasks differently"):
        load_checkpoint(base / "edited.pt")
    torch.save({"weights": torch.zeros(1)}, base / "foreign.pt")
    with pytest.raises(CheckpointMismatch, match="not an fmuia checkpoint"):
        load_checkpoint(base / "foreign.pt")


def test_cli_train(trained, capsys):
    root, base, config, _ = trained
    path = tiny_config(root, base / "cli").to_yaml(base / "cli.yaml")
    assert cli.main(["train", "--config", str(path), "--set", "max_steps=2", "--set", "eval_every=2"]) == 0
    assert "best selection score" in capsys.readouterr().out
    assert len(pd.read_csv(base / "cli" / "history.csv")) == 2
    assert cli.main(["train", "--config", str(path), "--set", "batch_sise=1"]) == 2
    assert "did you mean" in capsys.readouterr().err


# -- end to end on the phantom ------------------------------------------------------------------

def test_the_cpu_smoke_run_beats_trivial_baselines(series_run):
    """Notebook 03's cpu-smoke run (trained once per test session: ``conftest.series_run``) beats,
    on its validation rows, the trivial baseline (empty mask, class frequencies, mean box, mean
    points) scored by the one scorer, for one task of each type."""
    from fmuia_lib.notebook import error_analysis
    from fmuia_lib.challenge import metrics
    from fmuia_lib.challenge.evaluate import GroundTruth, evaluate_records

    tasks = ["breast_lesion", "breast_2cls", "thyroid_nodule_det", "FUGC"]
    config = TrainConfig.from_yaml(series_run / "train" / "config.yaml").with_overrides({"tasks": tasks})
    val = pd.read_csv(series_run / "train" / "val_history.csv")
    model = val[val["step"] == val["step"].max()].set_index("task_id")["score"]
    train_set, val_set, _ = build_datasets(config)
    specs = {t.task_id: t for t in val_set.tasks}
    records = error_analysis.trivial_baseline_records(train_set.frame, val_set.frame, specs)
    trivial = evaluate_records(GroundTruth(val_set.frame, specs), records).task_results()
    for task_id in tasks:
        baseline = metrics.task_quality(specs[task_id], trivial[task_id])
        assert model[task_id] > baseline, (task_id, model[task_id], baseline)
