"""Task-homogeneous batch sampling and the per-task train/val split."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmuia_lib.data.sampler import TaskBatchSampler, stratified_split

SIZES = {"big": 120, "mid": 30, "small": 5}


def task_indices() -> dict[str, list[int]]:
    out, start = {}, 0
    for task, n in SIZES.items():
        out[task] = list(range(start, start + n))
        start += n
    return out


def task_of(index: int) -> str:
    return next(t for t, ix in task_indices().items() if index in ix)


@pytest.mark.parametrize("strategy, expected", [
    ("uniform", {t: 1 / 3 for t in SIZES}),
    ("proportional", {t: n / 155 for t, n in SIZES.items()}),
    ("temperature", {t: n ** 0.5 / sum(m ** 0.5 for m in SIZES.values()) for t, n in SIZES.items()}),
])
def test_probabilities_match_formulas_and_frequencies(strategy, expected):
    sampler = TaskBatchSampler(task_indices(), batch_size=4, strategy=strategy, temperature=2.0,
                               num_batches=3000, seed=0)
    assert sampler.task_probabilities() == pytest.approx(expected)
    counts = pd.Series([task_of(b[0]) for b in sampler]).value_counts(normalize=True)
    for task, p in expected.items():
        assert abs(counts[task] - p) < 4 * np.sqrt(p * (1 - p) / 3000)  # within 4 standard errors


def test_temperature_limits():
    one = TaskBatchSampler(task_indices(), 4, "temperature", temperature=1.0).task_probabilities()
    assert one == pytest.approx(TaskBatchSampler(task_indices(), 4, "proportional").task_probabilities())
    hot = TaskBatchSampler(task_indices(), 4, "temperature", temperature=1e6).task_probabilities()
    assert hot == pytest.approx({t: 1 / 3 for t in SIZES}, abs=1e-4)


def test_batches_are_single_task_and_cover_each_task():
    sampler = TaskBatchSampler(task_indices(), batch_size=8, strategy="uniform", num_batches=200, seed=3)
    per_task: dict[str, list[list[int]]] = {t: [] for t in SIZES}
    for batch in sampler:
        assert len({task_of(i) for i in batch}) == 1
        per_task[task_of(batch[0])].append(batch)
    for task, batches in per_task.items():  # a task's first ceil(n / 8) batches are a permutation of it
        first = batches[:int(np.ceil(SIZES[task] / 8))]
        assert sorted(i for b in first for i in b) == task_indices()[task]


def test_default_length_and_drop_last():
    assert len(TaskBatchSampler(task_indices(), batch_size=8)) == 15 + 4 + 1
    sampler = TaskBatchSampler(task_indices(), batch_size=4, drop_last=True, strategy="proportional")
    assert len(sampler) == 30 + 7 + 1
    assert all(len(b) == 4 for b in sampler)
    with pytest.raises(ValueError, match=r"tasks \['small'\] have fewer rows"):
        TaskBatchSampler(task_indices(), batch_size=6, drop_last=True)


def test_deterministic_for_seed_and_epoch():
    def batches(seed: int, epoch: int = 0):
        sampler = TaskBatchSampler(task_indices(), batch_size=4, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0) == batches(0)
    assert batches(0) != batches(1)
    assert batches(0, epoch=1) != batches(0, epoch=0)
    sampler = TaskBatchSampler(task_indices(), batch_size=4, seed=0)
    assert list(sampler) == batches(0, 0) and list(sampler) == batches(0, 1)  # epochs advance by themselves


def test_state_round_trip_resumes_mid_epoch():
    sampler = TaskBatchSampler(task_indices(), batch_size=4, seed=7)
    reference = list(TaskBatchSampler(task_indices(), batch_size=4, seed=7))
    iterator = iter(sampler)
    head = [next(iterator) for _ in range(11)]
    state = sampler.state_dict()
    assert state == {"epoch": 0, "position": 11, "seed": 7}
    resumed = TaskBatchSampler(task_indices(), batch_size=4, seed=7)
    resumed.load_state_dict(state)
    assert head + list(resumed) == reference
    assert sampler.state_dict(batches_done=5)["position"] == 5
    with pytest.raises(ValueError, match="seed"):
        TaskBatchSampler(task_indices(), batch_size=4, seed=8).load_state_dict(state)


def test_bad_arguments():
    with pytest.raises(ValueError, match="strategy must be one of"):
        TaskBatchSampler(task_indices(), 4, strategy="random")
    with pytest.raises(ValueError, match="no task has any rows"):
        TaskBatchSampler({"a": []}, 4)


# -- split ---------------------------------------------------------------------------------

def split_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for task, n in (("cls", 60), ("seg", 25), ("tiny", 2), ("one", 1)):
        for i in range(n):
            rows.append({"task_id": task, "label": int(rng.choice(3, p=[0.6, 0.3, 0.1])) if task == "cls" else None,
                         "patient": f"{task}-p{i // 3}"})
    return pd.DataFrame(rows, index=np.arange(len(rows)) + 100)  # positions, not labels, are returned


def test_split_is_per_task_stratified_and_seeded():
    frame = split_frame()
    train, val = stratified_split(frame, val_fraction=0.25, seed=0, label_col="label")
    assert sorted(train + val) == list(range(len(frame))) and not set(train) & set(val)
    val_tasks = frame.iloc[val]["task_id"].value_counts()
    assert val_tasks["cls"] == 15 and val_tasks["seg"] == 6 and val_tasks["tiny"] == 1 and "one" not in val_tasks
    cls = frame[frame["task_id"] == "cls"]
    expected = cls["label"].value_counts() * 0.25
    got = frame.iloc[val].query("task_id == 'cls'")["label"].value_counts()
    assert (abs(got.reindex(expected.index, fill_value=0) - expected) <= 1).all()
    assert stratified_split(frame, 0.25, seed=0, label_col="label") == (train, val)
    assert stratified_split(frame, 0.25, seed=1, label_col="label") != (train, val)


def test_split_keeps_groups_together():
    frame = split_frame()
    train, val = stratified_split(frame, val_fraction=0.3, seed=2, group_col="patient", label_col="label")
    train_groups, val_groups = set(frame.iloc[train]["patient"]), set(frame.iloc[val]["patient"])
    assert not train_groups & val_groups
    assert len(val_groups & set(frame.query("task_id == 'cls'")["patient"])) == 6  # round(0.3 * 20 patients)
    with pytest.raises(KeyError, match="'site' is not in the frame"):
        stratified_split(frame, group_col="site")
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(frame, val_fraction=1.0)
