"""The submission writer: format, round trip through the scorer, path safety, model outputs."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from fmuia_lib.data.layout import read_root
from fmuia_lib.challenge.evaluate import evaluate_submission, validate_submission
from fmuia_lib.challenge.predict import (SubmissionError, predict_to_submission, records_from_ground_truth,
                               submission_path, to_pixels, write_submission)
from fmuia_lib.tasks import load_manifest, select_tasks
from conftest import TINY_MODEL

TASKS = load_manifest()


def test_perfect_round_trip(data_root, tmp_path):
    out = tmp_path / "sub"
    counts = write_submission(out, records_from_ground_truth(data_root))
    assert counts == {"segmentation": 12, "classification": 12, "detection": 12, "Regression": 12}
    assert validate_submission(out, data_root) == []
    report = evaluate_submission(data_root, out)
    assert report.complete and not any(n.startswith("INCOMPLETE") for n in report.notes)
    s = report.summary
    assert s["Segmentation_DSC"] == 1.0 and s["Segmentation_HD"] == 0.0
    assert s["Detection_IoU"] == pytest.approx(1.0, abs=1e-12)
    assert s["Regression_MRE"] == pytest.approx(0.0, abs=1e-9)
    assert s["Classification_Accuracy"] == 1.0 and s["Classification_MCC"] == 1.0
    assert (report.coverage["found"] == report.coverage["expected"]).all()


def test_written_format(data_root, tmp_path):
    out = tmp_path / "sub"
    write_submission(out, records_from_ground_truth(data_root))
    frame = read_root(data_root)
    seg = frame[frame["task_name"] == "segmentation"].iloc[0]
    written = cv2.imread(str(out / seg["mask_path"][3:]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, cv2.imread(seg["mask_file"], cv2.IMREAD_UNCHANGED))
    cls = json.loads((out / "classification_predictions.json").read_text())
    assert set(cls[0]) == {"image_path", "task_id", "predicted_class", "predicted_probs"}
    assert set(e["image_path"] for e in cls) == set(frame[frame["task_name"] == "classification"]["image_path"])
    det = json.loads((out / "detection_predictions.json").read_text())
    assert set(det[0]) == {"image_path", "task_id", "bbox_normalized", "bbox_pixels"}
    reg = json.loads((out / "regression_predictions.json").read_text())
    assert set(reg[0]) == {"image_path", "task_id", "predicted_points_normalized", "predicted_points_pixels"}
    assert len(reg[0]["predicted_points_pixels"]) == 2 * TASKS[reg[0]["task_id"]].num_classes


def test_to_pixels_multiplies_by_original_width_and_height():
    assert to_pixels([0.5, 0.25, 1.0, 1.0], (100, 200)).tolist() == [100.0, 25.0, 200.0, 100.0]
    assert to_pixels([-0.1, 1.2], (10, 10)).tolist() == [0.0, 10.0]  # clipped to the image
    # a batch: (N, 4) boxes or (N, K, 2) points with one (height, width) per image
    boxes = to_pixels([[0.5, 0.5, 1.0, 1.0], [0.0, 0.25, 0.5, 0.5]], [(10, 20), (100, 40)])
    np.testing.assert_array_equal(boxes, [[10, 5, 20, 10], [0, 25, 20, 50]])
    points = to_pixels([[[0.5, 0.5]], [[0.25, 1.0]]], [(10, 20), (100, 40)])
    np.testing.assert_array_equal(points, [[[10, 5]], [[10, 100]]])


@pytest.mark.parametrize("bad", ["/etc/passwd", "../../outside.png", "../a/../../outside.png",
                                 "C:/x.png", "..\\..\\x.png", "", "../"])
def test_paths_escaping_the_submission_are_refused(tmp_path, bad):
    with pytest.raises(SubmissionError, match="outside the submission folder"):
        submission_path(tmp_path / "sub", bad)


def test_writer_refuses_escape_and_writes_nothing_outside(tmp_path):
    record = {"task_id": "breast_lesion", "image_path": "../x.png", "mask_path": "../../evil.png",
              "mask": np.zeros((4, 4), np.uint8)}
    with pytest.raises(SubmissionError, match="outside the submission folder"):
        write_submission(tmp_path / "sub", [record])
    assert not (tmp_path / "evil.png").exists()
    assert submission_path(tmp_path, "../Segmentation/Two/a/masks/b.png") == tmp_path / "Segmentation/Two/a/masks/b.png"


@pytest.mark.parametrize("record, message", [
    ({"task_id": "nope", "image_path": "../a.png"}, "unknown task_id"),
    ({"task_id": "breast_2cls", "image_path": "../a.png", "probs": [0.5, 0.6]}, "sum to 1"),
    ({"task_id": "breast_2cls", "image_path": "../a.png", "probs": [1.0]}, "1 probabilities"),
    ({"task_id": "FUGC", "image_path": "../a.png", "points_normalized": [0.1] * 6, "orig_size": (9, 9)},
     "needs 2"),
    ({"task_id": "breast_lesion", "image_path": "../a.png", "mask_path": "../m.png",
      "mask": np.full((3, 3), 2)}, r"values must be in \[0, 2\)"),
    ({"task_id": "thyroid_nodule_det", "image_path": "../a.png", "box_normalized": [0, 0, 1, 1]}, "orig_size"),
])
def test_writer_refuses_bad_records(tmp_path, record, message):
    with pytest.raises(SubmissionError, match=message):
        write_submission(tmp_path / "sub", [record])


def test_writer_refuses_duplicates(tmp_path):
    record = {"task_id": "breast_2cls", "image_path": "../a.png", "probs": [0.5, 0.5]}
    with pytest.raises(SubmissionError, match="duplicate"):
        write_submission(tmp_path / "sub", [record, dict(record)])


class _KnownOutputs(torch.nn.Module):
    """A stand-in model with fixed model-frame outputs, to check the way back to pixels."""

    def __init__(self, tasks):
        super().__init__()
        self.task_ids = [t.task_id for t in tasks]
        self.tasks = {t.task_id: t for t in tasks}

    def predict(self, images, task_id):
        b, _, h, w = images.shape
        task = self.tasks[task_id]
        if task.task_type == "segmentation":
            probs = torch.zeros(b, task.num_classes, h, w)
            probs[:, 0] = 1.0
            probs[:, 0, : h // 2, : w // 2] = 0.0  # top-left quarter is class 1
            probs[:, 1, : h // 2, : w // 2] = 1.0
            return {"probs": probs}
        if task.task_type == "classification":
            return {"probs": torch.tensor([[0.25] * 4 + [0.0] * (task.num_classes - 4)]).repeat(b, 1)}
        if task.task_type == "detection":
            return {"boxes": torch.tensor([[0.25, 0.5, 0.75, 1.0]]).repeat(b, 1), "scores": torch.ones(b)}
        return {"points": torch.tensor([[[0.5, 0.25]] * task.num_classes]).repeat(b, 1, 1)}


def test_model_outputs_are_taken_back_to_original_pixels(data_root, tmp_path):
    tasks = select_tasks(["cardiac_multi", "organ_cls", "uterine_fibroid_det", "IUGC"])
    out = tmp_path / "sub"
    counts = predict_to_submission(_KnownOutputs(tasks), _subset_root(data_root, tmp_path, tasks), out,
                                   image_size=32, batch_size=4, progress=False)
    assert counts == {"segmentation": 6, "classification": 6, "detection": 6, "Regression": 6}
    frame = read_root(tmp_path / "subset")
    for _, row in frame.iterrows():
        h, w = cv2.imread(row["image_file"]).shape[:2]
        if row["task_name"] == "segmentation":
            mask = cv2.imread(str(out / row["mask_path"][3:]), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (h, w)
            expected = np.zeros((h, w), np.uint8)
            expected[: h // 2, : w // 2] = 1
            assert (mask != expected).mean() < 0.03  # up to a pixel row/column at the resized edge
    det = json.loads((out / "detection_predictions.json").read_text())
    reg = json.loads((out / "regression_predictions.json").read_text())
    cls = json.loads((out / "classification_predictions.json").read_text())
    sizes = {r["image_path"]: cv2.imread(r["image_file"]).shape[:2] for _, r in frame.iterrows()}
    for e in det:
        h, w = sizes[e["image_path"]]
        assert e["bbox_pixels"] == pytest.approx([0.25 * w, 0.5 * h, 0.75 * w, 1.0 * h])
    for e in reg:
        h, w = sizes[e["image_path"]]
        assert e["predicted_points_pixels"] == pytest.approx([0.5 * w, 0.25 * h] * 3)
    assert all(e["predicted_class"] == 0 and sum(e["predicted_probs"]) == pytest.approx(1.0) for e in cls)
    assert validate_submission(out, tmp_path / "subset") == []


def _subset_root(data_root, tmp_path, tasks):
    """A copy of the shared root's CSVs for ``tasks`` only (the images stay where they are)."""
    import shutil

    subset = tmp_path / "subset"
    (subset / "csv_files").mkdir(parents=True)
    for task in tasks:
        shutil.copy(data_root / "csv_files" / f"{task.task_id}.csv", subset / "csv_files")
        shutil.copytree(data_root / task.folder, subset / task.folder)
    return subset


def test_predict_with_a_real_network(data_root, tmp_path):
    from fmuia_lib.model import MultiTaskNet

    torch.manual_seed(0)
    tasks = select_tasks(["breast_lesion", "organ_cls", "thyroid_nodule_det", "FUGC"])
    model = MultiTaskNet(tasks, encoder_name="resnet18", encoder_weights=None)
    root = _subset_root(data_root, tmp_path, tasks)
    predict_to_submission(model, root, tmp_path / "sub", image_size=64, batch_size=8, progress=False)
    assert validate_submission(tmp_path / "sub", root) == []
    report = evaluate_submission(root, tmp_path / "sub")
    assert report.complete
    assert all(v is not None and np.isfinite(v) for v in report.summary.values())


def test_predict_command_from_a_checkpoint(data_root, tmp_path, capsys):
    from fmuia_lib.cli import main as fmuia
    from fmuia_lib.config import TrainConfig
    from fmuia_lib.training import train

    tasks = select_tasks(["breast_lesion", "organ_cls", "thyroid_nodule_det", "FUGC"])
    root = _subset_root(data_root, tmp_path, tasks)
    # the official recipe (grid detection head, linear landmark head), two steps
    config = TrainConfig(data_root=str(root), val_root=str(root), encoder=TINY_MODEL["encoder"], encoder_weights=None,
                         image_size=64, batch_size=4, epochs=None, max_steps=2, eval_every=2, num_workers=0,
                         out_dir=str(tmp_path / "run"))
    result = train(config, progress=False)
    out = tmp_path / "sub"
    assert fmuia(["predict", "--checkpoint", str(result.last_checkpoint), "--data", str(root),
                  "--out", str(out), "--device", "cpu"]) == 0
    assert "wrote a submission" in capsys.readouterr().out
    assert validate_submission(out, root) == []
