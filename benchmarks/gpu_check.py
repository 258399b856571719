"""A lent GPU's check, in one script: both recipes' speed, the loader beside them, bf16, resume.

For each of the ``gpu-full`` and ``official-baseline`` profiles (``--profiles``), on a phantom
generated into a temporary folder (``batch_size`` training images per subtask, so every
batch is full), with ``encoder_weights: None`` (nothing is downloaded):

* fmuia's training step (``Trainer.train_step``: forward, composite loss, backward,
  clipping, AdamW over the encoder / FPN / per-head groups, schedule, logging) on pre-loaded
  batches after a warm-up: images/s, ms/step, peak GPU memory;
  for gpu-full also a plain loop (forward, the same loss, backward, one AdamW) on the same
  batches, and the ratio of their step times;
* the loader the run would use (the profile's ``num_workers``, its augmentation, at its
  size): images/s it delivers, beside what the step consumes;
* the loss of one batch in fp32 and under bf16 autocast (same weights, eval mode): their
  relative difference;
* resume: a run of ``--resume-steps`` steps straight through, and the same run stopped
  half-way and resumed from its checkpoint; the largest difference of their losses and
  final weights (0 when resuming is exact; cuDNN's non-deterministic kernels may leave a
  little on a GPU).

Figures only, nothing is asserted. The defaults (40 timed steps per recipe, 6 resume steps)
are sized for well under 8 minutes on one A100/H100-class GPU; it prints its own run time
(the CPU smoke run is what the tests time; it has yet to be timed on a GPU).

    python benchmarks/gpu_check.py                           # on the GPU
    python benchmarks/gpu_check.py --tiny                    # a CPU smoke run (tests/test_gpu_check.py)

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
from fmuia_lib.training.data import SeededItems, loader
from fmuia_lib.training.distributed import DistributedContext
from fmuia_lib.training.loop import StepBatches, Trainer

PROFILES = ("gpu-full", "official-baseline")
#: ``--tiny``: the CPU smoke run (the ci-tiny model, four subtasks, a few steps; under a minute).
TINY = {"device": "cpu", "steps": 2, "warmup": 1, "image_size": 64, "encoder": "tu-lcnet_050", "batch_size": 2,
        "distinct_batches": 2, "loader_batches": 2, "resume_steps": 2, "fpn": [64, 32],
        "tasks": ["cardiac_multi", "organ_cls", "thyroid_nodule_det", "IUGC"]}
SMOKE = "--tiny"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: CUDA when available)")
    p.add_argument("--profiles", nargs="+", default=list(PROFILES), help="recipes to check")
    p.add_argument("--steps", type=int, default=40, help="timed training steps per recipe")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: min(10, steps))")
    p.add_argument("--image-size", type=int, default=None, help="override the profiles' image_size")
    p.add_argument("--encoder", default=None, help="override the profiles' encoder")
    p.add_argument("--batch-size", type=int, default=None, help="override the profiles' batch_size")
    p.add_argument("--fpn", type=int, nargs=2, default=None, metavar=("PYRAMID", "SEGMENTATION"),
                   help="override the FPN widths")
    p.add_argument("--tasks", nargs="+", default=None, help="only these subtasks (default: all 27)")
    p.add_argument("--distinct-batches", type=int, default=16, help="batches loaded once and cycled")
    p.add_argument("--loader-batches", type=int, default=30, help="batches the loader is timed on")
    p.add_argument("--resume-steps", type=int, default=6, help="steps of the resume check (even; 0: skip it)")
    p.add_argument("--tiny", action="store_true", help="the CPU smoke run: " + ", ".join(f"{k}={v}" for k, v in TINY.items()))
    args = p.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    if args.resume_steps % 2:
        p.error("--resume-steps must be even (the run stops half-way)")
    return args


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


def loader_rate(trainer: Trainer, batches: int) -> float:
    """Images/s the run's own loader delivers (its workers, augmentation and size; pinned for
    CUDA) over ``batches`` batches, after one batch per worker started them."""
    config = trainer.config
    warm = max(1, config.num_workers)
    steps = StepBatches(trainer.sampler, 0, warm + batches, item_seeds=config.seed)
    it = iter(loader(SeededItems(trainer.train_set), steps, config.num_workers, trainer.device))
    for _ in range(warm):
        next(it)
    count, start = 0, time.perf_counter()
    for batch in it:
        count += batch["image"].shape[0]
    return count / (time.perf_counter() - start)


def bf16_difference(trainer: Trainer, batches: list[dict]) -> dict[str, float]:
    """Per task type: |loss(bf16 autocast) - loss(fp32)| / |loss(fp32)| on the same batch and
    weights, in eval mode (no dropout, BatchNorm's running statistics)."""
    model, device = trainer.model, trainer.device
    model.eval()
    out: dict[str, float] = {}
    try:
        for batch in batches:
            kind = batch["task_type"]
            if kind in out:
                continue
            images, target = batch["image"].to(device), batch["target"].to(device)
            task = model.task(batch["task_id"])
            losses = []
            with torch.no_grad():
                for dtype in (None, torch.bfloat16):
                    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                        outputs = model(images, task.task_id)
                    losses.append(float(trainer.criterion(outputs, target, task)[0]))
            out[kind] = abs(losses[1] - losses[0]) / max(abs(losses[0]), 1e-12)
    finally:
        model.train()
    return out


def resume_check(profile: str, overrides: dict, steps: int, tmp: Path) -> tuple[float, float]:
    """``(largest loss difference, largest weight difference)`` between a run of ``steps``
    steps and the same run stopped half-way and resumed from its last checkpoint."""
    from fmuia_lib.training import train

    run = {**overrides, "epochs": None, "max_steps": steps, "eval_every": steps // 2}
    straight = train(run_settings(profile, {**run, "out_dir": str(tmp / "straight")}).config, progress=False)
    stopped_dir = tmp / "stopped"
    train(run_settings(profile, {**run, "out_dir": str(stopped_dir), "stop_at_step": steps // 2}).config,
          progress=False)
    resumed = train(run_settings(profile, {**run, "out_dir": str(stopped_dir),
                                           "resume": str(stopped_dir / "checkpoints" / "last.pt")}).config,
                    progress=False)
    a = straight.history.set_index("step")["loss"]
    b = resumed.history.set_index("step")["loss"]
    common = a.index.intersection(b.index)
    loss_diff = float((a[common] - b[common]).abs().max()) if len(common) else float("nan")
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    weight_diff = max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa if sa[k].is_floating_point())
    return loss_diff, weight_diff


def check_profile(profile: str, args: argparse.Namespace, device: torch.device, tmp: Path) -> None:
    from fmuia_lib.sources.phantom import generate_phantom

    base = run_settings(profile).config
    batch_size = args.batch_size or base.batch_size
    phantom = tmp / f"phantom-{batch_size}"
    started = time.perf_counter()
    if not phantom.exists():
        generate_phantom(phantom, seed=0, n_train=batch_size, n_val=1, tasks=args.tasks, workers=1 if args.tiny else None)
    made = time.perf_counter() - started
    changes = {"image_size": args.image_size, "encoder": args.encoder, "batch_size": args.batch_size,
               "tasks": args.tasks}
    if args.fpn:
        changes.update(fpn_pyramid_channels=args.fpn[0], fpn_segmentation_channels=args.fpn[1])
    overrides = {"data_root": str(phantom / "train"), "val_root": str(phantom / "val"),
                 "out_dir": str(tmp / profile / "run"), "encoder_weights": None, "device": str(device),
                 **({"num_workers": 0} if args.tiny else {}),
                 **{k: v for k, v in changes.items() if v is not None}}
    config = run_settings(profile, overrides).config
    trainer = Trainer(config, DistributedContext(), device, progress=False)
    batches = list(DataLoader(trainer.train_set, collate_fn=collate, num_workers=0,
                              batch_sampler=StepBatches(trainer.sampler, 0, args.distinct_batches)))
    warmup = min(10, args.steps) if args.warmup is None else args.warmup
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n== {profile} on {name}: {config.encoder} (random init), {config.image_size} px, batch "
          f"{config.batch_size}, autocast {trainer.amp_dtype}, channels_last {trainer.model.channels_last}, "
          f"{config.num_workers} loader workers; phantom {batch_size} images per subtask ({made:.1f} s); "
          f"{len(batches)} distinct batches, {warmup} warm-up + {args.steps} timed steps", flush=True)

    fmuia_steps(trainer, batches, warmup)  # allocator, cuDNN autotuning
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fmuia_s = fmuia_steps(trainer, batches, args.steps)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    images = args.steps * config.batch_size
    consumed = images / fmuia_s
    print(f"fmuia train step          {consumed:9.1f} images/s  {1e3 * fmuia_s / args.steps:8.1f} ms/step", flush=True)
    if peak is not None:
        print(f"peak GPU memory           {peak:9.2f} GiB")
    if profile == "gpu-full":
        optimizer = torch.optim.AdamW([p for p in trainer.model.parameters() if p.requires_grad],
                                      lr=config.lr, weight_decay=config.weight_decay,
                                      fused=device.type in ("cpu", "cuda"))
        plain_steps(trainer, optimizer, batches, warmup)
        plain_s = plain_steps(trainer, optimizer, batches, args.steps)
        print(f"plain fwd+bwd+AdamW       {images / plain_s:9.1f} images/s  {1e3 * plain_s / args.steps:8.1f} ms/step")
        print(f"fmuia / plain step time   {fmuia_s / plain_s:9.3f}  (1.00 = the trainer costs nothing extra)")
    supplied = loader_rate(trainer, args.loader_batches)
    print(f"loader, {config.num_workers} workers     {supplied:9.1f} images/s  = {supplied / consumed:.2f}x what the "
          f"step consumes ({'enough' if supplied >= consumed else 'the loader limits this run'}; phantom images, "
          "see benchmarks/bench_loader.py at the challenge's sizes)", flush=True)
    for kind, diff in bf16_difference(trainer, batches).items():
        print(f"bf16 vs fp32 loss, {kind:<14} relative difference {diff:.2e}")
    if args.resume_steps:
        loss_diff, weight_diff = resume_check(profile, overrides, args.resume_steps, tmp / profile / "resume")
        print(f"resume after {args.resume_steps // 2} of {args.resume_steps} steps: largest loss difference "
              f"{loss_diff:.3g}, largest weight difference {weight_diff:.3g} (0: exact)", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    if device is None:
        print(f"gpu_check: no CUDA device here, nothing to measure. For a smoke run on the CPU: "
              f"python benchmarks/gpu_check.py {SMOKE}")
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for profile in args.profiles:
            check_profile(profile, args, device, Path(tmp))
    print(f"\ngpu_check: done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
