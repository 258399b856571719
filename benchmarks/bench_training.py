"""Training throughput: a plain loop, an official-style loop and fmuia's trainer, side by side.

Prints figures only (targets are printed next to them, never asserted)::

    python benchmarks/bench_training.py [--root ROOT] [--encoder efficientnet-b0] [--size 128]
        [--batch 8] [--workers 2] [--threads N] [--steps 40] [--warmup 4] [--official DIR]

CPU part. One model configuration (the official recipe at ``--encoder``/``--size``/
``--batch``, random weights) on the phantom's training root (``runs/phantom``, or a
small phantom generated in a temporary folder). Every loop reads the same batches (the
same index lists and the same per-item augmentation seeds) through a DataLoader with
``--workers`` workers, and is timed from its first to its last step, loading included:

* **plain**: forward, the task's loss, backward, ``torch.optim.AdamW`` (default
  implementation) over the trainable parameters; nothing else. fmuia's trainer should
  stay within 1.05x of its time per step;
* **official-style**: what the official baseline's ``train.py`` does per step, written
  here (not copied) on the same network: its optimiser (AdamW over encoder and heads,
  default implementation), the FPN decoder computing gradients it never uses
  (``requires_grad`` on, in no group), ``zero_grad``, forward in NCHW with a pad before
  every EfficientNet convolution (the network the official code builds), the detection
  cell gathered in a Python loop over the batch, the loss, backward, step, and the loss
  read twice (log and progress bar). fmuia's trainer should be at least 1.3x faster;
* **fmuia**: ``Trainer.train_step`` as ``train()`` runs it, with the library's speed
  defaults (``TrainConfig``: channels_last where it pays, foreach clipping, lazy logging) and
  fused AdamW (``fused_adamw``) on fmuia's network (EfficientNet's symmetric pads inside its convolutions,
  ``model.fold_same_padding``); the plain loop runs the same network in the same memory format;
* with ``--official DIR``: the official repository's own network and detection loss,
  imported from DIR (never copied into fmuia), in its loop, on the same batches.

Loops take turns step by step (``--steps`` steps after ``--warmup``), so a machine whose
load changes slows them alike; a ratio is the median over steps of the two loops' times on
the same batch (and, beside it, the ratio of their mean times).
Also printed: the data pipeline alone with the same workers (images/s and its headroom
over what the trainer consumes), the peak resident memory of this process and of its
loader workers, and for an EfficientNet encoder its step alone with smp's pads and with
them inside the convolutions (``model.fold_same_padding``).

CUDA part (when a GPU is present): the ``gpu-full`` profile (EfficientNet-B4, 256 px, batch
20, AMP, channels_last) with random weights: plain loop vs the trainer, images/s, peak GPU
memory and the data pipeline (``gpu_check.py`` times a few hundred steps of it).

What it prints is also written, with the command and the machine, to
``results/bench_training.md`` (``--record PATH`` elsewhere, ``--no-record`` not at all).
"""
from __future__ import annotations

import argparse
import copy
import importlib
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from fmuia_lib.config import TrainConfig
from fmuia_lib.model import MultiTaskNet
from fmuia_lib.profiles import run_settings
from fmuia_lib.tasks import DETECTION, REGRESSION
from fmuia_lib.training.data import SeededItems, loader
from fmuia_lib.training.distributed import DistributedContext
from fmuia_lib.training.loop import StepBatches, Trainer
from record import recorded  # benchmarks/record.py

REPO = Path(__file__).resolve().parents[1]


def phantom_roots(tmp: Path) -> tuple[Path, Path]:
    """(train root, val root): the phantom's in runs/phantom when present, else a small one."""
    phantom = REPO / "runs" / "phantom"
    if not (phantom / "train" / "csv_files").is_dir():
        from fmuia_lib.sources.phantom import generate_phantom

        phantom = tmp / "phantom"
        generate_phantom(phantom, seed=0, n_train=24, n_val=4, workers=2)
    return phantom / "train", phantom / "val"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the loops -----------------------------------------------------------------------------------
class PlainLoop:
    """Forward, loss, backward and a default ``torch.optim.AdamW`` step: the floor."""

    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer
        self.optimizer = torch.optim.AdamW([p for p in trainer.model.parameters() if p.requires_grad],
                                           lr=trainer.config.lr)

    def step(self, batch: dict[str, Any]) -> None:
        t = self.t
        images = batch["image"].to(t.device, non_blocking=True)  # the model converts it to its memory format
        with torch.autocast(t.device.type, dtype=t.amp_dtype, enabled=t.amp_dtype is not None):
            outputs = t.model(images, batch["task_id"])
        loss, _ = t.criterion(outputs, batch["target"].to(t.device, non_blocking=True), t.model.task(batch["task_id"]))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def gathered_cells(outputs: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The official loop's detection step: the ``B x 5`` prediction at each box centre's grid
    cell, gathered one sample at a time in Python as the baseline does."""
    b, _, h, w = outputs.shape
    rows = torch.clamp(((boxes[:, 1] + boxes[:, 3]) / 2.0 * h).long(), 0, h - 1)
    cols = torch.clamp(((boxes[:, 0] + boxes[:, 2]) / 2.0 * w).long(), 0, w - 1)
    cells = torch.zeros((b, 5), device=outputs.device)
    for i in range(b):
        cells[i] = outputs[i, :, rows[i], cols[i]]
    return cells


def cell_loss(cells: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """BCE on the objectness (towards 1) + 8 x L1 on the box, as the baseline's detection loss."""
    return (F.binary_cross_entropy_with_logits(cells[:, 4], torch.ones_like(cells[:, 4]))
            + 8.0 * F.l1_loss(cells[:, :4], boxes))


class OfficialStyleLoop:
    """Per step what the official ``train.py`` does (see the module docstring), on the network of
    ``trainer`` (built from the official recipe), or on ``network`` with ``detection_loss``."""

    def __init__(self, trainer: Trainer, network: torch.nn.Module | None = None,
                 detection_loss: Callable | None = None, task_types: dict[str, str] | None = None) -> None:
        self.t = trainer
        self.model = network if network is not None else trainer.model
        if isinstance(self.model, MultiTaskNet):
            self.model.place(trainer.device, channels_last=False)  # the official code trains in NCHW
            unfold_same_padding(self.model)  # and pads before its EfficientNet convolutions
        self.model.requires_grad_(True)  # the FPN computes gradients too
        lr = trainer.config.lr
        groups = [{"params": self.model.encoder.parameters(), "lr": lr}]
        groups += [{"params": head.parameters(), "lr": lr * 10.0} for head in self.model.heads.values()]
        self.optimizer = torch.optim.AdamW(groups)
        self.detection_loss = detection_loss or cell_loss
        self.task_types = task_types or {t: trainer.model.task(t).task_type for t in trainer.task_ids}
        self.losses: list[float] = []

    def step(self, batch: dict[str, Any]) -> None:
        device, task_id = self.t.device, batch["task_id"]
        images, labels = batch["image"].to(device), batch["target"].to(device)
        outputs = self.model(images, task_id)
        if self.task_types[task_id] == DETECTION:
            loss = self.detection_loss(gathered_cells(outputs, labels), labels)
        elif self.task_types[task_id] == REGRESSION:  # the official head gives 2K numbers, fmuia's K x 2
            loss, _ = self.t.criterion(outputs.reshape(labels.shape), labels, self.t.model.task(task_id))
        else:
            loss, _ = self.t.criterion(outputs, labels, self.t.model.task(task_id))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.item())  # the epoch's loss report
        _ = f"{loss.item():.4f}"  # the progress bar's postfix


def unfold_same_padding(model: torch.nn.Module) -> None:
    """Undo ``fmuia_lib.model.fold_same_padding``: every padded ``Conv2dStaticSamePadding`` pads
    with a ``ZeroPad2d`` again, as the network the official code builds (same numbers, one copy more)."""
    from segmentation_models_pytorch.encoders._efficientnet import Conv2dStaticSamePadding

    for conv in model.modules():
        if isinstance(conv, Conv2dStaticSamePadding) and conv.padding != (0, 0):
            top, left = conv.padding
            conv.static_padding, conv.padding = torch.nn.ZeroPad2d((left, left, top, top)), (0, 0)


class TrainerLoop:
    """fmuia's trainer, one step as ``Trainer.run`` takes it (row kept, device values read in groups)."""

    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer

    def step(self, batch: dict[str, Any]) -> None:
        self.t.pending.append(self.t.train_step(batch))
        if len(self.t.pending) >= self.t.log_every:
            self.t.read_pending()

    def finish(self) -> None:
        self.t.read_pending()


def official_network(official_dir: Path, trainer: Trainer) -> tuple[torch.nn.Module, Callable, dict[str, str]]:
    """The official repository's network (its ``MultiTaskModelFactory``) and detection loss, imported
    from ``official_dir``, for the tasks and encoder of ``trainer``."""
    sys.path.insert(0, str(official_dir))
    factory = importlib.import_module("model_factory")
    utils = importlib.import_module("utils")
    configs = [c for c in factory.TASK_CONFIGURATIONS if c["task_id"] in trainer.task_ids]
    network = factory.MultiTaskModelFactory(encoder_name=trainer.config.encoder, encoder_weights=None,
                                            task_configs=configs).to(trainer.device)
    return network, utils.DetectionLoss(), {c["task_id"]: c["task_name"] for c in configs}


# -- timing --------------------------------------------------------------------------------------
def batches_of(trainer: Trainer, start: int, stop: int, workers: int) -> Iterable[dict[str, Any]]:
    """Steps ``start .. stop-1`` of the run's batch stream, through a loader with ``workers``."""
    stream = StepBatches(trainer.sampler, start, stop, item_seeds=trainer.config.seed)
    return loader(SeededItems(trainer.train_set), stream, workers, trainer.device)


def step_times(loops: dict[str, Any], trainers: dict[str, Trainer], first: int, steps: int,
               workers: int) -> dict[str, list[float]]:
    """Seconds of each of ``steps`` steps (from step ``first`` of the stream) of every loop, the
    loops taking turns step by step, so that a change in the machine's load hits them alike.
    A step's time runs from asking its loader for the batch to the end of the update (loading
    included; each loader's workers are started, and its first batch fetched, beforehand)."""
    streams = {}
    for name in loops:
        streams[name] = iter(batches_of(trainers[name], first - 1, first + steps, workers))
        next(streams[name])
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(steps):
        for name, loop in loops.items():
            sync(trainers[name].device)
            begin = time.perf_counter()
            loop.step(next(streams[name]))
            sync(trainers[name].device)
            seconds[name].append(time.perf_counter() - begin)
    for loop in loops.values():
        if hasattr(loop, "finish"):
            loop.finish()
    return seconds


def loader_images_per_second(trainer: Trainer, start: int, steps: int, workers: int) -> float:
    it = iter(batches_of(trainer, start - 1, start + steps, workers))
    next(it)
    count, begin = 0, time.perf_counter()
    for batch in it:
        count += batch["image"].shape[0]
    return count / (time.perf_counter() - begin)


def compare(loops: dict[str, Any], trainers: dict[str, Trainer], args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds of each timed step of every loop (after ``args.warmup`` untimed steps)."""
    step_times(loops, trainers, 1, args.warmup, args.workers)  # allocator, first batches of each type
    return step_times(loops, trainers, args.warmup + 1, args.steps, args.workers)


def report(seconds: dict[str, list[float]], batch: int) -> None:
    """Mean time per step and throughput of each loop; each ratio is the median over steps of the
    per-step ratio (the same batch in both loops), with its mean-time ratio beside it."""
    print(f"{'loop':<16}{'s/step (mean)':>15}{'img/s':>9}{'median step (s)':>18}")
    for name, times in seconds.items():
        mean = statistics.fmean(times)
        print(f"{name:<16}{mean:>15.3f}{batch / mean:>9.1f}{statistics.median(times):>18.3f}")
    if "fmuia" not in seconds:
        return
    for other, target in (("official-style", ">= 1.3x"), ("official repo", ">= 1.3x"), ("plain", None)):
        if other not in seconds:
            continue
        per_step = statistics.median(o / f for o, f in zip(seconds[other], seconds["fmuia"]))
        overall = statistics.fmean(seconds[other]) / statistics.fmean(seconds["fmuia"])
        if target:
            print(f"fmuia vs {other}: {per_step:.2f}x the throughput (median per-step ratio; {overall:.2f}x by "
                  f"mean times) (target {target})")
        else:
            print(f"fmuia vs {other}: fmuia's time per step is {1 / per_step:.3f}x plain's (median per-step ratio; "
                  f"{1 / overall:.3f}x by mean times) (target <= 1.05x)")


def peak_rss() -> tuple[float, float]:
    """Peak resident memory in GB: (this process, its largest finished child: a loader worker)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2)


def cpu_benchmark(args: argparse.Namespace, tmp: Path) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    train_root, val_root = (Path(args.root) / "train", Path(args.root) / "val") if args.root else phantom_roots(tmp)
    shown = (train_root if args.root else train_root.relative_to(REPO) if train_root.is_relative_to(REPO)
             else "a small phantom generated for the run")
    base = TrainConfig.from_dict(dict(
        data_root=str(train_root), val_root=str(val_root), encoder=args.encoder, encoder_weights=None,
        image_size=args.size, batch_size=args.batch, epochs=None, max_steps=1000, eval_every=1000,
        num_workers=args.workers, device="cpu", out_dir=str(tmp / "run"), fused_adamw=True))
    print(f"CPU: {args.encoder}, {args.size} px, batch {args.batch}, {args.workers} loader workers, torch threads "
          f"{torch.get_num_threads()}; official recipe, random weights; data {shown}")
    nchw = base.with_overrides({"channels_last": False})
    trainers = {"plain": Trainer(base, DistributedContext(), torch.device("cpu"), progress=False),
                "official-style": Trainer(nchw, DistributedContext(), torch.device("cpu"), progress=False),
                "fmuia": Trainer(base, DistributedContext(), torch.device("cpu"), progress=False)}
    print(f"fmuia's trainer runs TrainConfig's speed defaults: channels_last "
          f"{trainers['fmuia'].model.channels_last} (where it pays: model.channels_last_pays; the plain loop runs "
          "the same network in the same layout), EfficientNet's symmetric 'same' pads inside its convolutions "
          "(model.fold_same_padding), fused AdamW, lazy logging")
    loops = {"plain": PlainLoop(trainers["plain"]), "official-style": OfficialStyleLoop(trainers["official-style"]),
             "fmuia": TrainerLoop(trainers["fmuia"])}
    if args.official:
        trainers["official repo"] = trainers["official-style"]
        network, detection_loss, types = official_network(Path(args.official), trainers["official-style"])
        loops["official repo"] = OfficialStyleLoop(trainers["official-style"], network, detection_loss, types)
    seconds = compare(loops, trainers, args)
    report(seconds, args.batch)
    consumed = args.batch / statistics.fmean(seconds["fmuia"])
    supplied = loader_images_per_second(trainers["fmuia"], args.warmup + 1, args.steps, args.workers)
    print(f"data pipeline alone, {args.workers} workers: {supplied:.1f} img/s = {supplied / consumed:.1f}x what "
          f"fmuia's trainer consumes ({consumed:.1f} img/s; it shares the same cores)")
    own, child = peak_rss()
    print(f"peak RSS: this process {own:.2f} GB (three networks and their optimisers), largest loader worker "
          f"{child:.2f} GB")
    if args.encoder.startswith("efficientnet"):
        padding_gain(args)


def padding_gain(args: argparse.Namespace) -> None:
    """An encoder step (forward, backward) of smp's EfficientNet as smp builds it (a ``ZeroPad2d``
    before each convolution) beside fmuia's (``model.fold_same_padding``), taking turns, on one
    random batch in the trainer's layout: the fold's share of the loop's time on its own."""
    from fmuia_lib.model import build_encoder, channels_last_pays

    torch.manual_seed(0)
    folded = build_encoder(args.encoder, None)
    padded = copy.deepcopy(folded)
    unfold_same_padding(padded)
    layout = torch.channels_last if channels_last_pays(args.encoder, "cpu") else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=layout)
    encoders = {"smp's pads": padded.to(memory_format=layout), "folded": folded.to(memory_format=layout)}
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for step in range(args.warmup + args.steps):
        for name, encoder in encoders.items():
            encoder.zero_grad(set_to_none=True)
            begin = time.perf_counter()
            sum(f.float().mean() for f in encoder(x)[1:]).backward()
            if step >= args.warmup:
                times[name].append(time.perf_counter() - begin)
    pads, fold = (statistics.median(times[name]) for name in encoders)
    print(f"{args.encoder} encoder step alone (forward + backward, batch {args.batch}, {args.size} px): smp's "
          f"pads {pads:.4f} s, pads inside the convolutions {fold:.4f} s: {pads / fold:.3f}x (median step)")


def cuda_benchmark(args: argparse.Namespace, tmp: Path) -> None:
    from fmuia_lib.sources.phantom import generate_phantom

    generate_phantom(tmp / "phantom", seed=0, n_train=8, n_val=2, workers=8)
    config = run_settings("gpu-full", {"data_root": str(tmp / "phantom" / "train"),
                                       "val_root": str(tmp / "phantom" / "val"), "encoder_weights": None,
                                       "num_workers": 4, "out_dir": str(tmp / "gpu")}).config
    device = torch.device("cuda")
    trainers = {name: Trainer(config, DistributedContext(), device, progress=False) for name in ("plain", "fmuia")}
    loops = {"plain": PlainLoop(trainers["plain"]), "fmuia": TrainerLoop(trainers["fmuia"])}
    torch.cuda.reset_peak_memory_stats(device)
    gpu_args = argparse.Namespace(**{**vars(args), "workers": config.num_workers, "steps": max(args.steps, 20)})
    print(f"GPU {torch.cuda.get_device_name(device)}: {config.encoder}, {config.image_size} px, batch "
          f"{config.batch_size}, AMP {trainers['fmuia'].amp_dtype}, channels_last {config.channels_last}")
    seconds = compare(loops, trainers, gpu_args)
    report(seconds, config.batch_size)
    print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 1024 ** 3:.2f} GiB (two networks)")
    consumed = config.batch_size / statistics.fmean(seconds["fmuia"])
    supplied = loader_images_per_second(trainers["fmuia"], args.warmup + 1, gpu_args.steps, config.num_workers)
    print(f"data pipeline, {config.num_workers} workers, 256 px: {supplied:.0f} img/s = "
          f"{supplied / consumed:.1f}x what the trainer consumes ({consumed:.0f} img/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="folder holding train/ and val/ data roots")
    parser.add_argument("--encoder", default="efficientnet-b0")
    parser.add_argument("--size", type=int, default=128, help="image size (px)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of every loop")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per loop")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps per loop first")
    parser.add_argument("--official", default=None, help="folder of the official repository (model_factory.py, "
                                                         "utils.py): also time its own network")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--record", default="", help="where to write the record (default: results/bench_training.md)")
    parser.add_argument("--no-record", dest="record", action="store_const", const=None, help="write no record")
    args = parser.parse_args()
    with recorded("bench_training", args.record, "Training throughput: benchmarks/bench_training.py"), \
            tempfile.TemporaryDirectory() as tmp:
        if not args.skip_cpu:
            cpu_benchmark(args, Path(tmp))
        if torch.cuda.is_available():
            cuda_benchmark(args, Path(tmp))
        else:
            print("no CUDA device: GPU figures skipped")


if __name__ == "__main__":
    main()
