"""Bad input to the commands: one row per case, run through ``fmuia_lib.cli.main``.

Each row: an id, the command line (``{data}`` a labelled phantom data root, ``{pred}`` a
perfect submission for it, ``{ckpt}`` a trained checkpoint for its tasks, ``{tmp}`` a
scratch folder, ``{outside}`` a folder of valid images outside the data root, ``{pkg}``
the fmuia package), a function that breaks the input, the exit status, and words the
message must hold. Exit 2 must come with exactly one ``error:`` message on stderr and
no traceback (argparse's own refusals included); exit 1 (findings: ``data check``'s
problems, ``validate-submission``'s errors) and 0 (handled: scored with a warning, a
note, or simply done right) print on stdout and stderr. The message of exit 2 is one
line, the last. Nothing may be written into the data root, nor through a symbolic link; a
row marked ``machine="full"`` runs with ``{tmp}/full`` a full disk (a filled 64 KiB tmpfs:
skipped where it cannot be mounted, without root), ``machine="ro"`` with ``{tmp}/ro``
read-only, and neither may keep a partial file. A row that gives no answer in ``HANG_S``
seconds fails as a hang. Adding a case is adding a row.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import pytest
import torch

import fmuia_lib
from fmuia_lib import cli
from fmuia_lib.cli import main as fmuia
from fmuia_lib.data.layout import read_root
from fmuia_lib.challenge.predict import records_from_ground_truth, write_submission
from conftest import TINY_MODEL


@dataclass
class World:
    data: Path
    pred: Path
    ckpt: Path
    tmp: Path

    @property
    def outside(self) -> Path:
        return self.tmp / "outside"

    def argv(self, line: str) -> list[str]:
        return shlex.split(line.format(data=self.data, pred=self.pred, ckpt=self.ckpt, tmp=self.tmp,
                                       outside=self.outside, pkg=Path(fmuia_lib.__file__).parent))


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
    next(w.data.rglob("imgs/*.png")).unlink()


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


def rows_of(w: World, task_type: str | None = None):
    frame = read_root(w.data)
    return frame if task_type is None else frame.query(f"task_name == '{task_type}'")


def first_image(w: World) -> Path:
    return Path(rows_of(w).iloc[0]["image_file"])


def every_image(w: World) -> list[Path]:
    return [Path(f) for f in rows_of(w)["image_file"]]


def first_gt_mask(w: World) -> Path:
    return Path(rows_of(w, "segmentation").iloc[0]["mask_file"])


def first_csv(w: World) -> Path:
    return sorted((w.data / "csv_files").glob("*.csv"))[0]


def link_from_outside(w: World, path: Path) -> None:
    """``path`` moved out of its root (to ``w.outside``) and replaced by a symbolic link to it."""
    w.outside.mkdir(exist_ok=True)
    shutil.move(path, w.outside / path.name)
    path.symlink_to(w.outside / path.name)


def image_linked_outside(w: World) -> None:
    """The first image replaced by a symbolic link to a valid image outside the data root."""
    link_from_outside(w, first_image(w))


def images_folder_linked_outside(w: World) -> None:
    """The first image's whole ``imgs/`` folder moved out and linked back in."""
    folder = first_image(w).parent
    shutil.move(folder, w.outside)
    folder.symlink_to(w.outside, target_is_directory=True)


def csv_linked_outside(w: World) -> None:
    link_from_outside(w, first_csv(w))


def image_linked_inside(w: World) -> None:
    """A symbolic link to another image of the same root: reading stays inside, so it is fine."""
    images = every_image(w)
    spare = images[0].with_name("spare_copy.png")
    shutil.move(images[0], spare)
    images[0].symlink_to(spare)


def rewrite_bytes(pick: Callable[[World], list[Path]], change: Callable[[bytes], bytes]) -> Callable[[World], None]:
    def rewrite(w: World) -> None:
        for path in pick(w):
            path.write_bytes(change(path.read_bytes()))
    return rewrite


def first_of(pick: Callable[[World], Path]) -> Callable[[World], list[Path]]:
    return lambda w: [pick(w)]


def as_bmp(data: bytes) -> bytes:
    return cv2.imencode(".bmp", cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))[1].tobytes()


def as_gif(data: bytes) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("L").save(buffer, format="GIF")
    return buffer.getvalue()


def as_jpeg(data: bytes) -> bytes:
    return cv2.imencode(".jpg", cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))[1].tobytes()


def cut_in_half(data: bytes) -> bytes:
    return data[:len(data) // 2]


def bad_idat_checksum(data: bytes) -> bytes:
    at = data.index(b"IDAT")
    length = int.from_bytes(data[at - 4:at], "big")
    crc = at + 4 + length
    return data[:crc] + bytes([data[crc] ^ 0xFF]) + data[crc + 1:]


def truncated_jpeg(data: bytes) -> bytes:
    return cut_in_half(as_jpeg(data))


def header_only_csv(w: World) -> None:
    csv_file = first_csv(w)
    csv_file.write_text(csv_file.read_text().splitlines()[0] + "\n")


def empty_csv(w: World) -> None:
    first_csv(w).write_bytes(b"")


def latin1_csv(w: World) -> None:
    csv_file = first_csv(w)
    csv_file.write_bytes(csv_file.read_bytes() + "../x\xe9.png,a,b,c\n".encode("latin-1"))


def set_cell(column: str, value: str, task_type: str | None = None) -> Callable[[World], None]:
    """Set ``column`` of the first data row of the first CSV (of ``task_type`` rows when given)."""
    def edit(w: World) -> None:
        import csv

        row = rows_of(w, task_type).iloc[0]
        csv_file = w.data / "csv_files" / row["csv_file"]
        with csv_file.open(newline="") as fh:
            lines = list(csv.reader(fh))
        lines[row["csv_line"] - 1][lines[0].index(column)] = value
        with csv_file.open("w", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows(lines)
    return edit


def repeat_first_row(w: World) -> None:
    csv_file = first_csv(w)
    lines = csv_file.read_text().splitlines()
    csv_file.write_text("\n".join(lines + [lines[1]]) + "\n")


def short_row(w: World) -> None:
    with first_csv(w).open("a") as fh:
        fh.write("../x.png,organ_cls\n")


def rewrite_gt_mask(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[World], None]:
    def rewrite(w: World) -> None:
        path = first_gt_mask(w)
        cv2.imwrite(str(path), change(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return rewrite


def gt_mask_as_jpeg(w: World) -> None:
    path = first_gt_mask(w)
    path.write_bytes(as_jpeg(path.read_bytes()))


def gt_mask_linked_outside(w: World) -> None:
    link_from_outside(w, first_gt_mask(w))


def delete_gt_mask_0(w: World) -> None:
    first_gt_mask(w).unlink()


def pred_mask_bytes(change: Callable[[bytes], bytes]) -> Callable[[World], None]:
    def rewrite(w: World) -> None:
        path = first_pred_mask(w)
        path.write_bytes(change(path.read_bytes()))
    return rewrite


def pred_mask_linked_outside(w: World) -> None:
    link_from_outside(w, first_pred_mask(w))


def no_csv_folder(w: World) -> None:
    (w.tmp / "bare").mkdir()


def a_yaml(text: str, name: str = "bad.yaml") -> Callable[[World], None]:
    def write(w: World) -> None:
        (w.tmp / name).write_text(text)
    return write


def non_empty_folder(w: World) -> None:
    (w.tmp / "busy").mkdir()
    (w.tmp / "busy" / "notes.txt").write_text("keep me")


def foreign_train_folder(w: World) -> None:
    (w.tmp / "ph" / "train").mkdir(parents=True)
    (w.tmp / "ph" / "train" / "mine.txt").write_text("keep me")


def phantom_split_linked(w: World) -> None:
    (w.tmp / "ph").mkdir()
    (w.tmp / "elsewhere").mkdir(exist_ok=True)
    (w.tmp / "ph" / "train").symlink_to(w.tmp / "elsewhere", target_is_directory=True)


def empty_source(w: World) -> None:
    (w.tmp / "src").mkdir()


def suite_data(w: World) -> None:
    """``{tmp}/dd`` as a profile's data folder: train/ and val/ copies of the data root."""
    for split in ("train", "val"):
        shutil.copytree(w.data, w.tmp / "dd" / split)


def both(*breaks: Callable[[World], None]) -> Callable[[World], None]:
    def run(w: World) -> None:
        for b in breaks:
            b(w)
    return run
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


# -- more ways to break the input (outputs beside data, hostile files, the machine) ------------------
#: File locks a row holds for the length of its command (released by the ``world`` fixture).
HELD_LOCKS: list = []


def other_data_root(w: World) -> None:
    """``{tmp}/other``: another labelled data root (the original of a label-free test copy)."""
    shutil.copytree(w.data, w.tmp / "other")


def holder_of_a_data_root(w: World) -> None:
    """``{tmp}/holder/other``: a folder that holds a data root deeper down."""
    shutil.copytree(w.data, w.tmp / "holder" / "deep" / "other")


def link_to_other_root(w: World) -> None:
    other_data_root(w)
    (w.tmp / "link").symlink_to(w.tmp / "other", target_is_directory=True)


def marked_by(command: str) -> Callable[[World], None]:
    """``{tmp}/busy`` with a user's file and the marker of ``command``."""
    def mark(w: World) -> None:
        from fmuia_lib.paths import write_marker

        non_empty_folder(w)
        write_marker(w.tmp / "busy", command)
    return mark


def a_notebook(w: World) -> None:
    (w.tmp / "sub.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')


def lock_held(w: World) -> None:
    """A live run holds ``{tmp}/run`` (its OS lock on the lock file)."""
    from filelock import FileLock

    from fmuia_lib.training.loop import LOCK_FILE

    (w.tmp / "run").mkdir()
    lock = FileLock(w.tmp / "run" / LOCK_FILE, timeout=0)
    lock.acquire()
    HELD_LOCKS.append(lock)


def stale_lock(w: World) -> None:
    """The lock file a killed run left: no process holds it."""
    from fmuia_lib.training.loop import LOCK_FILE

    (w.tmp / "run").mkdir()
    (w.tmp / "run" / LOCK_FILE).write_text("")


def foreign_best(w: World) -> None:
    """``{tmp}/resumed/checkpoints/best.pt``: the best checkpoint of another run."""
    from fmuia_lib.state_file import load_state, save_state

    damaged_checkpoints(w)
    state = load_state(w.ckpt.with_name("best.pt"))
    state.update(best_score=0.123, val_history=[{"step": 99, "task_id": "organ_cls", "selection_score": 0.123}])
    save_state(state, w.tmp / "resumed" / "checkpoints" / "best.pt")


def a_file(name: str, data: bytes | Callable[[], bytes]) -> Callable[[World], None]:
    def write(w: World) -> None:
        (w.tmp / name).write_bytes(data() if callable(data) else data)
    return write


def pickled() -> bytes:
    import pickle

    return pickle.dumps({"conv1.weight": [1.0, 2.0]})


def torch_saved(obj) -> Callable[[], bytes]:
    def dump() -> bytes:
        import io

        buffer = io.BytesIO()
        torch.save(obj() if callable(obj) else obj, buffer)
        return buffer.getvalue()
    return dump


def a_fifo(relative: str) -> Callable[[World], None]:
    """A named pipe at ``relative`` ({data}/... or {tmp}/...): nobody ever writes into it."""
    import os

    def make(w: World) -> None:
        path = Path(relative.format(data=w.data, tmp=w.tmp, pred=w.pred))
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        os.mkfifo(path)
    return make


def fifo_as(pick: Callable[[World], Path]) -> Callable[[World], None]:
    def make(w: World) -> None:
        import os

        path = pick(w)
        path.unlink()
        os.mkfifo(path)
    return make


def png_claiming(width: int, height: int) -> bytes:
    """A whole, well-formed PNG (every checksum right) whose header claims ``width`` x ``height``."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))


def bomb(data: bytes) -> bytes:
    return png_claiming(100_000, 100_000)


def first_seg_image(w: World) -> Path:
    return Path(rows_of(w, "segmentation").iloc[0]["image_file"])


def raw_entry(file_name: str, key: str, text: str) -> Callable[[World], None]:
    """Set ``key`` of the first entry of a prediction file to the raw JSON ``text``."""
    def edit(w: World) -> None:
        path = w.pred / file_name
        items = json.loads(path.read_text())
        items[0][key] = "__RAW__"
        path.write_text(json.dumps(items).replace('"__RAW__"', text))
    return edit


def raw_file(file_name: str, text: str) -> Callable[[World], None]:
    def write(w: World) -> None:
        (w.pred / file_name).write_text(text)
    return write


DEEP = "[" * 100_000 + "]" * 100_000


def upper_case_csv(suffix: str = ".CSV") -> Callable[[World], None]:
    def rename(w: World) -> None:
        csv_file = first_csv(w)
        csv_file.rename(csv_file.with_name(csv_file.stem.upper() + suffix))
    return rename


def bad_row_in_upper_case_csv(w: World) -> None:
    upper_case_csv()(w)
    csv_file = next(p for p in (w.data / "csv_files").iterdir() if p.suffix == ".CSV")
    with csv_file.open("a") as fh:
        fh.write("../nowhere.png,organ_cls,classification,4,0\n")


def nan_head(task_id: str) -> Callable[[World], None]:
    """``{tmp}/nan.pt``: the trained checkpoint with ``task_id``'s head weights set to NaN."""
    def poison(w: World) -> None:
        from fmuia_lib.state_file import load_state, save_state

        state = load_state(w.ckpt)
        hit = [k for k in state["model"] if k.startswith(f"heads.{task_id}.") and state["model"][k].is_floating_point()]
        assert hit, list(state["model"])[:20]
        for key in hit:
            state["model"][key] = torch.full_like(state["model"][key], float("nan"))
        save_state(state, w.tmp / "nan.pt")
    return poison


def all_images_broken(w: World) -> None:
    for path in every_image(w)[:3]:
        path.write_bytes(b"not an image")



@dataclass(frozen=True)
class Case:
    id: str
    line: str
    breaks: Callable[[World], None]
    status: int
    words: tuple[str, ...]
    machine: str | None = None  # "full": {tmp}/full is a full disk; "ro": {tmp}/ro is read-only


def row(id: str, line: str, breaks: Callable[[World], None], status: int, *words: str,
        machine: str | None = None) -> Case:
    return Case(id, line, breaks, status, words, machine)


#: What each exit status means in the report of the table.
OUTCOMES = {2: "refused with one message", 1: "findings listed (data check, validate-submission)",
            0: "handled correctly (done, with a warning or note where one is due)"}


#: Seconds a row may take before it counts as a hang (a named pipe read, say).
HANG_S = 120
PREDICT = "predict --checkpoint {ckpt} --data {data} --device cpu"
DATA_CHECK = "data check {data}"
TRAIN = ("train --set data_root={data} --set val_root={data} --set encoder=" + TINY_MODEL["encoder"] + " --set encoder_weights=null "
         "--set image_size=64 --set batch_size=2 --set epochs=null --set max_steps=2 --set eval_every=2 "
         "--set num_workers=0 --set device=cpu --set out_dir={tmp}/run")
PHANTOM = "data phantom --tasks organ_cls --train 1 --val 1 --workers 1"
SUITE = "suite --profile ci-tiny --data {tmp}/dd --out {tmp}/s"
EXPORT = "export --checkpoint {ckpt}"
EVALUATE = "evaluate --data {data} --pred {pred}"
CHECK = "validate-submission {pred} --data {data}"
RESUME = "train --config {tmp}/run.yaml --set out_dir={tmp}/resumed --resume"
TRAIN_STEPS = TRAIN.replace("--set epochs=null ", "")  # the defaults' epochs cleared by max_steps alone
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
    row("evaluate mask value 255", EVALUATE, rewrite_pred_mask(lambda m: m * 255), 0, "has value 255",
        "belong to no class"),
    row("evaluate colour mask", EVALUATE, rewrite_pred_mask(lambda m: np.dstack([m, m * 0, m])), 2, "colour image"),
    row("evaluate pred folder missing", "evaluate --data {data} --pred {tmp}/nonexistent", nothing, 2, "nonexistent",
        "not found"),
    row("evaluate pred is the data root", "evaluate --data {data} --pred {data}", nothing, 2, "is the data root"),
    row("evaluate json is a folder", EVALUATE + " --json {tmp}/report.json", folder_at_json, 2, "report.json",
        "is a folder"),
    row("evaluate ground-truth mask missing", EVALUATE, delete_gt_mask, 2, "csv_files/", "mask file not found"),
    row("evaluate json inside the data root", EVALUATE + " --json {data}/scores.json", nothing, 2, "--json",
        "inside the data root"),
    row("evaluate json beside the data root", EVALUATE + " --json {data}/../scores.json", nothing, 0, "wrote"),
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
    row("check mask value 255", CHECK, rewrite_pred_mask(lambda m: m * 255), 0, "WARNING", "has value 255",
        "belong to no class"),
    row("check submission folder missing", "validate-submission {tmp}/nonexistent --data {data}", nothing, 2,
        "nonexistent", "not found"),
    row("check data root missing", "validate-submission {pred} --data {tmp}/empty", empty_folder, 2, "csv_files"),
    row("check mask saved as BMP", CHECK, pred_mask_bytes(as_bmp), 1, "ERROR", "BMP file"),
    row("check mask truncated", CHECK, pred_mask_bytes(cut_in_half), 1, "ERROR", "truncated PNG"),
    row("check mask linked outside the submission", CHECK, pred_mask_linked_outside, 1, "ERROR", "symbolic link"),
    row("evaluate mask linked outside the submission", EVALUATE, pred_mask_linked_outside, 2, "symbolic link"),
    # -- more predict and evaluate --------------------------------------------------------------------
    row("predict image linked outside the root", PREDICT + " --out {tmp}/out", image_linked_outside, 2,
        "csv_files/", "symbolic link"),
    row("predict images folder linked outside", PREDICT + " --out {tmp}/out", images_folder_linked_outside, 2,
        "symbolic link"),
    row("predict BMP saved as .png", PREDICT + " --out {tmp}/out", rewrite_bytes(every_image, as_bmp), 2,
        "csv_files/", "BMP file"),
    row("predict truncated PNG", PREDICT + " --out {tmp}/out", rewrite_bytes(every_image, cut_in_half), 2,
        "csv_files/", "truncated PNG"),
    row("predict truncated JPEG", PREDICT + " --out {tmp}/out", rewrite_bytes(every_image, truncated_jpeg), 2,
        "truncated JPEG"),
    row("predict CSV without rows", PREDICT + " --out {tmp}/out", header_only_csv, 2, "no rows"),
    row("predict out links to the data root", PREDICT + " --out {tmp}/link",
        lambda w: (w.tmp / "link").symlink_to(w.data, target_is_directory=True), 2, "is the data root"),
    row("predict checkpoint is a folder", "predict --checkpoint {tmp} --data {data} --out {tmp}/out", nothing, 2,
        "is a folder"),
    row("predict BMP read by a worker", PREDICT + " --out {tmp}/out --workers 1", rewrite_bytes(every_image, as_bmp),
        2, "BMP file"),
    row("predict JPEG bytes in a .png are an image", PREDICT + " --out {tmp}/out",
        rewrite_bytes(first_of(first_image), as_jpeg), 0, "wrote a submission"),
    row("evaluate ground-truth mask linked outside", EVALUATE, gt_mask_linked_outside, 2, "symbolic link"),
    row("evaluate mask saved as BMP", EVALUATE, pred_mask_bytes(as_bmp), 2, "BMP file"),
    row("evaluate CSV without rows", EVALUATE, header_only_csv, 2, "no rows"),
    # -- data check: findings on stdout (exit 1), unusable arguments (exit 2) ---------------------------
    row("data check image linked outside the root", DATA_CHECK, image_linked_outside, 1, "csv_files/", "symbolic link"),
    row("data check images folder linked outside", DATA_CHECK, images_folder_linked_outside, 1, "symbolic link"),
    row("data check CSV linked outside", DATA_CHECK, csv_linked_outside, 1, "symbolic link", "not read"),
    row("data check link inside the root is fine", DATA_CHECK, image_linked_inside, 0, "OK"),
    row("data check truncated PNG", DATA_CHECK, rewrite_bytes(first_of(first_image), cut_in_half), 1,
        "truncated PNG"),
    row("data check truncated PNG, headers only", DATA_CHECK + " --header-only",
        rewrite_bytes(first_of(first_image), cut_in_half), 0, "OK", "--header-only: image headers read, not decoded"),
    row("data check PNG checksum", DATA_CHECK, rewrite_bytes(first_of(first_image), bad_idat_checksum), 1,
        "fails its checksum"),
    row("data check truncated JPEG", DATA_CHECK, rewrite_bytes(first_of(first_image), truncated_jpeg), 1,
        "truncated JPEG"),
    row("data check BMP saved as .png", DATA_CHECK, rewrite_bytes(first_of(first_image), as_bmp), 1, "BMP file"),
    row("data check GIF saved as .png", DATA_CHECK, rewrite_bytes(first_of(first_image), as_gif), 1, "GIF file"),
    row("data check text saved as .png", DATA_CHECK, rewrite_bytes(first_of(first_image), lambda d: b"hello"), 1,
        "unreadable image"),
    row("data check zero-byte image", DATA_CHECK, rewrite_bytes(first_of(first_image), lambda d: b""), 1,
        "unreadable image"),
    row("data check image missing", DATA_CHECK, delete_an_image, 1, "image file not found"),
    row("data check CSV without rows", DATA_CHECK, header_only_csv, 1, "csv_files/", "no rows"),
    row("data check zero-byte CSV", DATA_CHECK, empty_csv, 1, "empty file"),
    row("data check CSV not UTF-8", DATA_CHECK, latin1_csv, 1, "cannot read CSV"),
    row("data check row with too few fields", DATA_CHECK, short_row, 1, "2 fields but the header has"),
    row("data check duplicate row", DATA_CHECK, repeat_first_row, 1, "duplicate row"),
    row("data check unknown task id", DATA_CHECK, set_cell("task_id", "liver_cls"), 1, "unknown task_id 'liver_cls'"),
    row("data check num_classes contradicts", DATA_CHECK, set_cell("num_classes", "9"), 1, "contradicts the manifest"),
    row("data check path above the root", DATA_CHECK, set_cell("image_path", "../../elsewhere/x.png"), 1,
        "escapes the data root"),
    row("data check absolute path", DATA_CHECK, set_cell("image_path", "/etc/passwd"), 1, "escapes the data root"),
    row("data check label out of range", DATA_CHECK, set_cell("mask", "99", "classification"), 1, "label 99"),
    row("data check label not an integer", DATA_CHECK, set_cell("mask", "1.5", "classification"), 1,
        "not an integer"),
    row("data check box not numbers", DATA_CHECK, set_cell("x_min", "left", "detection"), 1, "not four finite numbers"),
    row("data check box infinite", DATA_CHECK, set_cell("x_max", "inf", "detection"), 1, "not four finite numbers"),
    row("data check box outside the image", DATA_CHECK, set_cell("y_max", "9999", "detection"), 1, "reaches outside"),
    row("data check point not JSON", DATA_CHECK, set_cell("point_1_xy", "[1, 2", "Regression"), 1, "is not JSON"),
    row("data check point outside the image", DATA_CHECK, set_cell("point_1_xy", "[1, 9999]", "Regression"), 1,
        "lies outside"),
    row("data check mask missing", DATA_CHECK, delete_gt_mask_0, 1, "mask file not found"),
    row("data check mask saved as JPEG", DATA_CHECK, gt_mask_as_jpeg, 1, "JPEG file", "masks must be PNG"),
    row("data check mask linked outside", DATA_CHECK, gt_mask_linked_outside, 1, "symbolic link"),
    row("data check mask value too large", DATA_CHECK, rewrite_gt_mask(lambda m: m * 0 + 9), 1, "has value 9"),
    row("data check colour mask", DATA_CHECK, rewrite_gt_mask(lambda m: np.dstack([m, m * 0, m])), 1, "colour image"),
    row("data check mask of another size", DATA_CHECK, rewrite_gt_mask(lambda m: m[:-2]), 1, "but its image is"),
    row("data check 16-bit mask of class indices", DATA_CHECK, rewrite_gt_mask(lambda m: m.astype(np.uint16)), 0,
        "OK"),
    row("data check gray mask saved as RGB", DATA_CHECK, rewrite_gt_mask(lambda m: np.dstack([m, m, m])), 0, "OK"),
    row("data check no csv_files folder", "data check {tmp}/bare", no_csv_folder, 1, "no csv_files/ folder"),
    row("data check root missing", "data check {tmp}/nowhere", nothing, 2, "nowhere", "not found"),
    row("data check root is a file", "data check {tmp}/out.txt", out_is_a_file, 2, "is a file"),
    row("data check max-problems 0", DATA_CHECK + " --max-problems 0", nothing, 2, "--max-problems"),
    row("data check manifest missing", DATA_CHECK + " --manifest {tmp}/none.csv", nothing, 2, "manifest not found"),
    row("data check verify-images is the default now", DATA_CHECK + " --verify-images", nothing, 0, "OK",
        "no longer needed"),
    row("data check verify-images with header-only", DATA_CHECK + " --verify-images --header-only", nothing, 2,
        "contradict"),
    row("data check max-problems not a number", DATA_CHECK + " --max-problems many", nothing, 2, "--max-problems",
        "invalid int value"),
    # -- train: every value checked before anything is built ------------------------------------------
    row("train good input", TRAIN, nothing, 0, "trained 2 steps"),
    row("train out_dir is a file", TRAIN + " --set out_dir={tmp}/out.txt", out_is_a_file, 2, "out_dir", "is a file"),
    row("train out_dir is the data root", TRAIN + " --set out_dir={data}", nothing, 2, "out_dir", "is the data_root"),
    row("train out_dir inside the data root", TRAIN + " --set out_dir={data}/run", nothing, 2, "out_dir",
        "lies inside the data_root"),
    row("train out_dir contains the data root", TRAIN + " --set out_dir={data}/..", nothing, 2, "out_dir",
        "contains the data_root"),
    row("train out_dir holds a link out of it", TRAIN, lambda w: (
        (w.tmp / "run").mkdir(), (w.tmp / "elsewhere").mkdir(),
        (w.tmp / "run" / "checkpoints").symlink_to(w.tmp / "elsewhere", target_is_directory=True)), 2,
        "out_dir", "symbolic link"),
    row("train weight_decay -1", TRAIN + " --set weight_decay=-1", nothing, 2, "weight_decay", ">= 0"),
    row("train num_workers -1", TRAIN + " --set num_workers=-1", nothing, 2, "num_workers", ">= 0"),
    row("train num_workers 1.0", TRAIN + " --set num_workers=1.0", nothing, 2, "num_workers", "expected an integer"),
    row("train device cuda:99", TRAIN + " --set device=cuda:99", nothing, 2, "device", "no such CUDA device"),
    row("train device not a name", TRAIN + " --set device=gpu0", nothing, 2, "device", "not a device name"),
    row("train unknown encoder", TRAIN + " --set encoder=resnet19", nothing, 2, "encoder", "did you mean"),
    row("train unknown timm encoder", TRAIN + " --set encoder=tu-nosuchnet", nothing, 2, "encoder", "timm"),
    row("train weights file missing", TRAIN + " --set encoder_weights={tmp}/none.pth", nothing, 2,
        "encoder_weights", "no such file"),
    row("train unknown named weights", TRAIN + " --set encoder_weights=instagram", nothing, 2, "encoder_weights",
        "imagenet"),
    row("train unknown named weights of an smp encoder", TRAIN + " --set encoder=resnet18 --set encoder_weights=instagram",
        nothing, 2, "encoder_weights", "resnet18 has pretrained weights", "imagenet"),
    row("train unknown task id", TRAIN + " --set tasks=[organ_cls,nosuch_task]", nothing, 2, "tasks",
        "nosuch_task"),
    row("train empty task list", TRAIN + " --set tasks=[]", nothing, 2, "tasks"),
    row("train task listed twice", TRAIN + " --set tasks=[organ_cls,organ_cls]", nothing, 2, "tasks", "twice"),
    row("train batch_size true", TRAIN + " --set batch_size=true", nothing, 2, "batch_size", "expected an integer"),
    row("train batch_size 1.5", TRAIN + " --set batch_size=1.5", nothing, 2, "batch_size", "expected an integer"),
    row("train batch_size 0", TRAIN + " --set batch_size=0", nothing, 2, "batch_size", ">= 1"),
    row("train max_steps 2.0", TRAIN + " --set max_steps=2.0", nothing, 2, "max_steps", "expected an integer"),
    row("train lr inf", TRAIN + " --set lr=inf", nothing, 2, "lr", "finite"),
    row("train lr .nan", TRAIN + " --set lr=.nan", nothing, 2, "lr", "finite"),
    row("train lr 0", TRAIN + " --set lr=0", nothing, 2, "lr", "> 0"),
    row("train lr not a number", TRAIN + " --set lr=fast", nothing, 2, "lr", "expected a number"),
    row("train head_lr_mult -1", TRAIN + " --set head_lr_mult=-1", nothing, 2, "head_lr_mult", "> 0"),
    row("train negative loss weight", TRAIN + " --set loss_weights.detection=-1", nothing, 2,
        "loss_weights.detection", ">= 0"),
    row("train boolean loss weight", TRAIN + " --set loss_weights.detection=true", nothing, 2,
        "loss_weights.detection", "expected a number"),
    row("train unknown loss weight", TRAIN + " --set loss_weights.detecton=1", nothing, 2, "loss_weights",
        "detecton"),
    row("train negative sampling weight", TRAIN + " --set sampler_type_weights.Regression=-2", nothing, 2,
        "sampler_type_weights.Regression", ">= 0"),
    row("train unknown sampling weight", TRAIN + " --set sampler_type_weights.landmarks=2", nothing, 2,
        "sampler_type_weights", "landmarks"),
    row("train sampling weights with the official sampler", TRAIN + " --set sampler=official "
        "--set sampler_type_weights.Regression=2", nothing, 2, "sampler_type_weights", "official sampler"),
    row("train every sampling weight 0", TRAIN + " --set sampler=uniform" + "".join(
        f" --set sampler_type_weights.{kind}=0" for kind in ("segmentation", "classification", "detection", "Regression")),
        nothing, 2, "sampler_type_weights", "every weight is 0"),
    row("train sampling weight 0 for the run's only task type", TRAIN + " --set sampler=uniform --set tasks=[organ_cls] "
        "--set sampler_type_weights.classification=0", nothing, 2, "sampler_type_weights", "classification",
        "weight 0"),
    row("train grad_clip -1", TRAIN + " --set grad_clip=-1", nothing, 2, "grad_clip", "> 0"),
    row("train grad_clip 0", TRAIN + " --set grad_clip=0", nothing, 2, "grad_clip", "> 0"),
    row("train amp 1", TRAIN + " --set amp=1", nothing, 2, "amp", "true or false"),
    row("train seed -1", TRAIN + " --set seed=-1", nothing, 2, "seed", ">= 0"),
    row("train val_fraction 1", TRAIN + " --set val_root=null --set val_fraction=1", nothing, 2, "val_fraction"),
    row("train image_size 100", TRAIN + " --set image_size=100", nothing, 2, "image_size", "multiple of 32"),
    row("train eta_min above lr", TRAIN + " --set eta_min=0.1", nothing, 2, "eta_min", "above lr"),
    row("train val_batch_size 0", TRAIN + " --set val_batch_size=0", nothing, 2, "val_batch_size", ">= 1"),
    row("train sampler_temperature 0", TRAIN + " --set sampler_temperature=0", nothing, 2, "sampler_temperature"),
    row("train label smoothing 1", TRAIN + " --set cls_label_smoothing=1", nothing, 2, "cls_label_smoothing", "< 1"),
    row("train warmup_steps -1", TRAIN + " --set warmup_steps=-1", nothing, 2, "warmup_steps", ">= 0"),
    row("train stop_at_step 0", TRAIN + " --set stop_at_step=0", nothing, 2, "stop_at_step", ">= 1"),
    row("train misspelt key", TRAIN + " --set bach_size=4", nothing, 2, "bach_size", "did you mean batch_size"),
    row("train set without '='", TRAIN + " --set lr", nothing, 2, "expected KEY=VALUE"),
    row("train out_dir without a value", TRAIN + " --set out_dir=", nothing, 2, "out_dir", "null is not allowed"),
    row("train blank out_dir", TRAIN + " --set \"out_dir=' '\"", nothing, 2, "out_dir", "empty"),
    row("train out_dir a number", TRAIN + " --set out_dir=5", nothing, 2, "out_dir=5", "expected text"),
    row("train data_root a list", TRAIN + " --set data_root=[a,b]", nothing, 2, "data_root", "expected text"),
    row("train unknown profile", TRAIN + " --config nosuch", nothing, 2, "profile 'nosuch' not found"),
    row("train config not YAML", TRAIN + " --config {tmp}/bad.yaml", a_yaml("lr: [1e-4\n"), 2, "bad.yaml",
        "not valid YAML"),
    row("train config misspelt key", TRAIN + " --config {tmp}/bad.yaml", a_yaml("batch_sise: 4\n"), 2,
        "did you mean batch_size"),
    row("train resume missing", TRAIN + " --resume {tmp}/none.pt", nothing, 2, "resume", "no such checkpoint"),
    row("train data root missing", TRAIN + " --set data_root={tmp}/nowhere", nothing, 2, "csv_files"),
    row("train CSV without rows", TRAIN, header_only_csv, 2, "no rows"),
    row("train image linked outside the root", TRAIN, image_linked_outside, 2, "symbolic link"),
    row("train images folder linked outside", TRAIN, images_folder_linked_outside, 2, "symbolic link"),
    row("train BMP saved as .png", TRAIN, rewrite_bytes(every_image, as_bmp), 2, "csv_files/", "BMP file"),
    row("train truncated PNG", TRAIN, rewrite_bytes(every_image, cut_in_half), 2, "csv_files/", "truncated PNG"),
    row("train truncated PNG read by a worker", TRAIN + " --set num_workers=1", rewrite_bytes(every_image, cut_in_half),
        2, "csv_files/", "truncated PNG"),
    row("train mask of another size", TRAIN, rewrite_bytes(lambda w: [Path(f) for f in rows_of(w, "segmentation")[
        "mask_file"]], lambda d: cv2.imencode(".png", cv2.imdecode(np.frombuffer(d, np.uint8), 0)[:-2])[1].tobytes()),
        2, "but its image is"),
    row("train resume without a value (argparse)", "train --resume", nothing, 2, "--resume", "expected one argument"),
    # -- data phantom -----------------------------------------------------------------------------------
    row("phantom good input", PHANTOM + " --out {tmp}/ph", nothing, 0, "phantom: 1 subtasks"),
    row("phantom train 0", PHANTOM + " --out {tmp}/ph --train 0", nothing, 2, "--train", "at least 1"),
    row("phantom val -1", PHANTOM + " --out {tmp}/ph --val -1", nothing, 2, "--val", "at least 1"),
    row("phantom workers 0", PHANTOM + " --out {tmp}/ph --workers 0", nothing, 2, "--workers"),
    row("phantom seed -1", PHANTOM + " --out {tmp}/ph --seed -1", nothing, 2, "--seed"),
    row("phantom unknown task", "data phantom --out {tmp}/ph --tasks nosuch_task", nothing, 2, "nosuch_task"),
    row("phantom task twice", "data phantom --out {tmp}/ph --tasks organ_cls organ_cls --train 1 --val 1", nothing,
        2, "organ_cls more than once"),
    row("phantom out is a file", PHANTOM + " --out {tmp}/out.txt", out_is_a_file, 2, "out.txt", "not a folder"),
    row("phantom out inside a data root", PHANTOM + " --out {data}/ph", nothing, 2, "lies inside the data root"),
    row("phantom out not empty", PHANTOM + " --out {tmp}/busy", non_empty_folder, 2, "not empty"),
    row("phantom overwrite of data it did not write", PHANTOM + " --out {tmp}/ph --overwrite", foreign_train_folder,
        2, "did not write"),
    row("phantom split linked elsewhere", PHANTOM + " --out {tmp}/ph --overwrite", phantom_split_linked, 2,
        "symbolic link"),
    row("phantom train not a number", PHANTOM + " --out {tmp}/ph --train ten", nothing, 2, "--train",
        "invalid int value"),
    # -- data real --------------------------------------------------------------------------------------
    row("real src missing", "data real --src {tmp}/nowhere --out {tmp}/r", nothing, 2, "nowhere", "not found"),
    row("real src is a file", "data real --src {tmp}/out.txt --out {tmp}/r", out_is_a_file, 2, "is a file"),
    row("real src without datasets", "data real --src {tmp}/src --out {tmp}/r", empty_source, 2,
        "none of the dataset folders"),
    row("real out is a file", "data real --src {tmp}/src --out {tmp}/out.txt", both(empty_source, out_is_a_file), 2,
        "is a file"),
    row("real out is the source", "data real --src {tmp}/src --out {tmp}/src", empty_source, 2, "is the source"),
    row("real out inside the source", "data real --src {tmp}/src --out {tmp}/src/r", empty_source, 2,
        "lies inside the source"),
    row("real out contains the source", "data real --src {tmp}/src --out {tmp}", empty_source, 2,
        "contains the source"),
    row("real out inside a data root", "data real --src {tmp}/src --out {data}/r", empty_source, 2,
        "lies inside the data root"),
    row("real val-fraction 1.5", "data real --src {tmp}/src --out {tmp}/r --val-fraction 1.5", empty_source, 2,
        "--val-fraction"),
    row("real val-fraction nan", "data real --src {tmp}/src --out {tmp}/r --val-fraction nan", empty_source, 2,
        "--val-fraction"),
    row("real seed -1", "data real --src {tmp}/src --out {tmp}/r --seed -1", empty_source, 2, "--seed"),
    # -- suite ------------------------------------------------------------------------------------------
    row("suite unknown profile", "suite --profile nosuch --out {tmp}/s", nothing, 2, "profile 'nosuch' not found"),
    row("suite unknown field", SUITE + " --set nosuchfield=1", suite_data, 2,
        "unknown TrainConfig field 'nosuchfield'"),
    row("suite negative weight decay", SUITE + " --set weight_decay=-1", suite_data, 2, "weight_decay"),
    row("suite unknown encoder", SUITE + " --set encoder=nosuchnet", suite_data, 2, "encoder='nosuchnet'"),
    row("suite device cuda:99", SUITE + " --set device=cuda:99", suite_data, 2, "no such CUDA device"),
    row("suite out is a file", "suite --profile ci-tiny --data {tmp}/dd --out {tmp}/out.txt",
        both(suite_data, out_is_a_file), 2, "is a file"),
    row("suite out is the data root", "suite --profile ci-tiny --data {tmp}/dd --out {tmp}/dd/train", suite_data, 2,
        "is the data root"),
    row("suite out contains the data", "suite --profile ci-tiny --data {tmp}/dd --out {tmp}", suite_data, 2,
        "contains the data"),
    row("suite data missing", "suite --profile ci-tiny --data {tmp}/nowhere --out {tmp}/s", nothing, 2,
        "does not exist"),
    row("suite unknown notebook", SUITE + " --notebooks 99", suite_data, 2, "no notebook '99'"),
    row("suite unknown kernel", SUITE + " --kernel nosuch", suite_data, 2, "--kernel", "no such Jupyter kernel"),
    row("suite update-notebooks with another profile", SUITE + " --update-notebooks", suite_data, 2, "cpu-smoke"),
    row("suite profile with a bad data dir", "suite --profile {tmp}/p.yaml --out {tmp}/s",
        a_yaml("name: p\ndata: {source: user, dir: 5}\n", "p.yaml"), 2, "dir=5", "folder path"),
    row("suite profile with an unknown section", "suite --profile {tmp}/p.yaml --out {tmp}/s",
        a_yaml("name: p\ndata: {dir: x}\nrecipe: {}\n", "p.yaml"), 2, "unknown top-level key"),
    # -- export -----------------------------------------------------------------------------------------
    row("export missing checkpoint", "export --checkpoint {tmp}/none.pt --out {tmp}/e", nothing, 2, "none.pt",
        "not found"),
    row("export foreign checkpoint", "export --checkpoint {tmp}/foreign.pt --out {tmp}/e", foreign_checkpoint, 2,
        "not an fmuia checkpoint"),
    row("export text file as checkpoint", "export --checkpoint {tmp}/notes.pt --out {tmp}/e", foreign_checkpoint, 2,
        "cannot be read"),
    row("export truncated checkpoint", "export --checkpoint {tmp}/truncated.pt --out {tmp}/e", truncated_checkpoint,
        2, "cannot be read"),
    row("export checkpoint is a folder", "export --checkpoint {tmp} --out {tmp}/e", nothing, 2, "is a folder"),
    row("export out is a file", EXPORT + " --out {tmp}/out.txt", out_is_a_file, 2, "is a file"),
    row("export out not empty", EXPORT + " --out {tmp}/busy", non_empty_folder, 2, "not empty", "--overwrite"),
    row("export overwrite of a folder that is no export", EXPORT + " --out {tmp}/busy --overwrite", non_empty_folder,
        2, "holds no earlier export"),
    row("export out holds the checkpoint", EXPORT + " --out {ckpt}/../.. --overwrite", nothing, 2,
        "contains the checkpoint's folder"),
    row("export out is the package", EXPORT + " --out {pkg} --overwrite", nothing, 2, "the fmuia package"),
    row("export out inside a data root", EXPORT + " --out {data}/e", nothing, 2, "lies inside the data root"),
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
    # -- never into, around or over a data root or an input: one rule for every command that writes ---
    row("course build overwrite of a data root", "course build --out {data} --overwrite", nothing, 2,
        "is the data root"),
    row("course build overwrite of a folder of the user's files", "course build --out {tmp}/busy --overwrite",
        non_empty_folder, 2, "busy", "not made by fmuia course build", "refusing to delete"),
    row("course build overwrite of a plain file", "course build --out {tmp}/out.txt --overwrite", out_is_a_file, 2,
        "out.txt", "is a file"),
    row("course build out not empty does not invite --overwrite", "course build --out {tmp}/busy", non_empty_folder,
        2, "not empty", "choose a new folder"),
    row("course build out inside a data root", "course build --out {data}/course", nothing, 2,
        "lies inside the data root"),
    row("course build out contains a data root", "course build --out {data}/..", nothing, 2,
        "contains the data root"),
    row("course build out climbs into a data root", "course build --out {tmp}/../data/course", nothing, 2,
        "lies inside the data root"),
    row("course build out links to a data root", "course build --out {tmp}/link --overwrite", link_to_other_root, 2,
        "the data root"),
    row("course build overwrite of another command's folder", "course build --out {tmp}/busy --overwrite",
        marked_by("fmuia export"), 2, "not made by fmuia course build"),
    row("course grade json over the submission", "course grade {tmp}/sub.ipynb --course {tmp} --json {tmp}/sub.ipynb",
        a_notebook, 2, "--json", "is the submission"),
    row("course grade json inside a data root", "course grade {tmp}/sub.ipynb --course {tmp}/c --json {data}/g.json",
        a_notebook, 2, "--json", "inside the data root"),
    row("predict out is another data root", PREDICT + " --out {tmp}/other", other_data_root, 2,
        "is the data root", "other"),
    row("predict out inside another data root", PREDICT + " --out {tmp}/other/sub", other_data_root, 2,
        "lies inside the data root"),
    row("predict out in another root's csv_files", PREDICT + " --out {tmp}/other/csv_files", other_data_root, 2,
        "lies inside the data root"),
    row("predict out holds another data root", PREDICT + " --out {tmp}/holder", holder_of_a_data_root, 2,
        "contains the data root", "other"),
    row("predict out links to another data root", PREDICT + " --out {tmp}/link", link_to_other_root, 2,
        "the data root"),
    row("predict out climbs into the data root", PREDICT + " --out {tmp}/../data/sub", nothing, 2,
        "inside the data root"),
    row("evaluate json over a prediction file", EVALUATE + " --json {pred}/classification_predictions.json", nothing,
        2, "--json", "the submission folder", "never into or over an input"),
    row("evaluate json into the submission", EVALUATE + " --json {pred}/report.json", nothing, 2, "--json",
        "the submission folder"),
    row("evaluate json over a CSV of another data root", EVALUATE + " --json {tmp}/other/csv_files/organ_cls.csv",
        other_data_root, 2, "--json", "inside the data root"),
    row("evaluate json over a ground-truth CSV", EVALUATE + " --json {data}/csv_files/organ_cls.csv", nothing, 2,
        "--json", "inside the data root"),
    row("evaluate json climbs into the data root", EVALUATE + " --json {tmp}/../data/r.json", nothing, 2,
        "inside the data root"),
    row("evaluate json links into the data root", EVALUATE + " --json {tmp}/r.json",
        lambda w: (w.tmp / "r.json").symlink_to(w.data / "csv_files" / "organ_cls.csv"), 2, "inside the data root"),
    row("evaluate json is the submission folder", EVALUATE + " --json {pred}", nothing, 2, "is a folder"),
    row("export weights-only inside a data root", EXPORT + " --weights-only --out {data}/w", nothing, 2,
        "lies inside the data root"),
    row("export weights-only into the data root", EXPORT + " --weights-only --out {data}", nothing, 2,
        "the data root"),
    row("export weights-only around a data root", EXPORT + " --weights-only --out {data}/..", nothing, 2,
        "contains the data root"),
    row("export weights-only out is a file", EXPORT + " --weights-only --out {tmp}/out.txt", out_is_a_file, 2,
        "is a file"),
    row("export weights-only over an existing file", EXPORT + " --weights-only --out {tmp}/w",
        lambda w: ((w.tmp / "w").mkdir(), (w.tmp / "w" / "weights.pt").write_text("mine")), 2, "exists",
        "--overwrite"),
    row("export weights-only over the checkpoint itself", "export --checkpoint {tmp}/w/weights.pt --weights-only "
        "--out {tmp}/w --overwrite", lambda w: ((w.tmp / "w").mkdir(), shutil.copyfile(w.ckpt, w.tmp / "w" / "weights.pt")),
        2, "is the checkpoint being exported"),
    row("export weights-only good input", EXPORT + " --weights-only --out {tmp}/w", nothing, 0, "weights only"),
    row("export out contains a data root", EXPORT + " --out {data}/..", nothing, 2, "contains the data root"),
    row("export out is another data root", EXPORT + " --out {tmp}/other --overwrite", other_data_root, 2,
        "the data root"),
    row("export out holds a data root deeper down", EXPORT + " --out {tmp}/holder --overwrite",
        holder_of_a_data_root, 2, "contains the data root"),
    row("train out_dir is another data root", TRAIN + " --set out_dir={tmp}/other", other_data_root, 2, "out_dir",
        "data root"),
    row("train out_dir inside another data root", TRAIN + " --set out_dir={tmp}/other/run", other_data_root, 2,
        "out_dir", "lies inside the data root"),
    row("train out_dir holds another data root", TRAIN + " --set out_dir={tmp}/holder", holder_of_a_data_root, 2,
        "out_dir", "contains the data root"),
    row("train out_dir links into another data root", TRAIN + " --set out_dir={tmp}/link/run", link_to_other_root, 2,
        "out_dir", "data root"),
    row("train out_dir held by a live run", TRAIN, lock_held, 2, "out_dir", "in use by another run"),
    row("train out_dir a killed run left", TRAIN, stale_lock, 0, "trained 2 steps"),
    row("train resume where another run's best.pt lies", RESUME + " {ckpt}", foreign_best, 2, "best.pt",
        "another run"),
    row("train resume keeps its own best", RESUME + " {ckpt}", damaged_checkpoints, 0,
        "resumed/checkpoints/best.pt"),
    row("train validates on its training images", TRAIN, nothing, 0, "warning: val_root is data_root",
        "own training images"),
    row("train validates on its training images through a link", TRAIN + " --set val_root={tmp}/link",
        lambda w: (w.tmp / "link").symlink_to(w.data, target_is_directory=True), 0, "val_root is data_root"),
    row("phantom out is another data root", PHANTOM + " --out {tmp}/other --overwrite", other_data_root, 2,
        "data root"),
    row("phantom out holds a data root", PHANTOM + " --out {tmp}/holder --overwrite", holder_of_a_data_root, 2,
        "contains the data root"),
    row("real out inside another data root", "data real --src {tmp}/src --out {tmp}/other/r", both(empty_source,
        other_data_root), 2, "lies inside the data root"),
    row("suite out inside another data root", "suite --profile ci-tiny --data {tmp}/dd --out {tmp}/other/s",
        both(suite_data, other_data_root), 2, "lies inside the data root"),
    # -- the run length: an explicit value of one clears the other -------------------------------------
    row("train max_steps alone means steps", TRAIN_STEPS, nothing, 0, "trained 2 steps"),
    row("train epochs and max_steps both given", TRAIN_STEPS + " --set epochs=1", nothing, 2, "set exactly one"),
    row("train config with max_steps only", TRAIN_STEPS + " --config {tmp}/steps.yaml",
        a_yaml("max_steps: 2\n", "steps.yaml"), 0, "trained 2 steps"),
    row("train config with both lengths", TRAIN_STEPS + " --config {tmp}/both.yaml",
        a_yaml("epochs: 3\nmax_steps: 4\n", "both.yaml"), 2, "set exactly one"),
    row("train override of the config's epochs with steps", TRAIN_STEPS + " --config {tmp}/ep.yaml",
        a_yaml("epochs: 3\n", "ep.yaml"), 0, "trained 2 steps"),
    # -- encoder weights files ---------------------------------------------------------------------------
    row("train encoder weights of random bytes", TRAIN + " --set encoder_weights={tmp}/w.pth",
        a_file("w.pth", bytes(range(256)) * 8), 2, "encoder_weights", "w.pth", "cannot be read"),
    row("train encoder weights a plain pickle", TRAIN + " --set encoder_weights={tmp}/w.pth", a_file("w.pth", pickled),
        2, "encoder_weights", "w.pth"),
    row("train encoder weights a torch.save of lists", TRAIN + " --set encoder_weights={tmp}/w.pth",
        a_file("w.pth", torch_saved({"conv1.weight": [1, 2, 3]})), 2, "encoder_weights", "not a state dict"),
    row("train encoder weights a bare tensor", TRAIN + " --set encoder_weights={tmp}/w.pth",
        a_file("w.pth", torch_saved(lambda: torch.zeros(3))), 2, "encoder_weights", "holds a Tensor"),
    row("train encoder weights of another architecture", TRAIN + " --set encoder_weights={tmp}/w.pth",
        a_file("w.pth", torch_saved(lambda: {"features.0.weight": torch.zeros(8, 3, 3, 3)})), 2, "encoder_weights",
        "not a state dict of encoder"),
    row("train encoder weights an empty file", TRAIN + " --set encoder_weights={tmp}/w.pth", a_file("w.pth", b""), 2,
        "encoder_weights", "w.pth"),
    row("train encoder weights an empty state dict", TRAIN + " --set encoder_weights={tmp}/w.pth",
        a_file("w.pth", torch_saved({})), 2, "encoder_weights", "not a state dict"),
    row("train encoder weights safetensors garbage", TRAIN + " --set encoder_weights={tmp}/w.safetensors",
        a_file("w.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"), 2, "encoder_weights", "w.safetensors"),
    row("train encoder weights a folder", TRAIN + " --set encoder_weights={tmp}/w.pth",
        lambda w: (w.tmp / "w.pth").mkdir(), 2, "encoder_weights", "is a folder"),
    row("train encoder weights a named pipe", TRAIN + " --set encoder_weights={tmp}/w.pth", a_fifo("{tmp}/w.pth"), 2,
        "encoder_weights", "named pipe"),
    # -- manifests, configs: binary, hostile, not files -------------------------------------------------
    row("data check binary manifest", DATA_CHECK + " --manifest {tmp}/m.csv", a_file("m.csv", bytes(range(256)) * 4),
        2, "m.csv", "cannot be read as a UTF-8 CSV"),
    row("train binary manifest", TRAIN + " --set manifest={tmp}/m.csv", a_file("m.csv", bytes(range(256)) * 4), 2,
        "m.csv", "UTF-8"),
    row("data check manifest a named pipe", DATA_CHECK + " --manifest {tmp}/m.csv", a_fifo("{tmp}/m.csv"), 2,
        "m.csv", "named pipe"),
    row("data check manifest a folder", DATA_CHECK + " --manifest {tmp}", nothing, 2, "is a folder"),
    row("data check manifest NUL bytes", DATA_CHECK + " --manifest {tmp}/m.csv", a_file("m.csv", b"task_id\0,x\n"), 2,
        "m.csv"),
    row("train config binary", TRAIN + " --config {tmp}/c.yaml", a_file("c.yaml", bytes(range(256)) * 4), 2,
        "c.yaml", "cannot be read as a YAML text file"),
    row("train config a named pipe", TRAIN + " --config {tmp}/c.yaml", a_fifo("{tmp}/c.yaml"), 2, "c.yaml",
        "named pipe"),
    row("train config nested 100,000 deep", TRAIN + " --config {tmp}/c.yaml", a_file("c.yaml", DEEP.encode()), 2,
        "c.yaml"),
    row("train config with a 5001-digit integer", TRAIN + " --config {tmp}/c.yaml",
        a_file("c.yaml", b"batch_size: " + b"9" * 5001 + b"\n"), 2, "c.yaml"),
    row("train config error on one line", TRAIN + " --config {tmp}/c.yaml", a_file("c.yaml", b"lr: [1\nseed: {\n"), 2,
        "c.yaml", "not valid YAML"),
    row("suite profile a named pipe", "suite --profile {tmp}/p.yaml --out {tmp}/s", a_fifo("{tmp}/p.yaml"), 2,
        "p.yaml", "named pipe"),
    row("suite profile binary", "suite --profile {tmp}/p.yaml --out {tmp}/s", a_file("p.yaml", b"\xff\xfe\x00" * 50),
        2, "p.yaml"),
    # -- images whose header claims 100000 x 100000 pixels ----------------------------------------------
    row("data check PNG header bomb", DATA_CHECK, rewrite_bytes(first_of(first_image), bomb), 1, "too large"),
    row("data check PNG header bomb, headers only", DATA_CHECK + " --header-only",
        rewrite_bytes(first_of(first_image), bomb), 1, "too large"),
    row("data check mask header bomb", DATA_CHECK, rewrite_bytes(first_of(first_gt_mask), bomb), 1, "too large"),
    row("train PNG header bomb", TRAIN, rewrite_bytes(every_image, bomb), 2, "csv_files/", "too large"),
    row("predict PNG header bomb", PREDICT + " --out {tmp}/out", rewrite_bytes(every_image, bomb), 2, "too large"),
    row("evaluate ground-truth image header bomb", EVALUATE, rewrite_bytes(first_of(first_seg_image), bomb), 2,
        "too large"),
    row("evaluate ground-truth mask header bomb", EVALUATE, rewrite_bytes(first_of(first_gt_mask), bomb), 2,
        "too large"),
    row("check predicted mask header bomb", CHECK, pred_mask_bytes(bomb), 1, "ERROR", "too large"),
    row("evaluate predicted mask header bomb", EVALUATE, pred_mask_bytes(bomb), 2, "too large"),
    row("data check PNG claiming 0 x 0 pixels", DATA_CHECK, rewrite_bytes(first_of(first_image),
        lambda d: png_claiming(0, 0)), 1, "csv_files/"),
    # -- prediction JSON: huge numbers, deep nesting, not a file ----------------------------------------
    row("check class a 401-digit integer", CHECK, raw_entry("classification_predictions.json", "predicted_class",
        "9" * 401), 1, "ERROR", "classification_predictions.json[0]"),
    row("evaluate class a 401-digit integer", EVALUATE, raw_entry("classification_predictions.json",
        "predicted_class", "9" * 401), 2, "classification_predictions.json[0]"),
    row("check class a 5001-digit integer", CHECK, raw_entry("classification_predictions.json", "predicted_class",
        "9" * 5001), 1, "ERROR", "classification_predictions.json[0]"),
    row("evaluate class a 5001-digit integer", EVALUATE, raw_entry("classification_predictions.json",
        "predicted_class", "9" * 5001), 2, "classification_predictions.json[0]"),
    row("check box with a 401-digit integer", CHECK, raw_entry("detection_predictions.json", "bbox_pixels",
        "[0, 0, " + "9" * 401 + ", 10]"), 1, "ERROR", "detection_predictions.json[0]"),
    row("evaluate box with a 5001-digit integer", EVALUATE, raw_entry("detection_predictions.json", "bbox_pixels",
        "[0, 0, " + "9" * 5001 + ", 10]"), 2, "detection_predictions.json[0]"),
    row("check points with a 401-digit integer", CHECK, raw_entry("regression_predictions.json",
        "predicted_points_pixels", "[" + "9" * 401 + ", 1]"), 1, "ERROR", "regression_predictions.json[0]"),
    row("evaluate probabilities with a 401-digit integer", EVALUATE, raw_entry("classification_predictions.json",
        "predicted_probs", "[" + "9" * 401 + ", 0, 0, 0]"), 2, "classification_predictions.json[0]"),
    row("check box of 1e999", CHECK, raw_entry("detection_predictions.json", "bbox_pixels", "[0, 0, 1e999, 10]"), 1,
        "ERROR", "finite"),
    row("check box of NaN", CHECK, raw_entry("detection_predictions.json", "bbox_pixels", "[0, 0, NaN, 10]"), 1,
        "ERROR", "finite"),
    row("evaluate points of -Infinity", EVALUATE, raw_entry("regression_predictions.json", "predicted_points_pixels",
        "[-Infinity, 1]"), 2, "regression_predictions.json[0]"),
    row("check file nested 100,000 deep", CHECK, raw_file("classification_predictions.json", DEEP), 1, "ERROR",
        "nested too deeply"),
    row("evaluate file nested 100,000 deep", EVALUATE, raw_file("classification_predictions.json", DEEP), 2,
        "classification_predictions.json", "nested too deeply"),
    row("check entry nested 100,000 deep", CHECK, raw_entry("detection_predictions.json", "bbox_pixels", DEEP), 1,
        "ERROR", "nested too deeply"),
    row("evaluate entry nested 100,000 deep", EVALUATE, raw_entry("regression_predictions.json",
        "predicted_points_pixels", DEEP), 2, "nested too deeply"),
    row("check probabilities nested 500 deep", CHECK, raw_entry("classification_predictions.json",
        "predicted_probs", "[" * 500 + "]" * 500), 1, "ERROR", "classification_predictions.json[0]"),
    row("check JSON a named pipe", CHECK, a_fifo("{pred}/detection_predictions.json"), 1, "ERROR", "named pipe"),
    row("evaluate JSON a named pipe", EVALUATE, a_fifo("{pred}/detection_predictions.json"), 2, "named pipe"),
    row("check JSON a folder", CHECK, lambda w: ((w.pred / "detection_predictions.json").unlink(),
        (w.pred / "detection_predictions.json").mkdir()), 1, "ERROR", "is a folder"),
    row("check JSON binary", CHECK, lambda w: (w.pred / "detection_predictions.json").write_bytes(b"\xff\xfe[]"), 1,
        "ERROR", "cannot read JSON"),
    row("check predicted mask a named pipe", CHECK, fifo_as(first_pred_mask), 1, "ERROR", "named pipe"),
    row("evaluate predicted mask a named pipe", EVALUATE, fifo_as(first_pred_mask), 2, "named pipe"),
    # -- named pipes in a data root: read only regular files, name the others ---------------------------
    row("data check CSV a named pipe", DATA_CHECK, a_fifo("{data}/csv_files/zz.csv"), 1, "zz.csv", "named pipe"),
    row("train CSV a named pipe", TRAIN, a_fifo("{data}/csv_files/zz.csv"), 2, "zz.csv", "named pipe"),
    row("predict CSV a named pipe", PREDICT + " --out {tmp}/out", a_fifo("{data}/csv_files/zz.csv"), 2, "zz.csv",
        "named pipe"),
    row("evaluate CSV a named pipe", EVALUATE, a_fifo("{data}/csv_files/zz.csv"), 2, "zz.csv", "named pipe"),
    row("check CSV a named pipe", CHECK, a_fifo("{data}/csv_files/zz.csv"), 2, "zz.csv", "named pipe"),
    row("data check image a named pipe", DATA_CHECK, fifo_as(first_image), 1, "named pipe"),
    row("data check image a named pipe, headers only", DATA_CHECK + " --header-only", fifo_as(first_image), 1,
        "named pipe"),
    row("data check mask a named pipe", DATA_CHECK, fifo_as(first_gt_mask), 1, "named pipe"),
    row("predict image a named pipe", PREDICT + " --out {tmp}/out", fifo_as(first_image), 2, "named pipe"),
    row("evaluate ground-truth mask a named pipe", EVALUATE, fifo_as(first_gt_mask), 2, "named pipe"),
    row("data check CSV a folder", DATA_CHECK, lambda w: (w.data / "csv_files" / "zz.csv").mkdir(), 1, "zz.csv",
        "is a folder"),
    row("predict checkpoint a named pipe", "predict --checkpoint {tmp}/c.pt --data {data} --out {tmp}/out",
        a_fifo("{tmp}/c.pt"), 2, "c.pt", "named pipe"),
    row("export checkpoint a named pipe", "export --checkpoint {tmp}/c.pt --out {tmp}/e", a_fifo("{tmp}/c.pt"), 2,
        "c.pt", "named pipe"),
    row("train resume from a named pipe", RESUME + " {tmp}/c.pt", both(damaged_checkpoints, a_fifo("{tmp}/c.pt")), 2,
        "named pipe"),
    # -- CSV names in any case are read, never dropped --------------------------------------------------
    row("data check upper-case CSV name is read", DATA_CHECK, upper_case_csv(), 0, "OK", "IUGC"),
    row("data check mixed-case CSV name is read", DATA_CHECK, upper_case_csv(".Csv"), 0, "OK", "IUGC"),
    row("data check a problem in an upper-case CSV", DATA_CHECK, bad_row_in_upper_case_csv, 1, "IUGC.CSV"),
    row("train a problem in an upper-case CSV", TRAIN, bad_row_in_upper_case_csv, 2, "IUGC.CSV"),
    # -- ground truth that does not fit its image --------------------------------------------------------
    row("evaluate ground-truth mask of another size", EVALUATE, rewrite_gt_mask(
        lambda m: cv2.resize(m, (100, 80), interpolation=cv2.INTER_NEAREST)), 2, "csv_files/", "ground-truth mask is 100x80",
        "but its image is"),
    row("evaluate ground-truth mask one row short", EVALUATE, rewrite_gt_mask(lambda m: m[:-1]), 2,
        "ground-truth mask is"),
    # -- a model whose outputs are not finite ---------------------------------------------------------
    row("predict NaN detection head", "predict --checkpoint {tmp}/nan.pt --data {data} --out {tmp}/out",
        nan_head("thyroid_nodule_det"), 2, "thyroid_nodule_det", "NaN"),
    row("predict NaN classification head", "predict --checkpoint {tmp}/nan.pt --data {data} --out {tmp}/out",
        nan_head("organ_cls"), 2, "organ_cls", "NaN"),
    row("predict NaN segmentation head", "predict --checkpoint {tmp}/nan.pt --data {data} --out {tmp}/out",
        nan_head("cardiac_multi"), 2, "cardiac_multi", "NaN"),
    row("predict NaN landmark head", "predict --checkpoint {tmp}/nan.pt --data {data} --out {tmp}/out",
        nan_head("IUGC"), 2, "IUGC", "NaN"),
    row("export a NaN model", "export --checkpoint {tmp}/nan.pt --out {tmp}/e", nan_head("IUGC"), 2, "nan.pt",
        "NaN"),
    row("export weights-only of a NaN model", "export --checkpoint {tmp}/nan.pt --weights-only --out {tmp}/w",
        nan_head("organ_cls"), 2, "nan.pt", "NaN"),
    # -- one line, however many problems -------------------------------------------------------------
    row("train many broken images, one line", TRAIN, all_images_broken, 2, "unreadable image"),
    row("train many broken CSV rows, one line", TRAIN, both(short_row, repeat_first_row), 2, "more problem(s)",
        "fmuia data check"),
    row("predict many broken images, one line", PREDICT + " --out {tmp}/out", all_images_broken, 2, "unreadable image"),
    # -- a full disk, a read-only folder: one line naming the path, no partial file -----------------------
    row("train disk full", TRAIN + " --set out_dir={tmp}/full/run", nothing, 2, "full/run", machine="full"),
    row("export disk full", EXPORT + " --out {tmp}/full/e", nothing, 2, "full", machine="full"),
    row("export weights-only disk full", EXPORT + " --weights-only --out {tmp}/full/w", nothing, 2, "full/w",
        machine="full"),
    row("phantom disk full", PHANTOM + " --out {tmp}/full/ph", nothing, 2, "full/ph", machine="full"),
    row("predict disk full", PREDICT + " --out {tmp}/full/sub", nothing, 2, "full/sub", machine="full"),
    row("evaluate json disk full", EVALUATE + " --json {tmp}/full/r.json", nothing, 2, "r.json", machine="full"),
    row("train read-only out_dir", TRAIN + " --set out_dir={tmp}/ro/run", nothing, 2, "ro/run", machine="ro"),
    row("train read-only existing out_dir", TRAIN + " --set out_dir={tmp}/ro", nothing, 2, "ro", machine="ro"),
    row("export read-only", EXPORT + " --out {tmp}/ro/e", nothing, 2, "ro", machine="ro"),
    row("export weights-only read-only", EXPORT + " --weights-only --out {tmp}/ro/w", nothing, 2, "ro/w",
        machine="ro"),
    row("phantom read-only", PHANTOM + " --out {tmp}/ro/ph", nothing, 2, "ro/ph", machine="ro"),
    row("predict read-only", PREDICT + " --out {tmp}/ro/sub", nothing, 2, "ro/sub", machine="ro"),
    row("predict read-only existing out", PREDICT + " --out {tmp}/ro", nothing, 2, "ro", machine="ro"),
    row("evaluate json read-only", EVALUATE + " --json {tmp}/ro/r.json", nothing, 2, "--json", "not writable",
        machine="ro"),
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
    yield World(data, pred, checkpoint, scratch)
    while HELD_LOCKS:
        HELD_LOCKS.pop().release()


def run(argv: list[str]) -> int:
    """``fmuia ARGV``'s exit status; argparse's refusals exit through SystemExit."""
    try:
        return fmuia(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1


def _mount(*options: str) -> Callable[[Path], bool]:
    def mount(folder: Path) -> bool:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)],
                              capture_output=True)
        return done.returncode == 0
    return mount


@contextlib.contextmanager
def the_machine(kind: str | None, tmp: Path) -> Iterator[None]:
    """``{tmp}/full``, a disk with no space left (a 64 KiB tmpfs, filled), or ``{tmp}/ro``, a
    read-only folder (a read-only tmpfs as root, else a folder without write permission)."""
    if kind is None:
        yield
        return
    folder = tmp / kind
    folder.mkdir()
    root = os.geteuid() == 0
    mounted = root and shutil.which("mount") is not None and _mount("size=64k" if kind == "full" else "ro")(folder)
    if kind == "full" and not mounted:
        pytest.skip("a full disk is a small tmpfs, and mounting one needs root")
    try:
        if kind == "full":
            fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
            try:  # no byte left
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
        if kind == "ro" and not mounted:
            folder.chmod(0o555)
        yield
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def partial_files(folder: Path) -> list[Path]:
    """Files under ``folder`` that a failed write left half-made: temporaries, an empty file
    (other than a run's lock), a checkpoint that fails its checksums, JSON that does not parse."""
    from fmuia_lib.state_file import StateFileError, verify
    from fmuia_lib.training.loop import LOCK_FILE

    bad = []
    for path in (p for p in folder.rglob("*") if p.is_file() and p.name != "filler"):
        if ".tmp" in path.name or ".partial" in path.name or (path.stat().st_size == 0 and path.name != LOCK_FILE):
            bad.append(path)
        elif path.suffix == ".pt":
            try:
                verify(path)
            except StateFileError:
                bad.append(path)
        elif path.suffix == ".json":
            try:
                json.loads(path.read_text())
            except ValueError:
                bad.append(path)
    return bad


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: World, capsys):
    case.breaks(world)
    before = {p: p.stat().st_mtime_ns for p in world.data.rglob("*") if p.is_file()}
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail(f"{case.id}: no answer in {HANG_S} s (a hang)"))
    signal.alarm(HANG_S)
    try:
        with the_machine(case.machine, world.tmp):
            status = run(world.argv(case.line))
            left = partial_files(world.tmp / case.machine) if case.machine else []
    finally:
        signal.alarm(0)
    out, err = capsys.readouterr()
    assert status == case.status, (out[-2000:], err[-2000:])
    text = err if status == 2 else out + err
    for word in case.words:
        assert word in text, (word, text[-2000:])
    if status == 2:
        assert err.count("error:") == 1 and "Traceback" not in err, err
        message = err[err.index("error:"):]
        assert len(message.strip().splitlines()) == 1, err  # one line, the last one
    assert not left, left  # a failed write leaves no partial file
    after = {p: p.stat().st_mtime_ns for p in world.data.rglob("*") if p.is_file()}
    assert after == before  # nothing written into the data root
    assert not any((world.tmp / "elsewhere").glob("**/*"))  # nor through a symbolic link
    assert "Traceback" not in out + err


def test_the_table_covers_every_command():
    verbs = {" ".join(c.line.split()[:2]) if c.line.startswith("data ") else c.line.split()[0] for c in CASES}
    assert verbs == {"predict", "evaluate", "validate-submission", "data check", "data phantom", "data real",
                     "train", "suite", "export", "course"}
    assert len(CASES) >= 350 and len({c.id for c in CASES}) == len(CASES)
    assert {c.status for c in CASES} == set(OUTCOMES)


def test_interrupt_exits_130_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """Only bad input becomes a message: Ctrl-C is exit 130, and an unexpected exception (a bug
    in fmuia) reaches the caller with its traceback, even when it is a ValueError."""
    module = sys.modules["fmuia_lib.data.layout"]

    def interrupted(args):
        raise KeyboardInterrupt

    def buggy(args):
        raise ValueError("an internal mistake")

    monkeypatch.setattr(module, "check_main", interrupted)
    assert fmuia(["data", "check", "."]) == 130 and "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(module, "check_main", buggy)
    with pytest.raises(ValueError, match="an internal mistake"):
        fmuia(["data", "check", "."])


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    """``fmuia data check ROOT | head``: the reader going away is no error of fmuia's."""
    def print_into_closed_pipe(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys.modules["fmuia_lib.data.layout"], "check_main", print_into_closed_pipe)
    assert fmuia(["data", "check", "."]) == 141
    assert "Traceback" not in capsys.readouterr().err


def test_a_worker_traceback_is_cut_from_the_message():
    from fmuia_lib.data.layout import LayoutError

    wrapped = LayoutError("Caught LayoutError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                          "call last):\n  File \"x.py\", line 1\nfmuia_lib.data.layout.LayoutError: "
                          "csv_files/a.csv:2: ../x.png: truncated PNG")
    assert cli.error_message(wrapped) == "csv_files/a.csv:2: ../x.png: truncated PNG"
