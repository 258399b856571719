"""The official baseline's recipe, which TrainConfig's defaults are: model layout, FPN
initialisation, losses, schedule, frozen FPN, checkpoints.

Numbers marked "measured" were measured once from the official baseline's own
``model_factory.py`` (outside this repository) with smp 0.6 and EfficientNet-B4 weights None.
"""
from __future__ import annotations

import hashlib
import json
import math

import pytest
import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder

from fmuia_lib.config import TrainConfig
from fmuia_lib.heads import GridDetectionHead, LinearLandmarkHead
from fmuia_lib.losses import GridDetectionLoss, MultiTaskLoss, build_loss
from fmuia_lib.model import MultiTaskNet, build_model
from fmuia_lib.switches import FMUIA_RECIPE
from fmuia_lib.tasks import select_tasks
from fmuia_lib.training import Trainer, load_checkpoint, train
from fmuia_lib.training.distributed import DistributedContext
from conftest import TINY_MODEL

#: measured: the official model, EfficientNet-B4, the 27 tasks
OFFICIAL_PARAMETERS = 20_268_076
OFFICIAL_DETECTION_HEAD = 296_069
#: measured: sha256 (first 16 hex digits) of json.dumps([[name, shape], ...]) of the encoder's and
#: FPN decoder's parameters, and of {task_id: [shape, ...]} of the heads (task ids sorted)
OFFICIAL_ENCODER_HASH = "cfa8699d9da14f5a"
OFFICIAL_FPN_HASH = "fab44dcb69a3a0cc"
OFFICIAL_HEADS_HASH = "53c08c068fcea73a"
#: measured: parameter shapes of representative official heads, in order
OFFICIAL_HEAD_SHAPES = {
    "FUGC": [[4, 448], [4]],
    "IUGC": [[6, 448], [6]],
    "organ_cls": [[6, 448], [6]],
    "thyroid_nodule_det": [[128, 128, 3, 3], [128], [128], [128, 128, 3, 3], [128], [128], [5, 128, 1, 1], [5]],
    "cardiac_multi": [[4, 128, 1, 1], [4]],
}
#: the fmuia recipe's model (CenterNet detection, heat-map landmarks), same encoder and FPN
FMUIA_PARAMETERS = 19_818_149


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def b4_official() -> MultiTaskNet:
    torch.manual_seed(0)
    return build_model(TrainConfig(encoder_weights=None), select_tasks())


def test_official_model_has_the_official_layout(b4_official):
    model = b4_official
    assert _count(model) == OFFICIAL_PARAMETERS
    assert _count(model.heads["thyroid_nodule_det"]) == OFFICIAL_DETECTION_HEAD
    assert isinstance(model.heads["thyroid_nodule_det"], GridDetectionHead)
    assert isinstance(model.heads["FUGC"], LinearLandmarkHead)
    assert _hash([[n, list(p.shape)] for n, p in model.encoder.named_parameters()]) == OFFICIAL_ENCODER_HASH
    assert _hash([[n, list(p.shape)] for n, p in model.fpn_decoder.named_parameters()]) == OFFICIAL_FPN_HASH
    heads = {t: [list(p.shape) for p in model.heads[t].parameters()] for t in sorted(model.heads)}
    assert _hash(heads) == OFFICIAL_HEADS_HASH
    for task_id, shapes in OFFICIAL_HEAD_SHAPES.items():
        assert heads[task_id] == shapes, task_id
    # the baseline's FPN decoder is in no optimiser group: built frozen
    assert not any(p.requires_grad for p in model.fpn_decoder.parameters())


def test_fmuia_recipe_model_differs_only_in_its_heads(b4_official):
    torch.manual_seed(0)
    config = TrainConfig.from_dict({"encoder_weights": None, "switches": list(FMUIA_RECIPE)})
    fmuia = build_model(config, select_tasks())
    assert _count(fmuia) == FMUIA_PARAMETERS
    assert _count(fmuia.encoder) + _count(fmuia.fpn_decoder) == _count(b4_official.encoder) + _count(
        b4_official.fpn_decoder)
    assert all(p.requires_grad for p in fmuia.fpn_decoder.parameters())


def _conv_fan_in(weight: torch.Tensor) -> int:
    return weight.shape[1] * weight.shape[2] * weight.shape[3]


def test_fpn_decoder_has_smps_initialisation():
    """Convolutions Kaiming-uniform (gain sqrt(2): bound sqrt(6 / fan_in)), biases 0, GroupNorm 1/0,
    as ``smp.FPN(...).decoder``; PyTorch's default (bound 1 / sqrt(fan_in)) would fail."""
    torch.manual_seed(1)
    ours = MultiTaskNet(select_tasks(["cervix"]), encoder_name="resnet18", encoder_weights=None).fpn_decoder
    torch.manual_seed(1)
    reference = smp.FPN(encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=1).decoder
    torch.manual_seed(1)
    default = FPNDecoder(encoder_channels=[3, 64, 64, 128, 256, 512], encoder_depth=5)
    ref_params, default_params = dict(reference.named_parameters()), dict(default.named_parameters())
    assert ref_params.keys() == dict(ours.named_parameters()).keys()
    checked = 0
    for name, p in ours.named_parameters():
        ref, dflt = ref_params[name], default_params[name]
        assert p.shape == ref.shape, name
        if p.dim() == 4:  # a convolution's weight
            bound = math.sqrt(6.0 / _conv_fan_in(p))
            assert p.abs().max() <= bound + 1e-6, name
            # same distribution as smp's (std of U(-b, b) = b / sqrt(3)), far from PyTorch's default
            assert p.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), name
            assert ref.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), name
            assert dflt.std().item() < 0.5 * p.std().item(), name
            checked += 1
        elif name.endswith("bias") and ("skip_conv" in name or name.startswith("p5")):
            assert torch.equal(p, torch.zeros_like(p)) and torch.equal(ref, torch.zeros_like(ref)), name
            assert not torch.equal(dflt, torch.zeros_like(dflt)), name
        else:  # GroupNorm weight 1, bias 0 (smp's and PyTorch's default alike)
            torch.testing.assert_close(p, ref)
    assert checked == 11  # p5, 3 skip convs, 7 3x3 convs of the segmentation blocks


# -- losses, worked by hand --------------------------------------------------------------------

def test_official_losses_on_hand_worked_batches():
    tasks = {t.task_id: t for t in select_tasks(["cervix_multi", "organ_cls", "IUGC", "thyroid_nodule_det"])}
    loss = build_loss(TrainConfig())
    # segmentation: smp multiclass Dice. Two pixels, three classes, probabilities given as log-logits.
    # class 0: p = (0.5, 0.25), t = (1, 0): 1 - 2 * 0.5 / (0.75 + 1) = 3/7; class 1 likewise 3/7;
    # class 2 is absent from the target and contributes 0; mean over the 3 classes = 2/7.
    probs = torch.tensor([[0.5, 0.25], [0.25, 0.5], [0.25, 0.25]])  # C x pixels
    logits = probs.log().view(1, 3, 1, 2)
    target = torch.tensor([[[0, 1]]])
    _, raw = loss(logits, target, tasks["cervix_multi"])
    assert raw.item() == pytest.approx(2 / 7, abs=1e-6)
    # classification: cross-entropy of probabilities 0.5 and 0.25 at the true class: (ln 2 + ln 4) / 2
    cls_logits = torch.tensor([[0.5, 0.25, 0.25, 1e-9, 1e-9, 1e-9], [0.25, 0.5, 0.25, 1e-9, 1e-9, 1e-9]]).log()
    _, raw = loss(cls_logits, torch.tensor([0, 2]), tasks["organ_cls"])
    assert raw.item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-5)
    # Regression: MSE over the 2K flattened coordinates: errors 0.1 and 0.2 once each, 0 elsewhere
    points = torch.zeros(1, 3, 2)
    truth = points.clone()
    truth[0, 0, 0], truth[0, 2, 1] = 0.1, 0.2
    _, raw = loss(points, truth, tasks["IUGC"])
    assert raw.item() == pytest.approx((0.1 ** 2 + 0.2 ** 2) / 6, rel=1e-6)
    # detection (grid): box (0.1, 0.2, 0.5, 0.6), centre (0.3, 0.4) -> cell (long(0.4 * 4), long(0.3 * 4))
    # = (1, 1) of a 4 x 4 map. There: objectness logit 0 -> BCE ln 2; box (0.2, 0.2, 0.5, 0.5) ->
    # L1 = (0.1 + 0 + 0 + 0.1) / 4 = 0.05, times 8. A second row with target -1 (no box) is left out.
    out = torch.full((2, 5, 4, 4), 0.9)
    out[0, :, 1, 1] = torch.tensor([0.2, 0.2, 0.5, 0.5, 0.0])
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.6], [-1.0, -1.0, -1.0, -1.0]])
    _, raw = loss(out, boxes, tasks["thyroid_nodule_det"])
    assert raw.item() == pytest.approx(math.log(2) + 8 * 0.05, rel=1e-6)
    # a centre on the far edge is clamped to the last cell: (1.0 * 4 -> 3)
    edge = torch.zeros(1, 5, 4, 4)
    edge[0, :, 3, 3] = torch.tensor([0.6, 0.6, 1.0, 1.0, 0.0])
    assert GridDetectionLoss()(edge, torch.tensor([[0.6, 0.6, 1.0, 1.0]])).item() == pytest.approx(math.log(2))
    # no box at all: zero, and still part of the graph
    empty = torch.zeros(1, 5, 4, 4, requires_grad=True)
    zero = GridDetectionLoss()(empty, torch.full((1, 4), -1.0))
    assert zero.item() == 0.0 and zero.requires_grad


def test_type_weights_are_one_and_head_types_pick_the_losses():
    official, fmuia = build_loss(TrainConfig()), build_loss(TrainConfig.from_dict({"switches": list(FMUIA_RECIPE)}))
    assert official.weights == {"segmentation": 1.0, "classification": 1.0, "detection": 1.0, "Regression": 1.0}
    assert type(official.losses["detection"]).__name__ == "GridDetectionLoss"
    assert type(fmuia.losses["detection"]).__name__ == "CenterNetLoss"
    assert not official.losses["segmentation"].with_ce and fmuia.losses["segmentation"].with_ce
    assert isinstance(official.losses["Regression"].loss, torch.nn.MSELoss)
    assert type(fmuia.losses["Regression"]).__name__ == "HeatmapLandmarkLoss"
    assert isinstance(fmuia.losses["Regression"].points.loss, torch.nn.SmoothL1Loss)
    with pytest.raises(ValueError, match="unknown detection head 'yolo'"):
        MultiTaskLoss(det_head="yolo")


# -- a short official run ---------------------------------------------------------------------

TASKS = ["cardiac_multi", "organ_cls", "thyroid_nodule_det", "IUGC"]


def official_config(root, out_dir, **changes) -> TrainConfig:
    """The official recipe on a tiny root: only sizes, data and device differ from the defaults."""
    values = dict(data_root=str(root), val_root=str(root), tasks=TASKS, encoder=TINY_MODEL["encoder"],
                  encoder_weights=None, image_size=64, batch_size=2, num_workers=0, device="cpu", out_dir=str(out_dir))
    values.update(changes)
    return TrainConfig.from_dict(values)


@pytest.fixture(scope="module")
def official_run(tmp_path_factory):
    """Three epochs of the official recipe (epochs=50, stopped after epoch 3)."""
    from conftest import make_root
    base = tmp_path_factory.mktemp("official")
    root = make_root(base, tasks=TASKS, n=6)
    config = official_config(root, base / "run", stop_at_step=3 * (24 // 2))  # 3 epochs of 24 rows // 2
    trainer = Trainer(config, DistributedContext(), torch.device("cpu"), progress=False)
    fpn_before = {k: v.clone() for k, v in trainer.model.fpn_decoder.state_dict().items()}
    return trainer, trainer.run(), fpn_before


def test_lr_follows_cosine_annealing_stepped_per_epoch(official_run):
    trainer, result, _ = official_run
    spe = trainer.steps_per_epoch
    assert spe == 24 // 2  # an epoch is len(training rows) // batch_size steps
    reference_opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-4},
                                     {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-3}])
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(reference_opt, T_max=50, eta_min=1e-6)
    expected_encoder, expected_heads = [], []
    for _ in range(3):
        expected_encoder += [reference_opt.param_groups[0]["lr"]] * spe
        expected_heads += [reference_opt.param_groups[1]["lr"]] * spe
        reference_opt.step()
        reference.step()
    history = result.history
    assert list(history["step"]) == list(range(1, 3 * spe + 1))
    assert list(history["epoch"]) == [e for e in (1, 2, 3) for _ in range(spe)]
    assert history["lr_encoder"].tolist() == expected_encoder
    assert history["lr_heads"].tolist() == expected_heads
    assert expected_encoder[0] == 1e-4 and expected_encoder[-1] < expected_encoder[spe] < 1e-4
    assert (history["lr_fpn_decoder"] == 0.0).all()  # no FPN group


def test_official_run_keeps_the_fpn_and_validates_per_batch_each_epoch(official_run):
    trainer, result, fpn_before = official_run
    assert "fpn_decoder" not in {g["name"] for g in trainer.optimizer.param_groups}
    assert trainer.optimizer.defaults["weight_decay"] == 0.01 and trainer.config.grad_clip is None
    assert trainer.amp_dtype is None  # fp32
    for name, value in trainer.model.fpn_decoder.state_dict().items():
        assert torch.equal(value, fpn_before[name]), name
    val = result.val_history
    assert sorted(set(val["step"])) == [trainer.steps_per_epoch * e for e in (1, 2, 3)]
    last = val[val["step"] == val["step"].max()].set_index("task_id")
    assert {"Accuracy", "F1-Score", "Dice", "IoU", "MAE (pixels)"} <= set(last.columns)
    assert math.isnan(last.loc["IUGC", "score"]) and last.loc["IUGC", "MAE (pixels)"] >= 0
    columns = [last[c].dropna().mean() for c in ("Accuracy", "F1-Score", "Dice", "IoU")]
    assert last["selection_score"].iloc[0] == pytest.approx(sum(columns) / 4)
    assert result.best_score == pytest.approx(val.groupby("step")["selection_score"].first().max())


def test_checkpoint_rebuilds_the_official_heads(official_run):
    _, result, _ = official_run
    model, config, info = load_checkpoint(result.last_checkpoint)
    assert config.switches == [] and config.det_head == "grid" and info["step"] == 36
    assert isinstance(model.heads["thyroid_nodule_det"], GridDetectionHead)
    assert isinstance(model.heads["IUGC"], LinearLandmarkHead)
    for name, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    boxes = model.predict(torch.randn(2, 3, 64, 64), "thyroid_nodule_det")["boxes"]
    assert (boxes[:, :2] <= boxes[:, 2:]).all()  # corners put in order for the xyxy contract


def test_predict_puts_grid_corners_in_order_and_linear_points_inside_the_image():
    torch.manual_seed(0)
    model = MultiTaskNet(select_tasks(["thyroid_nodule_det", "FUGC"]), encoder_name="resnet18",
                         encoder_weights=None).eval()
    with torch.no_grad():
        model.heads["thyroid_nodule_det"].out.bias[:4] = torch.tensor([2.0, 2.0, -2.0, -2.0])  # x0 > x1, y0 > y1
        model.heads["thyroid_nodule_det"].out.weight.zero_()
        model.heads["FUGC"].linear.bias[:] = torch.tensor([1.5, -0.5, 0.5, 0.5])
        model.heads["FUGC"].linear.weight.zero_()
    images = torch.randn(1, 3, 64, 64)
    raw_box = model.heads["thyroid_nodule_det"].decode(model(images, "thyroid_nodule_det"))["boxes"]
    assert raw_box[0, 0] > raw_box[0, 2]  # as the baseline reads it (its per-batch IoU uses this)
    box = model.predict(images, "thyroid_nodule_det")["boxes"][0]
    torch.testing.assert_close(box, torch.sigmoid(torch.tensor([-2.0, -2.0, 2.0, 2.0])))
    points = model.predict(images, "FUGC")["points"][0]
    torch.testing.assert_close(points, torch.tensor([[1.0, 0.0], [0.5, 0.5]]))


def test_epoch_runs_refuse_a_stop_between_validations(tmp_path, make_root):
    root = make_root(tmp_path, tasks=TASKS, n=6)
    with pytest.raises(Exception, match="multiple of the validation interval \\(12 steps\\)"):
        train(official_config(root, tmp_path / "r", stop_at_step=5), progress=False)
