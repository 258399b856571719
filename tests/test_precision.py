"""Mixed precision on CPU: outputs that become probabilities or coordinates stay float32 under
autocast, bf16 and fp16 (with its gradient scaler) train, and "auto" stays off on CPU."""
from __future__ import annotations

import pytest
import torch

from fmuia_lib.config import TrainConfig
from fmuia_lib.data.dataset import collate
from fmuia_lib.model import MultiTaskNet
from fmuia_lib.switches import FMUIA_RECIPE
from fmuia_lib.tasks import select_tasks
from fmuia_lib.training.distributed import DistributedContext
from fmuia_lib.training.loop import StepBatches, Trainer, autocast_dtype
from conftest import TINY_MODEL

TASKS = ["breast_lesion", "organ_cls", "thyroid_nodule_det", "IUGC"]
SMALL = dict(encoder_name="resnet18", encoder_weights=None, fpn_pyramid_channels=64, fpn_segmentation_channels=32)
HEAD_TYPES = [{"det_head": "grid", "landmark_head": "linear"}, {"det_head": "centernet", "landmark_head": "sigmoid"},
              {"det_head": "centernet", "landmark_head": "heatmap"}]


def _tensors(out):
    return list(out.values()) if isinstance(out, dict) else [out]


@pytest.mark.parametrize("heads", HEAD_TYPES, ids=["official", "sigmoid", "heatmap"])
def test_bf16_autocast_forward_gives_float32_outputs(heads):
    torch.manual_seed(0)
    model = MultiTaskNet(select_tasks(TASKS), **SMALL, **heads)
    images = torch.randn(2, 3, 64, 64)
    for task_id in TASKS:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = model.encoder(images)
            assert features[-1].dtype == torch.bfloat16  # the trunk does run in bf16
            outputs = model(images, task_id)
            decoded = model.predict(images, task_id)
        for tensor in _tensors(outputs) + _tensors(decoded):
            assert tensor.dtype == torch.float32, (task_id, heads)
    # a box corner of 0.7 survives to float32 precision, where bf16 would round it to 0.69921875
    assert torch.tensor(0.7, dtype=torch.bfloat16).item() == 0.69921875


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from conftest import make_root
    return make_root(tmp_path_factory.mktemp("amp"), tasks=TASKS, n=4)


def _trainer(root, tmp_path, **changes) -> Trainer:
    values = dict(data_root=str(root), val_root=str(root), **TINY_MODEL, image_size=64,
                  batch_size=2, epochs=None, max_steps=4, eval_every=4, num_workers=0, device="cpu",
                  out_dir=str(tmp_path / "run"), amp=True)
    values.update(changes)
    return Trainer(TrainConfig.from_dict(values), DistributedContext(), torch.device("cpu"), progress=False)


def _one_batch_per_task(trainer: Trainer) -> list[dict]:
    indices = trainer.train_set.task_indices
    return [collate([trainer.train_set[i] for i in indices[t][:2]]) for t in TASKS]


@pytest.mark.parametrize("switches", [[], list(FMUIA_RECIPE)], ids=["official", "fmuia"])
def test_bf16_train_step_on_cpu_has_float32_head_outputs(root, tmp_path, switches):
    trainer = _trainer(root, tmp_path, amp_dtype="bf16", switches=switches)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    seen = []
    hooks = [head.register_forward_hook(lambda m, i, out: seen.extend(t.dtype for t in _tensors(out)))
             for head in trainer.model.heads.values()]
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for batch in _one_batch_per_task(trainer):
        row = trainer.train_step(batch)
        assert torch.isfinite(row["loss"])
    for hook in hooks:
        hook.remove()
    assert seen and set(seen) == {torch.float32}
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_fp16_grad_scaler_path_runs_on_cpu(root, tmp_path):
    """A path check at 32 px (CPU fp16 convolutions are slow): the scaler backs off from its
    initial scale until a step is taken."""
    trainer = _trainer(root, tmp_path, amp_dtype="fp16", switches=list(FMUIA_RECIPE), image_size=32,
                       max_steps=12, eval_every=12)
    assert trainer.amp_dtype == torch.float16 and trainer.scaler.is_enabled()
    scale = trainer.scaler.get_scale()
    encoder_before = [p.clone() for p in trainer.model.encoder.parameters()]
    loader = torch.utils.data.DataLoader(trainer.train_set, batch_sampler=StepBatches(trainer.sampler, 0, 12),
                                         collate_fn=collate)
    for batch in loader:
        row = trainer.train_step(batch)
        assert torch.isfinite(row["loss"])
    assert trainer.step == 12 and trainer.scaler.get_scale() > 0
    assert trainer.scaler.get_scale() <= scale  # may only have backed off (no growth within 2000 steps)
    assert any(not torch.equal(p, q) for p, q in zip(trainer.model.encoder.parameters(), encoder_before))


def test_auto_means_off_on_cpu_and_explicit_dtypes_are_honoured():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype(TrainConfig(amp=True), cpu) is None  # profiles' amp: true keeps CPU runs in fp32
    assert autocast_dtype(TrainConfig(amp=True, amp_dtype="bf16"), cpu) == torch.bfloat16
    assert autocast_dtype(TrainConfig(amp=True, amp_dtype="fp16"), cpu) == torch.float16
    assert autocast_dtype(TrainConfig(amp=False, amp_dtype="bf16"), cpu) is None
    assert autocast_dtype(TrainConfig(amp=True, amp_dtype="fp16"), cuda) == torch.float16
    assert autocast_dtype(TrainConfig(), cuda) is None  # the baseline trains in fp32
