"""Training throughput, trainer overhead, data-pipeline headroom and peak memory.

Prints figures only (targets are printed next to them, never asserted)::

    python benchmarks/bench_training.py [--root ROOT] [--steps 24] [--threads 1] [--size PX]

CPU part: the ``cpu-smoke`` profile (``fmuia_lib/profiles/cpu-smoke.yaml``) on the
phantom's training root (``runs/phantom/train``, or a synthetic root from the test
builder when it is missing):

* bare model forward + loss + backward on pre-loaded batches, vs the trainer's full
  step (``Trainer.train_step``: adds clipping, optimiser, schedule, logging) on the
  same batches; target: the full step costs at most 15 % more. The AdamW update is
  also timed alone, to tell the optimiser's own cost from the trainer's;
* the data pipeline with 2 workers (images/s) vs what the model consumes; target >= 3x;
* peak RSS of a whole smoke training run (a child process); target <= 4 GB.

CUDA part (when a GPU is present): the ``gpu-full`` profile (EfficientNet-B4, 256 px, batch
20, AMP) with channels_last and random weights; the same bare-vs-step comparison, images/s,
peak GPU memory and the data pipeline (``gpu_check.py`` times a few hundred steps of it).
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fmuia_lib.config import TrainConfig
from fmuia_lib.data.dataset import collate
from fmuia_lib.profiles import run_settings
from fmuia_lib.training.loop import StepBatches, Trainer
from fmuia_lib.training.distributed import DistributedContext

REPO = Path(__file__).resolve().parents[1]
PROFILE = "cpu-smoke"


def smoke_root(tmp: Path) -> tuple[Path, Path]:
    """(train root, val root): the phantom's when present, else a synthetic one."""
    phantom = REPO / "runs" / "phantom"
    if (phantom / "train" / "csv_files").is_dir():
        return phantom / "train", phantom / "val"
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_root  # the synthetic-root builder of the tests
    from fmuia_lib.tasks import load_manifest

    tasks = list(load_manifest())
    return make_root(tmp, tasks=tasks, n=8, name="train"), make_root(tmp, tasks=tasks, n=3, seed=1, name="val")


def fixed_batches(trainer: Trainer, count: int) -> list[dict]:
    """The first ``count`` batches of the training stream, loaded once."""
    loader = DataLoader(trainer.train_set, batch_sampler=StepBatches(trainer.sampler, 0, count),
                        collate_fn=collate, num_workers=0)
    return list(loader)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_seconds(trainer: Trainer, batches: list[dict], optimizer_step: bool = False) -> float:
    """Forward + loss + backward only (with ``optimizer_step``: plus the AdamW update), same
    batches, same precision and memory format."""
    device, model = trainer.device, trainer.model
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        images = batch["image"].to(device, non_blocking=True)
        if trainer.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = batch["target"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=trainer.amp_dtype, enabled=trainer.amp_dtype is not None):
            outputs = model(images, batch["task_id"])
        loss, _ = trainer.criterion(outputs, target, model.task(batch["task_id"]))
        trainer.scaler.scale(loss).backward()
        if optimizer_step:
            trainer.scaler.step(trainer.optimizer)  # unscales first when fp16 AMP scales the loss
            trainer.scaler.update()
        model.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def step_seconds(trainer: Trainer, batches: list[dict]) -> float:
    sync(trainer.device)
    start = time.perf_counter()
    for batch in batches:
        trainer.train_step(batch)
    sync(trainer.device)
    return time.perf_counter() - start


def compare_step_overhead(trainer: Trainer, batches: list[dict], repeats: int = 3) -> tuple[float, float, float]:
    """Best-of-``repeats`` seconds per batch: (bare forward+backward, the same plus the AdamW
    update, full train step)."""
    bare_seconds(trainer, batches[:2])  # warm-up (allocator, cuDNN autotuning)
    step_seconds(trainer, batches[:2])
    bare = min(bare_seconds(trainer, batches) for _ in range(repeats)) / len(batches)
    with_adamw = min(bare_seconds(trainer, batches, optimizer_step=True) for _ in range(repeats)) / len(batches)
    step = min(step_seconds(trainer, batches) for _ in range(repeats)) / len(batches)
    return bare, with_adamw, step


def loader_images_per_second(trainer: Trainer, steps: int, workers: int) -> float:
    loader = DataLoader(trainer.train_set, batch_sampler=StepBatches(trainer.sampler, 0, steps + 1),
                        collate_fn=collate, num_workers=workers)
    it = iter(loader)
    next(it)  # start workers
    count, start = 0, time.perf_counter()
    for batch in it:
        count += batch["image"].shape[0]
    return count / (time.perf_counter() - start)


def report_overhead(label: str, trainer: Trainer, bare: float, with_adamw: float, step: float) -> None:
    batch = trainer.config.batch_size
    print(f"{label}: bare forward+backward {1e3 * bare:.1f} ms/batch ({batch / bare:.1f} img/s); "
          f"full train step {1e3 * step:.1f} ms/batch ({batch / step:.1f} img/s); "
          f"overhead {100 * (step / bare - 1):+.1f} % (target <= +15 %)")
    print(f"{label}: of which the AdamW update alone {1e3 * (with_adamw - bare):.1f} ms/batch "
          f"({100 * (with_adamw / bare - 1):+.1f} %); the trainer's own cost over forward+backward+AdamW "
          f"(clipping, schedule, logging) {1e3 * (step - with_adamw):.1f} ms/batch "
          f"({100 * (step / with_adamw - 1):+.1f} %)")


def cpu_benchmark(args: argparse.Namespace, tmp: Path) -> None:
    torch.set_num_threads(args.threads)
    train_root, val_root = (Path(args.root) / "train", Path(args.root) / "val") if args.root else smoke_root(tmp)
    config = run_settings(PROFILE, {"data_root": str(train_root), "val_root": str(val_root),
                                    "out_dir": str(tmp / "run"), **({"image_size": args.size} if args.size else {})}).config
    print(f"CPU smoke config: {config.encoder}, {config.image_size} px, batch {config.batch_size}, "
          f"torch threads {args.threads}; data {train_root}")
    trainer = Trainer(config, DistributedContext(), torch.device("cpu"), progress=False)
    batches = fixed_batches(trainer, args.steps)
    bare, with_adamw, step = compare_step_overhead(trainer, batches)
    report_overhead("CPU", trainer, bare, with_adamw, step)
    consumed = config.batch_size / step
    for workers in (0, 2):
        supplied = loader_images_per_second(trainer, args.steps, workers)
        print(f"data pipeline, {workers} workers: {supplied:.1f} img/s = {supplied / consumed:.1f}x what the "
              f"model consumes ({consumed:.1f} img/s){' (target >= 3x)' if workers == 2 else ''}")
    code = ("import torch, time; torch.set_num_threads(%d); from fmuia_lib.config import TrainConfig; "
            "from fmuia_lib.training import train; c = TrainConfig.from_dict(%r); t = time.perf_counter(); "
            "r = train(c, progress=False); print(f'{len(r.history)} steps + validation in "
            "{time.perf_counter() - t:.1f} s; selection score {r.best_score:.3f}')") % (
        args.threads, run_settings(PROFILE, {"data_root": str(train_root), "val_root": str(val_root),
                                             "out_dir": str(tmp / "rss")}).config.to_dict())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2  # KiB -> GiB
    print(f"whole cpu-smoke training run: {out.stdout.strip()}; peak RSS {peak:.2f} GB (target <= 4 GB)")


def cuda_benchmark(args: argparse.Namespace, tmp: Path) -> None:
    from fmuia_lib.data.phantom import generate_phantom

    generate_phantom(tmp / "phantom", seed=0, n_train=8, n_val=2, workers=8)
    config = run_settings("gpu-full", {"data_root": str(tmp / "phantom" / "train"),
                                       "val_root": str(tmp / "phantom" / "val"), "encoder_weights": None,
                                       "channels_last": True, "num_workers": 4, "out_dir": str(tmp / "gpu")}).config
    device = torch.device("cuda")
    trainer = Trainer(config, DistributedContext(), device, progress=False)
    batches = fixed_batches(trainer, args.steps)
    torch.cuda.reset_peak_memory_stats(device)
    bare, with_adamw, step = compare_step_overhead(trainer, batches)
    print(f"GPU {torch.cuda.get_device_name(device)}: {config.encoder}, {config.image_size} px, batch "
          f"{config.batch_size}, AMP {trainer.amp_dtype}, channels_last")
    report_overhead("GPU", trainer, bare, with_adamw, step)
    print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 1024 ** 3:.2f} GiB")
    consumed = config.batch_size / step
    supplied = loader_images_per_second(trainer, args.steps, config.num_workers)
    print(f"data pipeline, {config.num_workers} workers, 256 px: {supplied:.0f} img/s = "
          f"{supplied / consumed:.1f}x what the model consumes ({consumed:.0f} img/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="folder holding train/ and val/ data roots")
    parser.add_argument("--steps", type=int, default=24, help="batches per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--size", type=int, default=None, help="CPU image size (default: the profile's)")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_cpu:
            cpu_benchmark(args, Path(tmp))
        if torch.cuda.is_available():
            cuda_benchmark(args, Path(tmp))
        else:
            print("no CUDA device: GPU figures skipped")


if __name__ == "__main__":
    main()
