"""The phantom: reproducibility, layout, labels that follow from the image, class balance,
output-folder safety and argument errors."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from fmuia_lib.cli import main as cli_main
from fmuia_lib.data.layout import read_root, validate_root
from fmuia_lib.sources.phantom import PhantomError, generate_phantom, render, render_sample
from fmuia_lib.sources.phantom.render import _draw_class, class_plan, image_rng
from fmuia_lib.sources.phantom.recipes import RECIPES
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, load_manifest

TASKS = list(load_manifest().values())


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    """Every task, 3 train + 2 val images, one process."""
    out = tmp_path_factory.mktemp("phantom") / "p"
    generate_phantom(out, seed=7, n_train=3, n_val=2, workers=1)
    return out


def test_every_manifest_recipe_exists():
    missing = {t.task_id: t.phantom_recipe for t in TASKS if t.phantom_recipe not in RECIPES}
    assert not missing


def test_layout_is_valid_and_complete(phantom):
    for split, n in (("train", 3), ("val", 2)):
        root = phantom / split
        assert validate_root(root) == []
        frame = read_root(root)
        assert Counter(frame["task_id"]) == {t.task_id: n for t in TASKS}
        for task in TASKS:  # images sit in the task's challenge folder, masks where img -> mask puts them
            rows = frame[frame["task_id"] == task.task_id]
            assert all(p.startswith(f"../{task.folder}/imgs/") for p in rows["image_path"])
            if task.task_type == SEGMENTATION:
                assert list(rows["mask_path"]) == [p.replace("/imgs/", "/masks/") for p in rows["image_path"]]
    summary = json.loads((phantom / "phantom.json").read_text())
    assert summary["seed"] == 7 and summary["counts"]["val"]["IUGC"] == 2
    assert summary["files"] == len(_files(phantom / "train")) + len(_files(phantom / "val"))


def test_same_seed_same_bytes_whatever_the_workers(phantom, tmp_path):
    again = generate_phantom(tmp_path / "again", seed=7, n_train=3, n_val=2, workers=2)
    assert again["fingerprint"] == json.loads((phantom / "phantom.json").read_text())["fingerprint"]
    assert _files(tmp_path / "again") == _files(phantom)
    other = generate_phantom(tmp_path / "other", seed=8, n_train=3, n_val=2, tasks=["fetal_head"], workers=1)
    assert other["fingerprint"] != again["fingerprint"]


def test_a_task_subset_gives_the_same_images(phantom, tmp_path):
    generate_phantom(tmp_path / "sub", seed=7, n_train=3, n_val=2, tasks=["IUGC", "breast_2cls"], workers=1)
    sub = _files(tmp_path / "sub")
    full = _files(phantom)
    picked = [k for k in sub if k != "phantom.json"]
    assert len(picked) == 2 * 5 + 4  # images of both tasks + their CSVs in train and val
    assert all(sub[k] == full[k] for k in picked)


def test_images_are_heterogeneous_8bit_and_black_outside_the_view(phantom):
    frame = read_root(phantom / "train")
    sizes = set()
    for task in TASKS:
        path = frame[frame["task_id"] == task.task_id]["image_file"].iloc[0]
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.ndim == 2, path
        h, w = image.shape
        tw, th = task.phantom_size
        assert abs(w - tw) <= 0.07 * tw and abs(h - th) <= 0.07 * th, path
        sizes.add((w, h))
        if task.phantom_probe == "convex":  # the corners beside the sector are black
            assert image[0, 0] == 0 and image[0, -1] == 0 and image[-1, 0] == 0, path
        assert image.std() > 10, f"{path} looks blank"
    assert len(sizes) > 15


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.task_id)
def test_labels_follow_the_image(task):
    for index in range(3):
        sample = render(task, image_rng(123, task.task_id, "train", index))
        image, target, label_map = sample.image, sample.target, sample.label_map
        h, w = image.shape
        assert label_map.shape == (h, w)
        if task.task_type == SEGMENTATION:
            present = np.unique(target)
            assert target.dtype == np.uint8 and present.max() < task.num_classes
            assert set(range(1, task.num_classes)) <= set(present.tolist())  # every structure visible
        elif task.task_type == CLASSIFICATION:
            assert 0 <= target < task.num_classes
        elif task.task_type == DETECTION:
            ys, xs = np.nonzero(label_map)
            assert xs.size > 0
            assert list(target) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert 0 <= target[0] < target[2] <= w and 0 <= target[1] < target[3] <= h
        elif task.task_type == REGRESSION:
            assert target.shape == (task.num_points, 2)
            assert (target >= 0).all() and (target[:, 0] < w).all() and (target[:, 1] < h).all()


def test_lesion_is_darker_or_brighter_than_its_surroundings():
    """The label follows from the image: the labelled region differs from a ring around it."""
    for task_id in ("breast_lesion", "fetal_head", "carotid_artery", "uterine_fibroid_det"):
        task = load_manifest()[task_id]
        gaps = []
        for index in range(4):
            sample = render(task, image_rng(5, task_id, "train", index))
            inside = sample.label_map > 0
            ring = cv2.dilate(inside.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & ~inside
            gaps.append(abs(float(sample.image[inside].mean()) - float(sample.image[ring & (sample.image > 0)].mean())))
        assert np.mean(gaps) > 8, (task_id, gaps)


def test_csv_labels_match_the_renders(phantom):
    frame = read_root(phantom / "val")
    for task_id in ("thyroid_nodule_det", "FUGC", "organ_cls", "cervix_multi"):
        task = load_manifest()[task_id]
        row = frame[frame["task_id"] == task_id].iloc[1]
        cls = class_plan(task, 7, "val", 2)[1] if task.task_type == CLASSIFICATION else None
        sample = render(task, image_rng(7, task_id, "val", 1), cls)
        assert np.array_equal(cv2.imread(row["image_file"], cv2.IMREAD_UNCHANGED), sample.image)
        if task.task_type == SEGMENTATION:
            assert np.array_equal(cv2.imread(row["mask_file"], cv2.IMREAD_UNCHANGED), sample.target)
        else:
            np.testing.assert_allclose(np.asarray(row["target"], dtype=float), np.asarray(sample.target, dtype=float))


def test_class_balance_follows_the_manifest_weights():
    rng = np.random.default_rng(0)
    for task in TASKS:
        if task.task_type != CLASSIFICATION:
            continue
        draws = np.bincount([_draw_class(task, rng) for _ in range(3000)], minlength=task.num_classes) / 3000
        weights = np.asarray(task.phantom_class_weights or [1.0] * task.num_classes)
        np.testing.assert_allclose(draws, weights / weights.sum(), atol=0.03, err_msg=task.task_id)
        # a split's class plan holds each class's share exactly (largest remainder)
        for count in (16, 48, 7):
            plan = class_plan(task, 0, "val", count)
            share = weights / weights.sum() * count
            counts = np.bincount(plan, minlength=task.num_classes)
            assert len(plan) == count and np.all(np.abs(counts - share) < 1), (task.task_id, count, counts)
        assert class_plan(task, 0, "val", 16) == class_plan(task, 0, "val", 16)
        assert class_plan(task, 0, "val", 48) != class_plan(task, 1, "val", 48)  # shuffled by the seed
    liver = load_manifest()["liver_lesion_2cls"]  # 0.6 / 0.4
    assert np.bincount(class_plan(liver, 0, "val", 16)).tolist() == [10, 6]
    # and through the full renderer: the class it is given
    task = load_manifest()["breast_3cls"]
    assert [render(task, image_rng(1, task.task_id, "train", i), cls=c).target
            for i, c in enumerate([2, 0, 1, 1])] == [2, 0, 1, 1]


def test_render_sample_is_deterministic():
    task = load_manifest()["fetal_femur"]
    a, ta = render_sample(task, 3)
    b, tb = render_sample(task, 3)
    c, _ = render_sample(task, 4)
    assert np.array_equal(a, b) and np.array_equal(ta, tb)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_output_folder_safety(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PhantomError, match="not empty"):
        generate_phantom(out, n_train=1, n_val=1, tasks=["cervix"], workers=1)
    generate_phantom(out, n_train=1, n_val=1, tasks=["cervix"], workers=1, overwrite=True)
    generate_phantom(out, n_train=2, n_val=1, tasks=["FUGC"], workers=1, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"  # never removed
    assert not list((out / "train").rglob("cervix_*.png"))  # the earlier phantom is gone
    assert len(list((out / "train").rglob("FUGC_*.png"))) == 2
    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    (foreign / "train" / "real.png").write_bytes(b"x")
    with pytest.raises(PhantomError, match="did not write"):
        generate_phantom(foreign, n_train=1, n_val=1, tasks=["cervix"], workers=1, overwrite=True)
    assert (foreign / "train" / "real.png").exists()


def test_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(PhantomError, match="no_such_task"):
        generate_phantom(tmp_path / "a", tasks=["no_such_task"])
    with pytest.raises(PhantomError, match="--train"):
        generate_phantom(tmp_path / "b", n_train=0)
    with pytest.raises(PhantomError, match="--workers"):
        generate_phantom(tmp_path / "c", workers=0)
    assert cli_main(["data", "phantom", "--out", str(tmp_path / "d"), "--tasks", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_cli_writes_a_phantom(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["data", "phantom", "--out", str(out), "--train", "1", "--val", "1",
                     "--tasks", "lung_2cls", "fetal_head", "--workers", "1", "--seed", "3"]) == 0
    assert "fingerprint" in capsys.readouterr().out
    assert validate_root(out / "train") == [] and validate_root(out / "val") == []
    assert sorted(p.name for p in (out / "train" / "csv_files").iterdir()) == ["fetal_head.csv", "lung_2cls.csv"]
