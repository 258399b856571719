"""Write the phantom as two data roots in the challenge layout (``fmuia data phantom``).

Every image is rendered from its own random generator, seeded by (seed, task, split,
index) (see :func:`render.image_rng`), so the files are byte-identical whatever the number
of worker processes and whichever subset of tasks is asked for. The classes of a
classification split follow the manifest's class weights exactly (:func:`render.class_plan`,
seeded by (seed, task, split) and the split's size). Workers render and write images and
masks; the parent writes the CSVs and ``phantom.json`` (seed, counts and a SHA-256
fingerprint of every file written).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from fmuia_lib.data.layout import SPLIT_FOLDERS, BOX_COLUMNS, rel_path, sample_files, write_task_csv
from fmuia_lib.paths import CSV_DIR, data_root_below, inside_data_root_problem
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TaskSpec, load_manifest, select_tasks
from .render import PhantomError, class_plan, image_rng, render

MARKER = "phantom.json"
GENERATOR = "fmuia phantom"
#: Which images and file names a seed gives; raised whenever that changes, so that the runner
#: makes a phantom of an earlier version again instead of training on other data.
VERSION = 2
#: zlib level of the PNGs: fast to write, and part of what makes files byte-reproducible.
PNG_COMPRESSION = 3

Job = tuple[str, str, int, int, str, int | None]  # (task_id, split, index, seed, split root, class)


def generate_phantom(out: str | Path, seed: int = 0, n_train: int = 96, n_val: int = 64,
                     tasks: list[str] | None = None, workers: int | None = None,
                     overwrite: bool = False, progress: bool = False) -> dict:
    """Write ``OUT/train`` and ``OUT/val`` (data roots) and ``OUT/phantom.json``.

    ``tasks`` limits the subtasks (default: all of the manifest); ``workers`` is the number
    of processes (default: CPU count; 1 renders in this process). An ``OUT`` that is not
    empty is refused unless ``overwrite``; then only ``train/``, ``val/`` and
    ``phantom.json`` of an earlier phantom are removed, nothing else. Returns the summary
    that ``phantom.json`` holds plus ``seconds`` and ``workers``.
    """
    started = time.perf_counter()
    out = Path(out)
    specs = _check_arguments(seed, n_train, n_val, tasks, workers)
    workers = workers or os.cpu_count() or 1
    existed = out.exists()
    try:
        _prepare_output(out, overwrite)
        summary = _generate(out, seed, n_train, n_val, specs, workers, progress)
    except OSError as err:  # disk full, read-only: remove what this run wrote, name the path
        for split in SPLIT_FOLDERS:
            shutil.rmtree(out / split, ignore_errors=True)
        (out / MARKER).unlink(missing_ok=True)
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise PhantomError(f"cannot write {err.filename or out}: {err.strerror or err}; "
                           f"nothing of the phantom is left in {out}") from None
    return {**summary, "seconds": round(time.perf_counter() - started, 2), "workers": workers}


def _generate(out: Path, seed: int, n_train: int, n_val: int, specs: list[TaskSpec], workers: int,
              progress: bool) -> dict:
    """Render every image, write the CSVs and the marker; return the marker's summary."""
    counts = {"train": n_train, "val": n_val}
    plans = {(t.task_id, split): class_plan(t, seed, split, counts[split])
             for split in SPLIT_FOLDERS for t in specs if t.task_type == CLASSIFICATION}
    jobs: list[Job] = [(t.task_id, split, i, seed, str(out / split),
                        plans[t.task_id, split][i] if (t.task_id, split) in plans else None)
                       for split in SPLIT_FOLDERS for t in specs for i in range(counts[split])]
    records = _run_jobs(jobs, workers, progress)
    for split in SPLIT_FOLDERS:
        for task in specs:
            write_task_csv(out / split, task, [r for job, r in zip(jobs, records)
                                               if job[0] == task.task_id and job[1] == split])

    files = sorted(p for split in SPLIT_FOLDERS for p in (out / split).rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(out).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    summary = {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": seed,
        "tasks": [t.task_id for t in specs],
        "counts": {split: {t.task_id: counts[split] for t in specs} for split in SPLIT_FOLDERS},
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "fingerprint": digest.hexdigest(),
    }
    (out / MARKER).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _check_arguments(seed: int, n_train: int, n_val: int, tasks: list[str] | None,
                     workers: int | None) -> list[TaskSpec]:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise PhantomError(f"--seed must be an integer in [0, 2**32), not {seed!r}")
    for name, n in (("train", n_train), ("val", n_val)):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise PhantomError(f"--{name} must be at least 1 image per subtask, not {n!r}")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise PhantomError(f"--workers must be at least 1, not {workers!r}")
    if tasks is not None:
        if not tasks:
            raise PhantomError("--tasks is empty: name at least one task, or leave it out for every task")
        repeated = sorted({t for t in tasks if list(tasks).count(t) > 1})
        if repeated:
            raise PhantomError(f"--tasks names {', '.join(repeated)} more than once")
    try:
        return select_tasks(tasks)
    except KeyError as err:
        raise PhantomError(f"{err.args[0]}; known: {', '.join(load_manifest())}") from None


def _prepare_output(out: Path, overwrite: bool) -> None:
    """Create ``out``, or clear what an earlier phantom wrote there when allowed. ``out``
    must not lie in an existing data root, and what the phantom replaces must be its own
    folders, not symbolic links to folders elsewhere."""
    if out.exists() and not out.is_dir():
        raise PhantomError(f"--out {out} exists and is not a folder")
    problem = inside_data_root_problem(out, "the phantom")
    if problem:
        raise PhantomError(problem)
    others = [child for child in (sorted(out.iterdir()) if out.is_dir() else []) if child.name not in SPLIT_FOLDERS
              and child.is_dir() and ((child / CSV_DIR).is_dir() or data_root_below(child) is not None)]
    if others:
        raise PhantomError(f"--out {out} contains the data root {others[0]}; write the phantom elsewhere")
    linked = [out / name for name in (*SPLIT_FOLDERS, MARKER) if (out / name).is_symlink()]
    if linked:
        raise PhantomError(f"--out {out}: {linked[0].name} is a symbolic link (to {os.path.realpath(linked[0])}); "
                           "the phantom writes only into its own folders")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise PhantomError(f"--out {out} is not empty; pass --overwrite to replace a phantom "
                               "written there earlier")
        marker = out / MARKER
        owned = [out / split for split in SPLIT_FOLDERS if (out / split).exists()]
        if owned and not _is_phantom_marker(marker):
            raise PhantomError(f"--out {out} holds {', '.join(p.name for p in owned)} but no {MARKER} "
                               "written by the phantom; refusing to delete data the phantom did not write")
        for path in owned:
            shutil.rmtree(path)
        marker.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _is_phantom_marker(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _run_jobs(jobs: list[Job], workers: int, progress: bool) -> list[dict]:
    """Render and write every job; returns the CSV records in job order."""
    from fmuia_lib.progress import tqdm

    bar = tqdm(total=len(jobs), desc="phantom", unit="img", disable=not progress)
    if workers == 1:
        records = []
        for job in jobs:
            records.append(_write_sample(job))
            bar.update()
    else:
        chunk = max(1, len(jobs) // (workers * 8))
        # spawn: safe whatever threads the parent runs (torch, notebooks); each worker imports
        # only this module.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
            records = []
            for record in pool.map(_write_sample, jobs, chunksize=chunk):
                records.append(record)
                bar.update()
    bar.close()
    return records


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one image per process; no nested thread pools


def _write_sample(job: Job) -> dict:
    """Render one image of one task and write its files; returns its CSV record."""
    task_id, split, index, seed, root_str, cls = job
    task = load_manifest()[task_id]
    root = Path(root_str)
    sample = render(task, image_rng(seed, task_id, split, index), cls)
    name = f"{task_id}_{split}_{index:05d}.png"
    image_file, mask_file = sample_files(root, task, name)
    _write_png(image_file, sample.image)
    record: dict = {"image_path": rel_path(root, image_file)}
    if task.task_type == SEGMENTATION:
        _write_png(mask_file, sample.target)
        record["mask_path"] = rel_path(root, mask_file)
    elif task.task_type == CLASSIFICATION:
        record["mask"] = int(sample.target)
    elif task.task_type == DETECTION:
        record.update(zip(BOX_COLUMNS, (float(v) for v in sample.target)))
    elif task.task_type == REGRESSION:
        record["points"] = sample.target.tolist()
    return record


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise OSError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())


def phantom_main(args: argparse.Namespace) -> int:
    """``fmuia data phantom``: generate, print a summary (a PhantomError is bad input: ``cli.main``)."""
    sizes = {k: v for k, v in (("n_train", args.train), ("n_val", args.val)) if v is not None}
    summary = generate_phantom(args.out, seed=args.seed, tasks=args.tasks, workers=args.workers,
                               overwrite=args.overwrite, progress=sys.stderr.isatty(), **sizes)
    print(f"phantom: {len(summary['tasks'])} subtasks, {summary['files']} files "
          f"({summary['bytes'] / 1e6:.1f} MB) in {args.out} [train, val] in {summary['seconds']} s "
          f"with {summary['workers']} worker(s); seed {summary['seed']}, "
          f"fingerprint {summary['fingerprint'][:16]}")
    return 0
