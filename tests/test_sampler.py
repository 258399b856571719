"""Task-homogeneous batch sampling (fmuia's and the baseline's samplers) and the train/val splits."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from fmuia_lib.data.sampler import OfficialTaskSampler, TaskBatchSampler, random_split_indices, stratified_split

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


def test_default_length():
    assert len(TaskBatchSampler(task_indices(), batch_size=8)) == 15 + 4 + 1
    assert len(OfficialTaskSampler(task_indices(), batch_size=8)) == 155 // 8


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


# -- the baseline's sampler -----------------------------------------------------------------------

def _epochs(sampler, count: int) -> list[list[list[int]]]:
    return [list(sampler) for _ in range(count)]


def test_official_sampler_batches_are_full_single_task_and_len_is_rows_over_batch():
    sampler = OfficialTaskSampler(task_indices(), batch_size=4, seed=0)
    assert len(sampler) == (120 + 30 + 5) // 4
    for epoch in _epochs(sampler, 5):
        assert len(epoch) == len(sampler)
        for batch in epoch:
            assert len(batch) == 4  # always full: a short remainder is filled from the re-shuffled start
            assert len({task_of(i) for i in batch}) == 1


def test_official_sampler_picks_tasks_uniformly_whatever_their_size():
    sampler = OfficialTaskSampler(task_indices(), batch_size=4, seed=1)
    counts = Counter(task_of(batch[0]) for epoch in _epochs(sampler, 60) for batch in epoch)
    total = sum(counts.values())  # 60 x 38 = 2,280 draws; each share 1/3 +- 3 standard deviations
    for task in SIZES:
        assert abs(counts[task] / total - 1 / 3) < 3 * (2 / 9 / total) ** 0.5, counts


def test_official_sampler_cursor_restarts_each_epoch_and_wraps_with_a_reshuffle():
    """"mid" has 30 rows: 7 batches of 4 walk its list, the 8th takes the 2 rows left and fills
    up from the re-shuffled list, which the next batches continue. Each epoch starts again at
    0 of the list as the last epoch left it (a cursor carried over would not)."""
    sampler = OfficialTaskSampler({"mid": list(range(30)), "other": list(range(100, 130))}, batch_size=4, seed=3)
    wraps = restarts = 0
    known_start = None  # the known start of the list the next epoch begins with
    for epoch in _epochs(sampler, 40):
        mid = [b for b in epoch if b[0] < 100]
        if mid and known_start:
            assert mid[0][:len(known_start)] == known_start
            restarts += 1
        walked = [i for b in mid[:7] for i in b]
        assert len(set(walked)) == len(walked)  # no row twice before the list runs out
        if len(mid) >= 8:
            assert sorted(walked + mid[7][:2]) == list(range(30))  # the whole list, then the wrap
            new_start = mid[7][2:] + (mid[8] if len(mid) >= 9 else [])
            assert len(set(new_start)) == len(new_start)
            known_start = new_start[:4] if len(mid) < 16 else None  # a second wrap re-shuffles again
            wraps += 1
        elif mid:
            known_start = mid[0]
    assert wraps >= 5 and restarts >= 20, (wraps, restarts)


def test_official_sampler_resumes_mid_epoch_across_epochs():
    full = OfficialTaskSampler(task_indices(), batch_size=4, seed=7)
    stream = [b for epoch in _epochs(full, 3) for b in epoch]
    resumed = OfficialTaskSampler(task_indices(), batch_size=4, seed=7)
    resumed.load_state_dict({"epoch": 1, "position": 5, "seed": 7})
    tail = list(resumed) + list(resumed)
    assert tail == stream[len(full) + 5:]
    with pytest.raises(ValueError, match="seed 7"):
        OfficialTaskSampler(task_indices(), batch_size=4, seed=8).load_state_dict(resumed.state_dict())


def test_official_sampler_depends_only_on_its_seed():
    a, b = (OfficialTaskSampler(task_indices(), batch_size=4, seed=s) for s in (5, 5))
    assert _epochs(a, 2) == _epochs(b, 2)
    assert _epochs(OfficialTaskSampler(task_indices(), batch_size=4, seed=6), 1) != _epochs(
        OfficialTaskSampler(task_indices(), batch_size=4, seed=5), 1)


# -- the baseline's split ---------------------------------------------------------------------------

@pytest.mark.parametrize("num_rows, fraction, seed", [(155, 0.2, 42), (10, 0.25, 0), (2592, 0.2, 42)])
def test_random_split_is_torch_random_split_with_the_seed(num_rows, fraction, seed):
    train, val = random_split_indices(num_rows, fraction, seed)
    assert len(val) == int(num_rows * fraction) and len(train) == num_rows - len(val)
    ref_train, ref_val = torch.utils.data.random_split(list(range(num_rows)), [len(train), len(val)],
                                                       generator=torch.Generator().manual_seed(seed))
    assert train == list(ref_train.indices) and val == list(ref_val.indices)  # same rows, same order
    assert val != sorted(val) or len(val) < 2  # the permutation's order, not sorted


def test_task_weights_multiply_each_tasks_share():
    weights = {"big": 1.0, "mid": 3.0, "small": 0.0}
    sampler = TaskBatchSampler(task_indices(), batch_size=4, strategy="uniform", num_batches=600, seed=0,
                               task_weights=weights)
    assert sampler.task_probabilities() == pytest.approx({"big": 0.25, "mid": 0.75, "small": 0.0})
    counts = Counter(task_of(b[0]) for b in sampler)
    assert counts["small"] == 0 and abs(counts["mid"] / 600 - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 600)
    temperature = TaskBatchSampler(task_indices(), 4, "temperature", task_weights={"mid": 2.0})
    root = {t: n ** 0.5 * (2.0 if t == "mid" else 1.0) for t, n in SIZES.items()}
    assert temperature.task_probabilities() == pytest.approx({t: w / sum(root.values()) for t, w in root.items()})
    with pytest.raises(ValueError, match="not all 0"):
        TaskBatchSampler(task_indices(), 4, "uniform", task_weights={t: 0.0 for t in SIZES})
