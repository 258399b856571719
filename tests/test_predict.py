"""Prediction without labels, and one path from model outputs to a score.

The trained fixture (``tiny_run``) is a 4-step ResNet-18 on four phantom subtasks; its
numbers mean nothing, but every prediction path must agree on them exactly.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import label_free_copy

from fmuia_lib.data import images
from fmuia_lib.data.dataset import MultiTaskDataset, PredictionDataset, collate
from fmuia_lib.data.layout import LayoutError, default_mask_path, read_root
from fmuia_lib.data.transforms import build_transforms
from fmuia_lib.challenge.evaluate import check_submission, evaluate_records, evaluate_submission
from fmuia_lib.challenge.predict import (SubmissionError, load_model, predict_records, predict_to_submission,
                               records_from_ground_truth, write_submission)
from fmuia_lib.training.validation import validate_whole_set


def _outputs(folder):
    """Every file of a submission folder: JSON parsed, masks as arrays."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".json":
            out[path.relative_to(folder).as_posix()] = json.loads(path.read_text())
        elif path.suffix == ".png":
            out[path.relative_to(folder).as_posix()] = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).tolist()
    return out


# -- reading without labels ----------------------------------------------------------------
def test_label_free_reading_needs_four_columns_and_opens_no_mask(tiny_run, tmp_path):
    val, _ = tiny_run
    bare = label_free_copy(val, tmp_path / "bare")
    frame = read_root(bare, labels=False)
    assert list(frame.columns[:4]) == ["image_path", "task_id", "task_name", "num_classes"]
    assert "mask_path" not in frame.columns and frame["target"].isna().all()
    with pytest.raises(LayoutError, match=r"missing columns \['point_1_xy'.*and 3 more problem"):
        read_root(bare)  # the labelled reading still refuses it (one line: the first problem, and a count)
    labelled = read_root(val, labels=False)  # label columns present: ignored
    assert not {"mask", "x_min", "point_1_xy"} & set(labelled.columns)
    assert labelled["mask_file"].isna().all() and "mask_path" in labelled.columns


def test_label_free_root_predicts_exactly_like_the_labelled_one(tiny_run, tmp_path):
    val, checkpoint = tiny_run
    model, size, _ = load_model(checkpoint)
    keep = label_free_copy(val, tmp_path / "keep", keep_mask_path=True)
    predict_to_submission(model, val, tmp_path / "from_labelled", size, batch_size=3, progress=False)
    predict_to_submission(model, keep, tmp_path / "from_bare", size, batch_size=3, progress=False)
    assert _outputs(tmp_path / "from_labelled") == _outputs(tmp_path / "from_bare")
    assert check_submission(tmp_path / "from_bare", val).errors == []
    assert evaluate_submission(val, tmp_path / "from_bare").complete


def test_without_mask_path_masks_go_where_the_challenge_docker_puts_them(tiny_run, tmp_path):
    val, checkpoint = tiny_run
    model, size, _ = load_model(checkpoint)
    bare = label_free_copy(val, tmp_path / "bare")
    counts = predict_to_submission(model, bare, tmp_path / "sub", size, progress=False)
    assert counts["segmentation"] == 4
    labelled = read_root(val).query("task_name == 'segmentation'").set_index("image_path")["mask_path"]
    for row in read_root(bare, labels=False).query("task_name == 'segmentation'").itertuples():
        # image_path with img -> mask (imgs/ -> masks/): the labelled root's mask_path
        relative = default_mask_path(row.image_path)
        assert relative == labelled[row.image_path]
        mask = cv2.imread(str(tmp_path / "sub" / relative[3:]), cv2.IMREAD_UNCHANGED)
        assert mask is not None and mask.shape == images.image_size(row.image_file)
    assert check_submission(tmp_path / "sub", bare).ok  # a test set's CSVs are enough to check
    scored = evaluate_submission(val, tmp_path / "sub")  # and the labelled root scores all of it
    assert scored.complete


def test_prediction_never_opens_a_mask(tiny_run, tmp_path, monkeypatch):
    val, checkpoint = tiny_run
    model, size, _ = load_model(checkpoint)
    import shutil

    copy = tmp_path / "val"
    shutil.copytree(val, copy)
    for mask in copy.rglob("masks/*.png"):
        mask.unlink()

    imread = cv2.imread

    def refuse_masks(path, *args):
        assert "/masks/" not in str(path), f"prediction opened the mask {path}"
        return imread(path, *args)
    monkeypatch.setattr(cv2, "imread", refuse_masks)
    counts = predict_to_submission(model, copy, tmp_path / "sub", size, progress=False)
    assert sum(counts.values()) == 16


def test_images_of_any_mode_are_read_as_rgb(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    cases = {
        "gray.png": gray,
        "rgb.png": np.dstack([gray, 255 - gray, gray // 2]),  # stored BGR
        "rgba.png": np.dstack([gray, gray, gray, np.full_like(gray, 7)]),
        "deep.png": gray.astype(np.uint16) * 256 + 3,  # 16-bit: the high byte is the 8-bit value
        "photo.jpg": np.dstack([gray, gray, gray]),
    }
    for name, data in cases.items():
        cv2.imwrite(str(tmp_path / name), data)
    for name in cases:
        image = images.read_image(tmp_path / name)
        assert image.shape == (30, 40, 3) and image.dtype == np.uint8, name
        expected = cv2.cvtColor(cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(image, expected)  # what the challenge's own code reads
    np.testing.assert_array_equal(images.read_image(tmp_path / "deep.png")[..., 0], gray)
    np.testing.assert_array_equal(images.read_image(tmp_path / "rgb.png")[..., 0], gray // 2)
    # a palette PNG is read through the same rules
    from PIL import Image
    Image.fromarray(gray).convert("P").save(tmp_path / "palette.png")
    assert images.read_image(tmp_path / "palette.png").shape == (30, 40, 3)


def test_prediction_dataset_reads_every_image_mode_in_a_loader(make_root, tmp_path):
    root = make_root(tmp_path, tasks=["organ_cls", "breast_lesion"], n=4)
    rows = read_root(root).query("task_id == 'organ_cls'")
    first, second = rows.iloc[0]["image_file"], rows.iloc[1]["image_file"]  # both PNG
    # the first becomes 16-bit, the second RGBA: both are still read and predicted
    cv2.imwrite(first, cv2.imread(first, cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 256)
    colour = cv2.imread(second, cv2.IMREAD_COLOR)
    cv2.imwrite(second, np.dstack([colour, np.full(colour.shape[:2], 255, np.uint8)]))
    dataset = PredictionDataset(root, transforms=build_transforms(32, train=False))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate, num_workers=1,
                                         sampler=dataset.task_indices["organ_cls"])
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 32, 32) and "target" not in batch
    assert batch["orig_size"].tolist() == [list(images.image_size(first)), list(images.image_size(second))]


# -- one path from model outputs to a score -----------------------------------------------------
def test_validate_equals_evaluating_the_written_submission(tiny_run, tmp_path):
    val, checkpoint = tiny_run
    model, size, _ = load_model(checkpoint)
    val_set = MultiTaskDataset(val, transforms=build_transforms(size, train=False))
    ours = validate_whole_set(model, val_set, "cpu", batch_size=3)
    predict_to_submission(model, val, tmp_path / "sub", size, batch_size=3, device="cpu", progress=False)
    report = evaluate_submission(val, tmp_path / "sub")
    theirs = report.per_task.set_index("task_id")
    assert set(ours) == set(theirs.index) == {"cardiac_multi", "organ_cls", "thyroid_nodule_det", "IUGC"}
    compared = 0
    for task_id, scores in ours.items():
        assert scores["num_samples"] == theirs.loc[task_id, "num_samples"] == 4
        assert 0.0 <= scores["score"] <= 1.0
        for metric, value in scores.items():
            if metric in theirs.columns and isinstance(value, float):
                assert value == pytest.approx(float(theirs.loc[task_id, metric]), abs=1e-9), (task_id, metric)
                compared += 1
    assert compared == 11  # DSC, HD, HD95; 5 classification metrics; IoU; MRE, NMRE
    assert ours["IUGC"]["MRE"] > 0 and ours["cardiac_multi"]["HD"] > 0
    per_class = report.per_class.query("task_id == 'cardiac_multi'").sort_values("class_index")
    assert ours["cardiac_multi"]["per_class"]["HD"] == pytest.approx(per_class["HD"].tolist(), abs=1e-9)


def test_validation_scores_at_the_original_resolution(tiny_run):
    """A perfect mask in the model frame is not a perfect mask on disk: validation sees the
    difference, as the challenge does."""
    val, checkpoint = tiny_run
    model, size, _ = load_model(checkpoint)
    val_set = MultiTaskDataset(val, transforms=build_transforms(size, train=False))
    records = [r for r in predict_records(model, PredictionDataset(val, build_transforms(size, False)),
                                          batch_size=4) if r["task_id"] == "cardiac_multi"]
    shapes = {r["mask"].shape for r in records}
    assert all(h > size and w > size for h, w in shapes)  # masks come back at the image's size
    report = evaluate_records(val, records)
    row = report.per_task.set_index("task_id").loc["cardiac_multi"]
    assert validate_whole_set(model, val_set, "cpu")["cardiac_multi"]["HD"] == pytest.approx(row["HD"], abs=1e-9)


def test_records_in_memory_score_like_the_files(data_root, tmp_path):
    records = records_from_ground_truth(data_root)
    rng = np.random.default_rng(1)
    for record in records:  # imperfect predictions of every kind
        if "mask" in record:
            record["mask"] = np.roll(record["mask"], int(rng.integers(-3, 4)), axis=1)
        elif "probs" in record:
            probs = rng.random(len(record["probs"]))
            record["probs"] = probs / probs.sum()
        else:
            key = "box_normalized" if "box_normalized" in record else "points_normalized"
            record[key] = np.clip(np.asarray(record[key]) + rng.normal(0, 0.02, len(record[key])), 0, 1)
    write_submission(tmp_path / "sub", records)
    from_files = evaluate_submission(data_root, tmp_path / "sub")
    in_memory = evaluate_records(data_root, records)
    assert from_files.to_dict() == in_memory.to_dict()
    assert from_files.summary["Segmentation_DSC"] < 1.0


def test_a_task_the_model_lacks_is_refused_before_anything_is_written(tiny_run, data_root, tmp_path):
    _, checkpoint = tiny_run
    model, size, _ = load_model(checkpoint)
    with pytest.raises(SubmissionError, match="no head for task"):
        predict_to_submission(model, data_root, tmp_path / "sub", size, progress=False)
    assert not (tmp_path / "sub").exists()


def test_symlinks_cannot_take_writes_outside_the_output_folder(data_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "Segmentation").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SubmissionError, match="outside the output folder"):
        write_submission(sub, records_from_ground_truth(data_root))
    assert list(outside.iterdir()) == []
    (sub / "Segmentation").unlink()
    (sub / "classification_predictions.json").symlink_to(outside / "stolen.json")
    with pytest.raises(SubmissionError, match="outside the output folder"):
        write_submission(sub, records_from_ground_truth(data_root))
    assert list(outside.iterdir()) == []


def test_ground_truth_stored_as_16_bit_or_rgb_is_read_right(make_root, tmp_path):
    root = make_root(tmp_path, tasks=["cardiac_multi"], n=3)
    frame = read_root(root)
    perfect = records_from_ground_truth(root)
    for i, mask_file in enumerate(frame["mask_file"]):  # rewrite the ground truth, not the predictions
        mask = cv2.imread(mask_file, cv2.IMREAD_UNCHANGED)
        cv2.imwrite(mask_file, mask.astype(np.uint16) if i % 2 == 0 else np.dstack([mask] * 3))
    write_submission(tmp_path / "sub", perfect)
    report = evaluate_submission(root, tmp_path / "sub")
    assert report.summary["Segmentation_DSC"] == 1.0 and report.summary["Segmentation_HD"] == 0.0
    dataset = MultiTaskDataset(root)
    assert dataset[0]["target"].max().item() == 3  # training reads them alike


# -- a batch of one, and images that cannot be read ------------------------------------------
@pytest.mark.parametrize("landmark_head,det_head", [("linear", "grid"), ("heatmap", "centernet"),
                                                    ("sigmoid", "grid")])
def test_a_32_px_model_predicts_batches_of_one(make_root, tmp_path, landmark_head, det_head):
    """At 32 px the deepest map is 1 x 1: smp's FPN GroupNorm (32 groups of 32 channels) then
    holds one value per group for a batch of one, which PyTorch refuses even in eval mode."""
    from conftest import RUN_TASKS, TINY_MODEL

    from fmuia_lib.model import MultiTaskNet
    from fmuia_lib.tasks import select_tasks

    root = make_root(tmp_path, tasks=RUN_TASKS, n=3)  # 3 images: batches of 2 end in a batch of one
    model = MultiTaskNet(select_tasks(RUN_TASKS), encoder_name=TINY_MODEL["encoder"], encoder_weights=None,
                         fpn_pyramid_channels=64, fpn_segmentation_channels=32, det_head=det_head,
                         landmark_head=landmark_head).eval()
    dataset = PredictionDataset(root, transforms=build_transforms(32, train=False))
    for batch_size in (1, 2):
        records = list(predict_records(model, dataset, batch_size=batch_size, device="cpu"))
        assert len(records) == len(dataset) == 12
    counts = predict_to_submission(model, root, tmp_path / "out", 32, batch_size=1, device="cpu", progress=False)
    assert sum(counts.values()) == 12


def test_a_lone_value_per_group_normalises_to_the_bias():
    from fmuia_lib.model import OneValueGroupNorm, guard_group_norms

    torch.manual_seed(0)
    plain = torch.nn.GroupNorm(4, 4)
    torch.nn.init.normal_(plain.weight), torch.nn.init.normal_(plain.bias)
    guarded = guard_group_norms(torch.nn.Sequential(torch.nn.GroupNorm(4, 4)))[0]
    assert isinstance(guarded, OneValueGroupNorm)
    guarded.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(guarded(x), plain(x))  # any other shape: GroupNorm itself
    lone = torch.randn(1, 4, 1, 1, requires_grad=True)
    with pytest.raises(ValueError):
        plain(lone)
    out = guarded(lone)
    assert torch.equal(out.detach(), plain.bias.detach().view(1, 4, 1, 1))
    out.sum().backward()
    assert torch.equal(lone.grad, torch.zeros_like(lone))  # the output does not depend on the input


def _damage(root):
    """Cut one PNG short (no decoder reads it) and store another as BMP bytes under its .png
    name (cv2 reads it by content, as the challenge's code does); return their image paths."""
    files = sorted(root.rglob("imgs/*.png"))
    broken, bmp = files[0], files[-1]
    data = broken.read_bytes()
    broken.write_bytes(data[:len(data) // 3])
    image = cv2.imread(str(bmp), cv2.IMREAD_UNCHANGED)
    bmp.write_bytes(cv2.imencode(".bmp", image)[1].tobytes())
    return broken, bmp


def test_predict_refuses_an_unreadable_image_by_default_and_falls_back_when_asked(tiny_run, tmp_path, capsys):
    from fmuia_lib.cli import main as fmuia

    val, checkpoint = tiny_run
    data = label_free_copy(val, tmp_path / "test_set", keep_mask_path=True)
    broken, bmp = _damage(data)
    assert fmuia(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out",
                  str(tmp_path / "strict"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fmuia predict: error:" in err
    assert fmuia(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out",
                  str(tmp_path / "lax"), "--device", "cpu", "--unreadable", "fallback", "--batch-size", "1"]) == 0
    err = capsys.readouterr().err
    assert "1 image(s) could not be read" in err and broken.name in err and bmp.name not in err
    report = evaluate_submission(val, tmp_path / "lax")
    assert report.complete  # every row predicted, the unreadable one included

    # the BMP-in-PNG image is read as the challenge reads it: the same pixels as cv2.imread
    assert np.array_equal(images.read_image(bmp, by_content=True),
                          cv2.cvtColor(cv2.imread(str(bmp), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    with pytest.raises(images.ImageReadError, match="BMP file whatever its name"):
        images.read_image(bmp)
