"""Time to write the default phantom with 1 and 2 worker processes.

Every subtask, with the generator's default train and val image counts; prints wall and CPU
seconds, files and megabytes.

Usage: python benchmarks/bench_phantom.py [--train N] [--val N] [--workers 1 2] [--out DIR]
Target: the default phantom in under a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import inspect
import resource
import shutil
import tempfile
import time
from pathlib import Path

from fmuia_lib.sources.phantom import generate_phantom, render
from fmuia_lib.sources.phantom.render import image_rng
from fmuia_lib.tasks import load_manifest


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    defaults = inspect.signature(generate_phantom).parameters
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=defaults["n_train"].default)
    parser.add_argument("--val", type=int, default=defaults["n_val"].default)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()

    tasks = list(load_manifest().values())
    start = time.perf_counter()
    for task in tasks:
        render(task, image_rng(0, task.task_id, "train", 0))
    per_image = (time.perf_counter() - start) / len(tasks)
    print(f"render only: {1000 * per_image:.1f} ms per image (mean over {len(tasks)} subtasks, 1 process)")

    scratch = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_phantom_"))
    fingerprints = set()
    try:
        for workers in args.workers:
            out = scratch / f"w{workers}"
            cpu0 = _cpu_seconds()
            summary = generate_phantom(out, seed=0, n_train=args.train, n_val=args.val, workers=workers,
                                       overwrite=True)
            cpu = _cpu_seconds() - cpu0
            fingerprints.add(summary["fingerprint"])
            images = len(tasks) * (args.train + args.val)
            print(f"workers={workers}: {summary['seconds']:.1f} s wall, {cpu:.1f} s CPU, "
                  f"{images} images, {summary['files']} files, {summary['bytes'] / 1e6:.1f} MB, "
                  f"fingerprint {summary['fingerprint'][:16]}")
        print(f"identical output across worker counts: {len(fingerprints) == 1}")
    finally:
        if not args.out:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
