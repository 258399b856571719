"""Prediction: a model over a data root -> prediction records -> a submission, or scores.

One path from model outputs to a score, used by ``fmuia predict``, the exported Docker
``Model`` and training-time validation alike::

    PredictionDataset (no labels)  ──DataLoader, one task per batch──>  model.predict
        ──records_from_outputs──>  prediction records, in original pixels
            ├──write_submission──>  submission folder  ──fmuia evaluate──┐
            └──evaluate.evaluate_records (in memory) ─────────────────────┴─> evaluate.score

The model works in its own frame (every image resized to ``image_size``). The
evaluation transform resizes the *whole* image, so a normalised coordinate maps back to
the original image by multiplying with its width (x) or height (y)
(:func:`~fmuia_lib.challenge.submission.to_pixels`), and mask probabilities are resized back to
the original size before the arg-max.

*Prediction records* are plain dicts, so the format can be tested without a model (see
:func:`write_submission`). The submission format itself is described in
:mod:`fmuia_lib.challenge.submission`.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np

from fmuia_lib.paths import atomic_write, lies_inside
from fmuia_lib.progress import tqdm
from fmuia_lib.state_file import StateFileError, load_state
from fmuia_lib.challenge.submission import (PREDICTION_FILES, SubmissionError, encode_mask, entry_from_record, iter_records,
                                  mask_from_record, mask_output_path, submission_path,
                                  to_pixels)
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, SEGMENTATION, TaskSpec, load_manifest

if TYPE_CHECKING:
    import torch

    from fmuia_lib.model import MultiTaskNet

__all__ = ["PREDICTION_FILES", "SubmissionError", "ModelLoadError", "submission_path", "to_pixels",
           "mask_output_path", "write_submission", "records_from_ground_truth", "records_from_outputs",
           "predict_records", "predict_to_submission", "check_output_folder", "load_model",
           "inference_state", "predict_main"]

#: ``format`` of a weights-only inference file (``fmuia export``'s ``weights.pt``).
WEIGHTS_FORMAT = "fmuia-weights/2"


class ModelLoadError(ValueError):
    """A checkpoint or weights file cannot be loaded; the message names the file and why."""


# --------------------------------------------------------------------------------------
# Writing files, never outside the output folder
# --------------------------------------------------------------------------------------
def _safe_target(out_real: str, out_dir: Path, relative: str) -> Path:
    """``out_dir / relative``, refused when symbolic links would take it outside ``out_dir``."""
    target = out_dir / relative
    if not lies_inside(target, out_real):
        real = os.path.realpath(target)
        raise SubmissionError(f"refusing to write {target}: it resolves to {real}, outside the output folder "
                              f"{out_real} (a symbolic link)")
    return target


def _prepare_output(out_dir: Path) -> str:
    """Create ``out_dir`` (a folder; never a file) and return its real path."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SubmissionError(f"output folder {out_dir} is a file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SubmissionError(f"cannot create the output folder {out_dir}: {err.strerror or err}") from None
    return os.path.realpath(out_dir)


def write_submission(out_dir: str | Path, records: Iterable[Mapping[str, Any]],
                     manifest: str | Path | Mapping[str, TaskSpec] | None = None) -> dict[str, int]:
    """Write prediction records as a challenge submission in ``out_dir``; return counts per type.

    Every record has ``task_id`` and ``image_path`` (exactly as in the CSV), plus:

    ==============  ==================================================================
    segmentation    ``mask_path`` (the CSV's, or :func:`mask_output_path`'s), ``mask``
                    (H x W class indices at the original image size)
    classification  ``probs`` (C probabilities; ``predicted_class`` is their arg-max)
    detection       ``box_normalized`` ([x_min, y_min, x_max, y_max] in [0, 1]),
                    ``orig_size`` ((height, width) of the original image)
    Regression      ``points_normalized`` (K x 2 or flat 2K, [0, 1]), ``orig_size``
    ==============  ==================================================================

    All three JSON files are always written (an empty list when a type has no
    records). Nothing is written outside ``out_dir``, symbolic links included. Raises
    :class:`SubmissionError` on an unknown task, a duplicate record, malformed values,
    or a path that would land outside ``out_dir``.
    """
    tasks = dict(manifest) if isinstance(manifest, Mapping) else load_manifest(manifest)
    out_dir = Path(out_dir)
    out_real = _prepare_output(out_dir)
    entries: dict[str, list[dict[str, Any]]] = {kind: [] for kind in PREDICTION_FILES}
    counts = {kind: 0 for kind in (SEGMENTATION, *PREDICTION_FILES)}
    for _, task, record, where in iter_records(records, tasks):
        if task.task_type == SEGMENTATION:
            relative, mask = mask_from_record(task, record, where)
            target = _safe_target(out_real, out_dir, relative)
            atomic_write(target, encode_mask(mask))  # a failure names the file and leaves none half-written
        else:
            entries[task.task_type].append(entry_from_record(task, record, where))
        counts[task.task_type] += 1
    for kind, file_name in PREDICTION_FILES.items():  # each whole or not at all
        atomic_write(_safe_target(out_real, out_dir, file_name), json.dumps(entries[kind], indent=1))
    return counts


def check_output_folder(out_dir: str | Path, data_root: str | Path) -> None:
    """Refuse an output folder that is a file, or is, contains or lies inside ``data_root`` or
    any other data root (symbolic links resolved; the labelled original of a test set
    too): a submission must never overwrite data, ground-truth masks least of all (the
    rule is :func:`fmuia_lib.paths.output_problem`)."""
    from fmuia_lib.paths import output_folder_problem, output_problem

    problem = output_folder_problem(out_dir, data_root, name="--out") or output_problem(
        out_dir, name="--out", what="the submission", inputs=[(data_root, "the data root")])
    if problem:
        raise SubmissionError(problem)


def records_from_ground_truth(data_root: str | Path,
                              manifest: str | Path | Mapping[str, TaskSpec] | None = None) -> list[dict[str, Any]]:
    """Prediction records that repeat the ground truth of ``data_root`` (a perfect submission).

    Useful to see the format, and as a check of the whole chain: written with
    :func:`write_submission` and scored, they give DSC 1, HD 0, IoU 1 and MRE 0.
    """
    from fmuia_lib.data.images import image_size, read_mask
    from fmuia_lib.data.layout import read_root

    tasks = dict(manifest) if isinstance(manifest, Mapping) else load_manifest(manifest)
    frame = read_root(data_root, tasks)
    records: list[dict[str, Any]] = []
    for row in frame.to_dict("records"):
        task = tasks[row["task_id"]]
        record: dict[str, Any] = {"task_id": task.task_id, "image_path": row["image_path"]}
        if task.task_type == SEGMENTATION:
            record["mask_path"] = row["mask_path"]
            record["mask"] = read_mask(row["mask_file"]).values
        elif task.task_type == CLASSIFICATION:
            record["probs"] = np.eye(task.num_classes)[row["target"]]
        else:
            height, width = image_size(row["image_file"])
            coords = np.asarray(row["target"], dtype=np.float64).reshape(-1, 2) / np.array([width, height], float)
            key = "box_normalized" if task.task_type == DETECTION else "points_normalized"
            record[key] = coords.ravel()
            record["orig_size"] = (height, width)
        records.append(record)
    return records


# --------------------------------------------------------------------------------------
# From a model
# --------------------------------------------------------------------------------------
def records_from_outputs(task: TaskSpec, batch: Mapping[str, Any], output: Mapping[str, "torch.Tensor"]
                         ) -> list[dict[str, Any]]:
    """Model outputs of one collated prediction batch (model frame) -> prediction records
    (original frame). The one place where model outputs become predictions.

    Segmentation probabilities are resized (bilinear) to each image's original size
    before the arg-max; boxes and points stay normalised, with ``orig_size`` beside them
    (``write_submission`` turns them into pixels with :func:`to_pixels`).
    """
    import torch
    import torch.nn.functional as F

    key = {SEGMENTATION: "probs", CLASSIFICATION: "probs", DETECTION: "boxes"}.get(task.task_type, "points")
    values = output[key]
    finite = torch.isfinite(values.reshape(len(values), -1)).all(dim=1)
    if not bool(finite.all()):  # NaN boxes would otherwise become "bbox_pixels": [NaN, ...] and exit 0
        first = int((~finite).nonzero()[0, 0])
        raise SubmissionError(f"the model's {task.task_type} output for {batch['image_path'][first]} "
                              f"({task.task_id}) holds NaN or infinite values: the weights are broken "
                              "(a diverged or damaged model); nothing is written from it")
    records = []
    sizes = [(int(h), int(w)) for h, w in batch["orig_size"].tolist()]
    for i, (image_path, (height, width)) in enumerate(zip(batch["image_path"], sizes)):
        record: dict[str, Any] = {"task_id": task.task_id, "image_path": image_path}
        if task.task_type == SEGMENTATION:
            probs = F.interpolate(output["probs"][i:i + 1].float(), size=(height, width),
                                  mode="bilinear", align_corners=False)
            record["mask_path"] = mask_output_path(image_path, batch["mask_path"][i])
            record["mask"] = probs[0].argmax(dim=0).to("cpu", dtype=torch.uint8).numpy()
        elif task.task_type == CLASSIFICATION:
            probs = output["probs"][i].double().cpu().numpy()
            record["probs"] = probs / probs.sum()  # float32 softmax -> exact float64 sum
        elif task.task_type == DETECTION:
            record["box_normalized"] = output["boxes"][i].double().cpu().numpy()
            record["orig_size"] = (height, width)
        else:
            record["points_normalized"] = output["points"][i].double().cpu().numpy()
            record["orig_size"] = (height, width)
        records.append(record)
    return records


def predict_records(model: "MultiTaskNet", dataset, batch_size: int = 16, device: "str | torch.device | None" = None,
                    num_workers: int = 0, amp_dtype: "torch.dtype | None" = None,
                    progress: bool = False) -> Iterator[dict[str, Any]]:
    """Prediction records for every row of ``dataset`` (a
    :class:`~fmuia_lib.data.dataset.PredictionDataset`), one task per batch through a
    DataLoader (``num_workers`` processes; 0 reads in this process).

    Returns an iterator, so that a whole set's masks never have to be held at once
    (``write_submission`` and ``Submission.from_records`` consume it as it comes). The
    model runs in eval mode on ``device`` (default: the model's), under autocast when
    ``amp_dtype`` is given. Raises :class:`SubmissionError` at once for a batch size
    below 1 or a task the model has no head for.
    """
    import torch

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise SubmissionError(f"batch size must be a whole number >= 1, got {batch_size!r}")
    missing = [t.task_id for t in dataset.tasks if t.task_id not in model.task_ids]
    if missing:
        raise SubmissionError(f"the model has no head for task(s) {missing} found in the data")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    return _iter_predictions(model, dataset, batch_size, device, num_workers, amp_dtype, progress)


def _iter_predictions(model, dataset, batch_size, device, num_workers, amp_dtype, progress):
    import torch
    from torch.utils.data import DataLoader

    from fmuia_lib.data.dataset import collate, task_batches
    from fmuia_lib.data.layout import LayoutError
    from fmuia_lib.model import MultiTaskNet

    if isinstance(model, MultiTaskNet):
        model.place(device, model.channels_last_setting)  # the memory format it was validated in
    else:  # any module with MultiTaskNet's predict() and task()
        model.to(device)
    loader = DataLoader(dataset, batch_sampler=task_batches(dataset.task_indices, batch_size),
                        collate_fn=collate, num_workers=num_workers, pin_memory=device.type == "cuda")
    batches = iter(loader)
    unreadable: list[str] = []
    with tqdm(total=len(dataset), desc="predict", unit="img", disable=not progress) as bar:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except LayoutError as err:  # an unreadable image, named by CSV line
                raise _without_worker_traceback(err) from None
            task = dataset.specs[batch["task_id"]]
            images = batch["image"].to(device, non_blocking=True)
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                output = model.predict(images, task.task_id)
            unreadable += [f"{source} {path}: {reason}" for source, path, reason
                           in zip(batch["source"], batch["image_path"], batch.get("unreadable") or []) if reason]
            yield from records_from_outputs(task, batch, output)
            bar.update(len(batch["image_path"]))
    if unreadable:
        report_unreadable(unreadable)


def report_unreadable(lines: list[str], stream=None) -> None:
    """List on stderr the images that got a stand-in prediction (``unreadable="fallback"``)."""
    stream = stream or sys.stderr
    print(f"warning: {len(lines)} image(s) could not be read; each got the model's prediction for a black "
          f"image of its size, so the submission is complete but these predictions are guesses:", file=stream)
    for line in lines:
        print(f"  {line}", file=stream)
    stream.flush()


def _without_worker_traceback(err: Exception) -> Exception:
    """A DataLoader worker's exception is raised again with the worker's traceback as its
    message; keep only the original message (bad input is reported without tracebacks)."""
    text = str(err).rstrip()
    marker = f"{type(err).__module__}.{type(err).__name__}: "
    if text.startswith("Caught ") and marker in text:
        return type(err)(text.rsplit(marker, 1)[1])
    return err


def predict_to_submission(model: "MultiTaskNet", data_root: str | Path, out: str | Path,
                          image_size: int | tuple[int, int], batch_size: int = 16, device: str | None = None,
                          progress: bool = True, num_workers: int = 0,
                          amp_dtype: "torch.dtype | None" = None, unreadable: str = "error",
                          cache: str | Path | None = None) -> dict[str, int]:
    """Run ``model`` on every row of ``data_root``'s CSVs and write the submission to ``out``.

    The data root needs only the four common CSV columns (``image_path, task_id,
    task_name, num_classes``); label columns are ignored and masks never opened. Images go
    through the evaluation transform (``build_transforms(image_size, train=False)``: a
    plain resize, the one the model was trained with, ``model.input_resize``). A
    segmentation mask is written at the CSV's ``mask_path`` when the CSV has that column,
    else at the name the challenge's Docker code uses (``image_path`` with ``img`` ->
    ``mask``, see :func:`mask_output_path`), always inside ``out``.
    ``out`` must not be, contain or lie inside the data root. Returns the counts per task
    type (see :func:`write_submission`). ``unreadable="fallback"`` is the exported
    container's reading (:class:`~fmuia_lib.data.dataset.PredictionDataset`): images read by
    content as the challenge does, an image that still cannot be read predicted as a black
    image and listed on stderr; the default ``"error"`` stops at the first one, naming it.
    ``cache``: a folder for the root's prepared form (:mod:`fmuia_lib.data.cache`, images at
    ``image_size``), built there when missing or stale; the same predictions, read faster.
    """
    import torch

    from fmuia_lib.data.dataset import PredictionDataset
    from fmuia_lib.data.transforms import build_transforms

    check_output_folder(out, data_root)
    dataset = PredictionDataset(data_root, transforms=build_transforms(
        image_size, train=False, resize=getattr(model, "input_resize", "antialias")),
                                unreadable=unreadable)
    if cache is not None:
        from fmuia_lib.data.cache import build_cache

        if unreadable != "error":
            raise SubmissionError("--cache reads readable images only; use it without --unreadable fallback")
        size = image_size if isinstance(image_size, int) else image_size[0]
        dataset = dataset.with_cache(build_cache(data_root, cache, size, labels=False,
                                                 resize=getattr(model, "input_resize", "antialias")))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    records = predict_records(model, dataset, batch_size=batch_size, device=device, num_workers=num_workers,
                              amp_dtype=amp_dtype, progress=progress)
    return write_submission(out, records, manifest={t.task_id: t for t in dataset.tasks})


# --------------------------------------------------------------------------------------
# Loading a model for inference
# --------------------------------------------------------------------------------------
def inference_state(model: "MultiTaskNet", image_size: int, versions: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    """What inference needs and nothing else (no optimiser, no history): the weights-only
    file ``fmuia export`` writes, loadable with ``torch.load(weights_only=True)``."""
    from fmuia_lib.tasks import manifest_hash

    return {"format": WEIGHTS_FORMAT, "model": model.state_dict(), "task_ids": list(model.task_ids),
            "architecture": dict(model.architecture), "image_size": int(image_size),
            "channels_last": model.channels_last_setting, "input_resize": model.input_resize,
            "manifest_hash": manifest_hash(model.task_ids), "versions": dict(versions or {})}


def load_model(path: str | Path, device: "str | torch.device" = "cpu") -> tuple["MultiTaskNet", int, dict]:
    """``(model in eval mode, its input size, the file's dict)`` from a training checkpoint
    or a weights-only inference file. Every failure (missing, empty, truncated, corrupted
    or foreign file, tasks that no longer match the manifest) raises :class:`ModelLoadError`."""
    path = Path(path)
    try:
        state = load_state(path, map_location=device)  # checksums verified, weights_only
    except StateFileError as err:
        raise ModelLoadError(str(err)) from None
    # a weights file, or a training checkpoint (which load_checkpoint checks further)
    if not isinstance(state, dict) or (state.get("format") != WEIGHTS_FORMAT and "config" not in state):
        raise ModelLoadError(f"checkpoint {path} is not an fmuia checkpoint or weights file")
    try:
        if state["format"] == WEIGHTS_FORMAT:
            model, size = _model_from_weights(state, path)
        else:
            from fmuia_lib.checkpoint import load_checkpoint

            model, config, _ = load_checkpoint(path, map_location=device)
            size = config.image_size
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        detail = f"missing entry {err.args[0]!r}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise ModelLoadError(f"checkpoint {path} cannot be used: {detail}") from None
    broken = [name for name, tensor in model.state_dict().items()
              if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if broken:  # its outputs would be NaN: refused here, before any file is written from them
        raise ModelLoadError(f"checkpoint {path}: {len(broken)} weight tensor(s) hold NaN or infinite values "
                             f"(e.g. {', '.join(broken[:2])}): a diverged or damaged model cannot predict")
    return model.place(device, model.channels_last_setting).eval(), int(size), state


def _model_from_weights(state: Mapping[str, Any], path: Path) -> tuple["MultiTaskNet", int]:
    from fmuia_lib.model import MultiTaskNet
    from fmuia_lib.tasks import manifest_hash, select_tasks

    task_ids = list(state["task_ids"])
    if state["manifest_hash"] != manifest_hash(task_ids):
        raise ValueError(f"the manifest defines tasks {task_ids} differently than when {path.name} was written")
    model = MultiTaskNet(select_tasks(task_ids), encoder_weights=None, **state["architecture"])
    model.load_state_dict(state["model"])
    model.channels_last_setting = state.get("channels_last")  # files written before it was stored: None
    model.input_resize = state.get("input_resize", "antialias")  # files written before it was stored
    return model, int(state["image_size"])


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def _device_problem(name: str) -> str | None:
    """Why ``--device NAME`` cannot be used here (None when it can)."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        return f"--device {name!r} is not a device name (cpu, cuda, cuda:1 ...)"
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        return f"--device {name}: no such CUDA device here ({torch.cuda.device_count()} available)"
    return None


def predict_main(args) -> int:
    """``fmuia predict --checkpoint C --data ROOT --out DIR`` (exit 2 on unusable input)."""
    from fmuia_lib.data.cache import CacheError
    from fmuia_lib.data.layout import LayoutError

    from fmuia_lib.paths import one_line

    def fail(message: str) -> int:
        print(f"fmuia predict: error: {one_line(message)}", file=sys.stderr)
        return 2

    if args.batch_size < 1:
        return fail(f"--batch-size must be at least 1, got {args.batch_size}")
    workers = getattr(args, "workers", 0) or 0
    if workers < 0:
        return fail(f"--workers must be 0 or more, got {workers}")
    if args.device is not None:
        problem = _device_problem(args.device)
        if problem:
            return fail(problem)
    try:
        check_output_folder(args.out, args.data)
        model, image_size, _ = load_model(args.checkpoint)
        counts = predict_to_submission(model, args.data, args.out, image_size, batch_size=args.batch_size,
                                       device=args.device, progress=True, num_workers=workers,
                                       unreadable=getattr(args, "unreadable", "error"),
                                       cache=getattr(args, "cache", None))
    except (LayoutError, SubmissionError, ModelLoadError, CacheError) as err:
        return fail(str(err))
    written = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    print(f"wrote a submission to {args.out}: {written or 'nothing (no rows)'}")
    return 0
