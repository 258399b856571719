"""The gpu-full recipe on one GPU: throughput, peak memory, and what the trainer costs.

Builds the ``gpu-full`` profile's TrainConfig (EfficientNet-B4, 256 px, batch 20, AMP) with
channels_last and ``encoder_weights: None`` (nothing is downloaded), generates the phantom
into a temporary folder (``batch_size`` training images per subtask, so every batch is
full), and times, on the same pre-loaded batches and after a warm-up:

* fmuia's training step (``Trainer.train_step``: forward, composite loss, backward,
  gradient clipping, AdamW over the encoder / FPN / per-head groups, schedule, logging);
* a plain loop: forward, the same loss, backward and one AdamW over all parameters.

It prints images/s of each, their ratio and the peak GPU memory. Figures only, nothing is
asserted.

    python benchmarks/gpu_check.py [--steps 300]
    python benchmarks/gpu_check.py --device cpu --steps 3 --image-size 64 --encoder resnet18  # smoke run

``--device cuda`` on a machine without a GPU exits with status 2 and says so; with no
``--device`` and no GPU there is nothing to measure and it exits 0 after saying how to
make a CPU smoke run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fmuia_lib.data.dataset import collate
from fmuia_lib.profiles import run_settings
from fmuia_lib.training.loop import StepBatches, Trainer
from fmuia_lib.training.distributed import DistributedContext

PROFILE = "gpu-full"
SMOKE = "--device cpu --steps 3 --image-size 64 --encoder resnet18"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: CUDA when available)")
    p.add_argument("--steps", type=int, default=300, help="timed steps of each loop")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: min(20, steps))")
    p.add_argument("--image-size", type=int, default=None, help="override the profile's image_size")
    p.add_argument("--encoder", default=None, help="override the profile's encoder")
    p.add_argument("--batch-size", type=int, default=None, help="override the profile's batch_size")
    p.add_argument("--distinct-batches", type=int, default=16, help="batches loaded once and cycled")
    return p.parse_args(argv)


def pick_device(requested: str | None) -> torch.device | None:
    if requested is None:
        return torch.device("cuda") if torch.cuda.is_available() else None
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: --device {requested} asked for CUDA, but this machine has no CUDA device "
              f"(torch {torch.__version__}, torch.cuda.is_available() is False). "
              f"For a smoke run on the CPU: python benchmarks/gpu_check.py {SMOKE}", file=sys.stderr)
        sys.exit(2)
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fmuia_steps(trainer: Trainer, batches: list[dict], steps: int) -> float:
    sync(trainer.device)
    start = time.perf_counter()
    for i in range(steps):
        trainer.train_step(batches[i % len(batches)])
    sync(trainer.device)
    return time.perf_counter() - start


def plain_steps(trainer: Trainer, optimizer: torch.optim.Optimizer, batches: list[dict], steps: int) -> float:
    """Forward, the same loss, backward, AdamW: what any training loop must do."""
    model, device = trainer.model, trainer.device
    scaler = torch.amp.GradScaler(device.type, enabled=trainer.amp_dtype == torch.float16)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        batch = batches[i % len(batches)]
        images = batch["image"].to(device, non_blocking=True)  # the model converts it to its memory format
        target = batch["target"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=trainer.amp_dtype, enabled=trainer.amp_dtype is not None):
            outputs = model(images, batch["task_id"])
        loss, _ = trainer.criterion(outputs, target, model.task(batch["task_id"]))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    if device is None:
        print(f"gpu_check: no CUDA device here, nothing to measure. For a smoke run on the CPU: "
              f"python benchmarks/gpu_check.py {SMOKE}")
        return 0
    warmup = min(20, args.steps) if args.warmup is None else args.warmup
    changes = {"image_size": args.image_size, "encoder": args.encoder, "batch_size": args.batch_size}
    from fmuia_lib.sources.phantom import generate_phantom

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = run_settings(PROFILE).config
        batch_size = args.batch_size or base.batch_size
        started = time.perf_counter()
        generate_phantom(tmp / "phantom", seed=0, n_train=batch_size, n_val=1)
        made = time.perf_counter() - started
        overrides = {"data_root": str(tmp / "phantom" / "train"), "val_root": str(tmp / "phantom" / "val"),
                     "out_dir": str(tmp / "run"), "encoder_weights": None, "channels_last": True,
                     "num_workers": 0, "device": str(device),
                     **{k: v for k, v in changes.items() if v is not None}}
        config = run_settings(PROFILE, overrides).config
        trainer = Trainer(config, DistributedContext(), device, progress=False)
        loader = DataLoader(trainer.train_set, collate_fn=collate, num_workers=0,
                            batch_sampler=StepBatches(trainer.sampler, 0, args.distinct_batches))
        batches = list(loader)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"{name}: profile {PROFILE}, {config.encoder} (random init), {config.image_size} px, batch "
              f"{config.batch_size}, autocast {trainer.amp_dtype}, channels_last {trainer.model.channels_last}; "
              f"phantom {batch_size} images per subtask made in {made:.1f} s; {len(batches)} distinct "
              f"batches, {warmup} warm-up + {args.steps} timed steps per loop")

        fmuia_steps(trainer, batches, warmup)  # allocator, cuDNN autotuning
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fmuia_s = fmuia_steps(trainer, batches, args.steps)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

        optimizer = torch.optim.AdamW([p for p in trainer.model.parameters() if p.requires_grad],
                                      lr=config.lr, weight_decay=config.weight_decay,
                                      fused=device.type in ("cpu", "cuda"))
        plain_steps(trainer, optimizer, batches, warmup)
        plain_s = plain_steps(trainer, optimizer, batches, args.steps)

    images = args.steps * config.batch_size
    print(f"fmuia train step          {images / fmuia_s:9.1f} images/s  {1e3 * fmuia_s / args.steps:8.1f} ms/step")
    print(f"plain fwd+bwd+AdamW       {images / plain_s:9.1f} images/s  {1e3 * plain_s / args.steps:8.1f} ms/step")
    print(f"fmuia / plain step time   {fmuia_s / plain_s:9.3f}  (1.00 = the trainer costs nothing extra)")
    if peak is not None:
        print(f"peak GPU memory (fmuia)   {peak:9.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
