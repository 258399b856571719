"""MultiTaskDataset items, collate, and errors that name the CSV line and file."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fmuia_lib.data.dataset import MultiTaskDataset, collate, load_image
from fmuia_lib.data.layout import LayoutError, read_root
from fmuia_lib.data.sampler import TaskBatchSampler
from fmuia_lib.data.transforms import build_transforms, denormalize_image

SIZE = 32


@pytest.fixture(scope="module")
def dataset(data_root):
    return MultiTaskDataset(data_root, transforms=build_transforms(SIZE, train=False))


def test_tasks_and_indices(dataset):
    assert [t.task_id for t in dataset.tasks] == ["breast_lesion", "cardiac_multi", "fetal_head_pos_cls", "organ_cls",
                                                  "thyroid_nodule_det", "uterine_fibroid_det", "FUGC", "IUGC"]
    assert sorted(i for ix in dataset.task_indices.values() for i in ix) == list(range(len(dataset)))
    for task_id, indices in dataset.task_indices.items():
        assert set(dataset.frame.loc[indices, "task_id"]) == {task_id}


@pytest.mark.parametrize("task_id, dtype, shape", [
    ("breast_lesion", torch.int64, (SIZE, SIZE)),
    ("cardiac_multi", torch.int64, (SIZE, SIZE)),
    ("organ_cls", torch.int64, ()),
    ("thyroid_nodule_det", torch.float32, (4,)),
    ("IUGC", torch.float32, (3, 2)),
])
def test_item_per_type(dataset, task_id, dtype, shape):
    for index in dataset.task_indices[task_id]:
        item = dataset[index]
        row = dataset.frame.iloc[index]
        assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
        assert item["target"].dtype == dtype and tuple(item["target"].shape) == shape
        assert item["task_id"] == task_id and item["task_type"] == row["task_name"]
        assert item["image_path"] == row["image_path"] and item["source"] == row["source"]
        assert item["orig_size"] == load_image(row["image_file"]).shape[:2]
        if dtype == torch.float32:
            assert 0 <= item["target"].min() and item["target"].max() <= 1
        if task_id == "cardiac_multi":
            assert set(item["target"].unique().tolist()) <= {0, 1, 2, 3}


def test_targets_sit_on_the_structure(dataset):
    """Normalised boxes scaled to the model frame cover the blob the image shows."""
    for index in dataset.task_indices["thyroid_nodule_det"]:
        item = dataset[index]
        gray = denormalize_image(item["image"]).mean(0)
        x0, y0, x1, y1 = (item["target"] * SIZE).round().int().tolist()
        inside = gray[y0:y1, x0:x1].mean()
        outside = (gray.sum() - gray[y0:y1, x0:x1].sum()) / (gray.numel() - (y1 - y0) * (x1 - x0))
        assert inside > 2 * outside
    for index in dataset.task_indices["FUGC"]:  # landmarks are bright dots
        item = dataset[index]
        gray = denormalize_image(item["image"]).mean(0)
        for x, y in (item["target"] * SIZE).tolist():
            assert gray[min(int(y), SIZE - 1), min(int(x), SIZE - 1)] > 0.6


def test_without_transforms_images_keep_their_size(data_root):
    ds = MultiTaskDataset(data_root, tasks=["breast_lesion"])
    item = ds[1]
    assert item["image"].shape[1:] == item["orig_size"] == item["target"].shape
    assert [t.task_id for t in ds.tasks] == ["breast_lesion"]
    gray = load_image(ds.frame.loc[0, "image_file"])  # even samples are grayscale on disk
    assert gray.shape[2] == 3 and (gray[..., 0] == gray[..., 1]).all()


def test_frame_subset_and_unknown_task(data_root):
    frame = read_root(data_root)
    ds = MultiTaskDataset(frame.iloc[[5, 30, 31]])
    assert len(ds) == 3 and list(ds.frame.index) == [0, 1, 2]
    with pytest.raises(KeyError, match="not in the manifest"):
        MultiTaskDataset(frame, tasks=["no_such_task"])


def test_collate_and_loader(dataset):
    sampler = TaskBatchSampler(dataset.task_indices, batch_size=4, strategy="uniform", seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    row_of = {s: i for i, s in enumerate(dataset.frame["source"])}
    batches = 0
    for batch in loader:
        n = len(batch["source"])
        assert batch["image"].shape == (n, 3, SIZE, SIZE) and batch["orig_size"].shape == (n, 2)
        assert batch["target"].shape[0] == n and isinstance(batch["task_id"], str)
        rows = [row_of[s] for s in batch["source"]]
        assert set(dataset.frame.loc[rows, "task_id"]) == {batch["task_id"]}
        batches += 1
    assert batches == len(sampler) == 16  # 8 tasks x ceil(6 / 4)
    with pytest.raises(ValueError, match="a batch must hold one task"):
        collate([dataset[dataset.task_indices["organ_cls"][0]], dataset[dataset.task_indices["FUGC"][0]]])


def test_missing_image_raises_with_line_and_file(make_root, tmp_path):
    root = make_root(tmp_path, tasks=["organ_cls"], n=3)
    ds = MultiTaskDataset(root)
    (root / "csv_files" / ds.frame.loc[1, "image_path"]).unlink()
    with pytest.raises(LayoutError, match=r"csv_files/organ_cls.csv:3: \.\./Classification/organ_cls/imgs/"
                                          r"organ_cls_001.png: image file not found"):
        ds[1]
    assert ds[0]["target"].item() == 0 and ds[2]["target"].item() == 2  # others still load, none replaced


def test_bad_mask_raises_with_line_and_file(make_root, tmp_path):
    root = make_root(tmp_path, tasks=["breast_lesion"], n=2)
    ds = MultiTaskDataset(root)
    mask_file = root / "csv_files" / ds.frame.loc[0, "mask_path"]
    cv2.imwrite(str(mask_file), np.full((40, 56), 4, np.uint8))
    with pytest.raises(LayoutError, match=r"breast_lesion.csv:2: .*masks/breast_lesion_000.png: "
                                          r"mask has value 4 >= num_classes 2"):
        ds[0]
    cv2.imwrite(str(mask_file), np.zeros((10, 10), np.uint8))
    with pytest.raises(LayoutError, match=r"breast_lesion.csv:2: .*mask is 10x10 but its image is 56x40"):
        ds[0]


def test_point_outside_image_raises_with_line(make_root, tmp_path):
    root = make_root(tmp_path, tasks=["FUGC"], n=2)
    frame = read_root(root)
    frame.at[1, "target"] = [[10.0, 5.0], [10.0, 500.0]]  # read_root cannot know image sizes
    with pytest.raises(LayoutError, match=r"FUGC.csv:3: .*point_2_xy \[10.0, 500.0\] lies outside the 64x44 image"):
        MultiTaskDataset(frame)[1]
