"""BatchNorm statistics for evaluation: re-estimated over every task, or per task."""
from __future__ import annotations

import copy

import pytest
import torch

from fmuia_lib.data.dataset import MultiTaskDataset, collate
from fmuia_lib.data.transforms import build_transforms
from fmuia_lib.model import MultiTaskNet
from fmuia_lib.tasks import select_tasks
from fmuia_lib.training.norm_stats import calibration_batches, recalibrate_norm_stats

TASKS = ["breast_lesion", "organ_cls", "IUGC"]
N = 6  # images per task in the synthetic root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from conftest import make_root
    root = make_root(tmp_path_factory.mktemp("norm_stats"), tasks=TASKS, n=N)
    return MultiTaskDataset(root, transforms=build_transforms(64, train=False))


def new_model(per_task: bool) -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(select_tasks(TASKS), encoder_name="resnet18", encoder_weights=None,
                        task_norm_stats=per_task)


def first_layer_stats(model: MultiTaskNet, dataset: MultiTaskDataset, indices: list[int]):
    """Mean and unbiased variance per channel of the first BatchNorm's input (resnet's conv1)."""
    with torch.no_grad():
        x = model.encoder.conv1(collate([dataset[i] for i in indices])["image"])
    return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=True)


def running_stats(model: MultiTaskNet) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.encoder.state_dict().items() if "running" in k}


def test_calibration_batches_are_seeded_capped_and_never_single():
    indices = {"a": list(range(10)), "b": list(range(10, 13))}
    batches = calibration_batches(indices, batches_per_task=2, batch_size=4, seed=1)
    assert batches == calibration_batches(indices, batches_per_task=2, batch_size=4, seed=1)
    assert batches != calibration_batches(indices, batches_per_task=2, batch_size=4, seed=2)
    assert [len(b) for b in batches["a"]] == [4, 4]  # capped at 2 batches
    assert sorted(sum(batches["b"], [])) == [10, 11, 12]
    assert all(set(sum(batches[t], [])) <= set(indices[t]) for t in indices)
    # 9 items in batches of 4: the lone 9th joins the last batch
    assert [len(b) for b in calibration_batches({"c": list(range(9))}, 5, 4)["c"]] == [4, 5]


def test_per_task_statistics_are_each_tasks_own(dataset):
    model = new_model(per_task=True).eval()
    images = torch.randn(2, 3, 64, 64)
    before = model(images, "organ_cls")  # no statistics yet: the running averages are used
    torch.testing.assert_close(before, model.heads["organ_cls"](model.encoder(images)[-1]))
    trained_stats, rng = running_stats(model), torch.get_rng_state()

    recalibrate_norm_stats(model, dataset, "per_task", batches_per_task=1, batch_size=N, device="cpu")

    assert torch.equal(torch.get_rng_state(), rng), "re-estimation moved the global random state"
    for key, value in running_stats(model).items():  # the running averages are left as trained
        assert torch.equal(value, trained_stats[key]), key
    means = {}
    for task_id in TASKS:
        stats = model.task_norm_stats.per_task[task_id]
        assert bool(stats.ready)
        mean, var = first_layer_stats(model, dataset, dataset.task_indices[task_id])
        torch.testing.assert_close(stats.mean_0, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stats.var_0, var, rtol=1e-4, atol=1e-5)
        means[task_id] = mean
    assert not torch.allclose(means["breast_lesion"], means["organ_cls"])
    # eval mode normalises a task's batch with that task's statistics
    reference = copy.deepcopy(model)
    for i, name in enumerate(model.task_norm_stats.layers):
        bn = reference.encoder.get_submodule(name)
        bn.running_mean.copy_(getattr(model.task_norm_stats.per_task["organ_cls"], f"mean_{i}"))
        bn.running_var.copy_(getattr(model.task_norm_stats.per_task["organ_cls"], f"var_{i}"))
    reference.task_norm_stats = None
    after = model(images, "organ_cls")
    torch.testing.assert_close(after, reference(images, "organ_cls"))
    assert not torch.allclose(after, before)
    # training mode uses batch statistics, as always
    model.train()
    torch.testing.assert_close(model.encoder(images)[-1], reference.train().encoder(images)[-1])


def test_shared_statistics_weigh_every_task_equally(dataset):
    model = new_model(per_task=False)
    recalibrate_norm_stats(model, dataset, "shared", batches_per_task=1, batch_size=N, device="cpu")
    task_means = [first_layer_stats(model, dataset, dataset.task_indices[t])[0] for t in TASKS]
    torch.testing.assert_close(model.encoder.bn1.running_mean, torch.stack(task_means).mean(0),
                               rtol=1e-4, atol=1e-5)


def test_running_mode_changes_nothing_and_per_task_needs_the_buffers(dataset):
    model = new_model(per_task=False)
    stats = running_stats(model)
    recalibrate_norm_stats(model, dataset, "running", batches_per_task=1, batch_size=N, device="cpu")
    assert all(torch.equal(v, stats[k]) for k, v in running_stats(model).items())
    with pytest.raises(ValueError, match="task_norm_stats=True"):
        recalibrate_norm_stats(model, dataset, "per_task", batches_per_task=1, batch_size=N, device="cpu")
    with pytest.raises(ValueError, match="norm_stats mode"):
        recalibrate_norm_stats(model, dataset, "precise", batches_per_task=1, batch_size=N, device="cpu")
