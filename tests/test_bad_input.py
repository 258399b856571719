"""Bad input to the commands: one row per case, run through ``fmuia_lib.cli.main``.

Each row: an id, the command line (``{data}`` a labelled phantom data root, ``{pred}`` a
perfect submission for it, ``{ckpt}`` a trained checkpoint for its tasks, ``{tmp}`` a
scratch folder), a function that breaks the input, the exit status, and words the
message must hold. Exit 2 must come with exactly one ``error:`` message on stderr and
no traceback; exit 1 and 0 (validate-submission's errors and warnings) print findings
on stdout. Adding a case is adding a row.
"""
from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
import torch

from fmuia_lib.cli import main as fmuia
from fmuia_lib.data.layout import read_root
from fmuia_lib.predict import records_from_ground_truth, write_submission


@dataclass
class World:
    data: Path
    pred: Path
    ckpt: Path
    tmp: Path

    def argv(self, line: str) -> list[str]:
        return shlex.split(line.format(data=self.data, pred=self.pred, ckpt=self.ckpt, tmp=self.tmp))


# -- ways to break the input ----------------------------------------------------------------------
def nothing(w: World) -> None:
    pass


def edit_entry(file_name: str, task_type: str | None = None, **changes) -> Callable[[World], None]:
    """Change the first entry of a prediction JSON file (of ``task_type`` rows when given)."""
    def edit(w: World) -> None:
        path = w.pred / file_name
        items = json.loads(path.read_text())
        items[0].update(changes)
        path.write_text(json.dumps(items))
    return edit


def box(*pixels: float) -> Callable[[World], None]:
    return edit_entry("detection_predictions.json", bbox_pixels=list(pixels))


def probs_summing_to_3(w: World) -> None:
    path = w.pred / "classification_predictions.json"
    items = json.loads(path.read_text())
    items[0]["predicted_probs"] = [1.0, 1.0, 1.0] + [0.0] * (len(items[0]["predicted_probs"]) - 3)
    path.write_text(json.dumps(items))


def probs_summing_to(total: float) -> Callable[[World], None]:
    def scale(w: World) -> None:
        path = w.pred / "classification_predictions.json"
        items = json.loads(path.read_text())
        items[0]["predicted_probs"] = [p * total for p in items[0]["predicted_probs"]]
        path.write_text(json.dumps(items))
    return scale


def class_not_argmax(w: World) -> None:
    path = w.pred / "classification_predictions.json"
    items = json.loads(path.read_text())
    probs = items[0]["predicted_probs"]
    items[0]["predicted_class"] = (int(np.argmax(probs)) + 1) % len(probs)
    path.write_text(json.dumps(items))


def first_pred_mask(w: World) -> Path:
    row = read_root(w.data).query("task_name == 'segmentation'").iloc[0]
    return w.pred / row["mask_path"][3:]


def rewrite_pred_mask(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[World], None]:
    def rewrite(w: World) -> None:
        path = first_pred_mask(w)
        cv2.imwrite(str(path), change(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)))
    return rewrite


def delete_gt_mask(w: World) -> None:
    Path(read_root(w.data).query("task_name == 'segmentation'").iloc[1]["mask_file"]).unlink()


def truncated_checkpoint(w: World) -> None:
    (w.tmp / "truncated.pt").write_bytes(w.ckpt.read_bytes()[:5000])


def foreign_checkpoint(w: World) -> None:
    torch.save({"weights": torch.zeros(3)}, w.tmp / "foreign.pt")
    (w.tmp / "notes.pt").write_text("root:x:0:0:root:/root:/bin/bash\n")  # any file at all


def delete_an_image(w: World) -> None:
    next(w.data.rglob("images/*.png")).unlink()


def out_is_a_file(w: World) -> None:
    (w.tmp / "out.txt").write_text("keep me")


def symlink_under_out(w: World) -> None:
    (w.tmp / "out").mkdir()
    (w.tmp / "elsewhere").mkdir()
    (w.tmp / "out" / "Segmentation").symlink_to(w.tmp / "elsewhere", target_is_directory=True)


def folder_at_json(w: World) -> None:
    (w.tmp / "report.json").mkdir()


def empty_folder(w: World) -> None:
    (w.tmp / "empty").mkdir()


def damaged_checkpoints(w: World) -> None:
    """Copies of the trained checkpoint as training, predict and export may meet them: empty,
    truncated, one byte flipped, the model-only best.pt; and the run's config file."""
    data = w.ckpt.read_bytes()
    (w.tmp / "empty.pt").write_bytes(b"")
    (w.tmp / "truncated.pt").write_bytes(data[:len(data) // 3])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    (w.tmp / "flipped.pt").write_bytes(bytes(flipped))
    shutil.copyfile(w.ckpt.with_name("best.pt"), w.tmp / "best.pt")
    shutil.copyfile(w.ckpt.parents[1] / "config.yaml", w.tmp / "run.yaml")


@dataclass(frozen=True)
class Case:
    id: str
    line: str
    breaks: Callable[[World], None]
    status: int
    words: tuple[str, ...]


def row(id: str, line: str, breaks: Callable[[World], None], status: int, *words: str) -> Case:
    return Case(id, line, breaks, status, words)


PREDICT = "predict --checkpoint {ckpt} --data {data} --device cpu"
EVALUATE = "evaluate --data {data} --pred {pred}"
CHECK = "validate-submission {pred} --data {data}"
RESUME = "train --config {tmp}/run.yaml --set out_dir={tmp}/resumed --resume"
CASES = [
    # -- predict ------------------------------------------------------------------------------------
    row("predict out is the data root", PREDICT + " --out {data}", nothing, 2, "is the data root"),
    row("predict out inside the data root", PREDICT + " --out {data}/sub", nothing, 2, "inside the data root"),
    row("predict out contains the data root", PREDICT + " --out {data}/..", nothing, 2, "contains the data root"),
    row("predict out is a file", PREDICT + " --out {tmp}/out.txt", out_is_a_file, 2, "out.txt", "is a file"),
    row("predict symlink under out", PREDICT + " --out {tmp}/out", symlink_under_out, 2, "outside the output folder"),
    row("predict batch size 0", PREDICT + " --out {tmp}/out --batch-size 0", nothing, 2, "--batch-size", "at least 1"),
    row("predict workers -1", PREDICT + " --out {tmp}/out --workers -1", nothing, 2, "--workers"),
    row("predict unknown device", "predict --checkpoint {ckpt} --data {data} --out {tmp}/out --device gpu0", nothing, 2,
        "--device", "not a device name"),
    row("predict image missing", PREDICT + " --out {tmp}/out", delete_an_image, 2, "csv_files/", "image file not found"),
    row("predict image missing, read by a worker", PREDICT + " --out {tmp}/out --workers 1", delete_an_image, 2,
        "csv_files/", "image file not found"),
    row("predict missing checkpoint", "predict --checkpoint {tmp}/none.pt --data {data} --out {tmp}/out", nothing, 2,
        "none.pt", "not found"),
    row("predict truncated checkpoint", "predict --checkpoint {tmp}/truncated.pt --data {data} --out {tmp}/out",
        truncated_checkpoint, 2, "truncated.pt", "cannot be read"),
    row("predict foreign checkpoint", "predict --checkpoint {tmp}/foreign.pt --data {data} --out {tmp}/out",
        foreign_checkpoint, 2, "foreign.pt", "not an fmuia checkpoint"),
    row("predict text file as checkpoint", "predict --checkpoint {tmp}/notes.pt --data {data} --out {tmp}/out",
        foreign_checkpoint, 2, "notes.pt", "cannot be read"),
    row("predict data root missing", "predict --checkpoint {ckpt} --data {tmp}/empty --out {tmp}/out", empty_folder,
        2, "csv_files"),
    # -- evaluate -----------------------------------------------------------------------------------
    row("evaluate probabilities sum to 3", EVALUATE, probs_summing_to_3, 2, "classification_predictions.json[0]",
        "not a distribution"),
    row("evaluate class 99", EVALUATE, edit_entry("classification_predictions.json", predicted_class=99), 2,
        "classification_predictions.json[0]", "predicted_class 99"),
    row("evaluate class -1", EVALUATE, edit_entry("classification_predictions.json", predicted_class=-1), 2,
        "predicted_class -1"),
    row("evaluate inverted box", EVALUATE, box(50, 40, 10, 80), 2, "detection_predictions.json[0]", "not well formed"),
    row("evaluate box outside the image", EVALUATE, box(5000, 10, 5100, 80), 2, "wholly outside"),
    row("evaluate box of no area is scored", EVALUATE, box(10, 10, 10, 80), 0, "has no area"),
    row("evaluate mask value 255", EVALUATE, rewrite_pred_mask(lambda m: m * 255), 2, "has value 255"),
    row("evaluate colour mask", EVALUATE, rewrite_pred_mask(lambda m: np.dstack([m, m * 0, m])), 2, "colour image"),
    row("evaluate pred folder missing", "evaluate --data {data} --pred {tmp}/nonexistent", nothing, 2, "nonexistent",
        "not found"),
    row("evaluate pred is the data root", "evaluate --data {data} --pred {data}", nothing, 2, "is the data root"),
    row("evaluate json is a folder", EVALUATE + " --json {tmp}/report.json", folder_at_json, 2, "report.json",
        "is a folder"),
    row("evaluate ground-truth mask missing", EVALUATE, delete_gt_mask, 2, "csv_files/", "mask file not found"),
    row("evaluate data root missing", "evaluate --data {tmp}/empty --pred {pred}", empty_folder, 2, "csv_files"),
    row("evaluate 16-bit mask is scored, with a warning", EVALUATE, rewrite_pred_mask(lambda m: m.astype(np.uint16)),
        0, "16-bit"),
    # -- validate-submission ------------------------------------------------------------------------
    row("check class not the arg-max", CHECK, class_not_argmax, 0, "WARNING", "not the arg-max"),
    row("check probabilities not a distribution", CHECK, probs_summing_to_3, 1, "ERROR", "not a distribution"),
    row("check probabilities slightly off", CHECK, probs_summing_to(0.995), 0, "WARNING", "sum to 0.995000"),
    row("check box partly outside", CHECK, box(0, 0, 5000, 5000), 0, "WARNING", "reaches outside"),
    row("check mask resolution", CHECK, rewrite_pred_mask(lambda m: m[::2, ::2]), 0, "WARNING", "resized"),
    row("check 16-bit mask", CHECK, rewrite_pred_mask(lambda m: m.astype(np.uint16)), 0, "WARNING", "16-bit"),
    row("check rgb mask", CHECK, rewrite_pred_mask(lambda m: np.dstack([m, m, m])), 0, "WARNING", "3 channels"),
    row("check mask value 255", CHECK, rewrite_pred_mask(lambda m: m * 255), 1, "ERROR", "has value 255"),
    row("check submission folder missing", "validate-submission {tmp}/nonexistent --data {data}", nothing, 2,
        "nonexistent", "not found"),
    row("check data root missing", "validate-submission {pred} --data {tmp}/empty", empty_folder, 2, "csv_files"),
    # -- damaged checkpoints, divergence, resuming with other settings --------------------------------
    row("train resume from an empty file", RESUME + " {tmp}/empty.pt", damaged_checkpoints, 2, "empty.pt", "empty"),
    row("train resume from a truncated file", RESUME + " {tmp}/truncated.pt", damaged_checkpoints, 2, "truncated.pt",
        "cannot be read"),
    row("train resume from a flipped byte", RESUME + " {tmp}/flipped.pt", damaged_checkpoints, 2, "flipped.pt",
        "checksum"),
    row("train resume from best.pt", RESUME + " {tmp}/best.pt", damaged_checkpoints, 2, "best.pt",
        "holds the model only"),
    row("train resume with another image_size", RESUME + " {ckpt} --set image_size=96", damaged_checkpoints, 2,
        "cannot resume", "image_size (checkpoint: 64, now: 96)"),
    row("train resume with another seed", RESUME + " {ckpt} --set seed=7", damaged_checkpoints, 2, "cannot resume",
        "seed (checkpoint: 1, now: 7)"),
    row("train diverges", "train --config {tmp}/run.yaml --set out_dir={tmp}/diverged --set lr=1e38",
        damaged_checkpoints, 2, "diverged at step", "no checkpoint was written", "lr=1e+38"),
    row("predict corrupted checkpoint", "predict --checkpoint {tmp}/flipped.pt --data {data} --out {tmp}/out",
        damaged_checkpoints, 2, "flipped.pt", "checksum"),
    row("predict empty checkpoint", "predict --checkpoint {tmp}/empty.pt --data {data} --out {tmp}/out",
        damaged_checkpoints, 2, "empty.pt", "empty"),
    row("export corrupted checkpoint", "export --checkpoint {tmp}/flipped.pt --out {tmp}/out", damaged_checkpoints,
        2, "flipped.pt", "checksum"),
]


@pytest.fixture
def world(tiny_run, tmp_path) -> World:
    val, checkpoint = tiny_run
    data = tmp_path / "data"
    shutil.copytree(val, data)
    pred = tmp_path / "pred"
    write_submission(pred, records_from_ground_truth(data))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return World(data, pred, checkpoint, scratch)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: World, capsys):
    case.breaks(world)
    before = {p: p.stat().st_mtime_ns for p in world.data.rglob("*") if p.is_file()}
    status = fmuia(world.argv(case.line))
    out, err = capsys.readouterr()
    assert status == case.status, (out[-2000:], err)
    text = err if status == 2 else out
    for word in case.words:
        assert word in text, (word, text[-2000:])
    if status == 2:
        assert err.count("error:") == 1 and "Traceback" not in err, err
    after = {p: p.stat().st_mtime_ns for p in world.data.rglob("*") if p.is_file()}
    assert after == before  # nothing written into the data root
    assert not any((world.tmp / "elsewhere").glob("**/*"))  # nor through a symbolic link


def test_the_table_covers_every_verb_it_names():
    verbs = {c.line.split()[0] for c in CASES}
    assert verbs == {"predict", "evaluate", "validate-submission", "train", "export"}
