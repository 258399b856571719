"""Does the data pipeline feed the GPU? Per-worker loader throughput at the challenge's image sizes.

Measures, in one run, on this machine:

* the training pipeline as ``fmuia train`` runs it: ``MultiTaskDataset`` (decode, checks),
  the recipe's transform (resize to ``--size`` px, the official augmentation), the
  task-homogeneous batch sampler and ``collate``, through a DataLoader with 1, 2 and 8
  worker processes (``--workers``), in images/s, and the peak resident memory (VmHWM) of
  each worker and of the main process;
* the same with the prepared form of the data (``--cache``: ``fmuia data cache``, every
  image and mask stored once at the training resolution in memory-mapped files; the
  augmentation still runs per item), and the time to build it;
* what the model consumes on this CPU: EfficientNet-B4 (random weights) at ``--size`` px,
  batch ``--batch``, forward + loss + backward + AdamW, for a segmentation batch (FPN
  read) and a classification batch (deepest map);

beside published GPU training throughputs of EfficientNet-B4, stated as such with their
source (:data:`PUBLISHED`). Nothing is asserted; the figures and a verdict worded from them
go to stdout and to ``--out`` (default ``results/bench_loader_<machine>.md``).

The images: ``--root`` (any data root, e.g. one written by ``fmuia data real``), or by
default a synthetic root (the tests' builder, ``tests/conftest.make_root``) whose images are
about ``--side`` px on their long side (600-1000 px by default: the challenge's frames are
roughly 500-1200 px a side), PNG and JPEG, grey and RGB, 8 subtasks.

    python benchmarks/bench_loader.py [--side 1000] [--n 24] [--workers 1 2 8] [--batches 12]
    python benchmarks/bench_loader.py --quick     # a smoke run: small images, 1 worker, a tiny model
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]

#: Published single-GPU training throughputs of EfficientNet-B4 (ImageNet classification, not
#: fmuia's FPN + heads; their input size, not 256 px). No published T4 training figure for
#: B4 was found: run ``benchmarks/gpu_check.py`` on a T4 for one.
PUBLISHED = [
    {"gpu": "A100 80GB", "precision": "AMP (fp16)", "images_per_s": 331, "input_px": 380, "batch": "per GPU, DALI-fed",
     "source": "NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/efficientnet/README.md, "
               "'Training performance: NVIDIA A100 (8x A100 80GB)', 1 GPU, PyTorch 21.03 NGC container"},
    {"gpu": "A100 80GB", "precision": "TF32", "images_per_s": 157, "input_px": 380, "batch": "per GPU",
     "source": "same table"},
    {"gpu": "V100 16GB", "precision": "AMP (fp16)", "images_per_s": 204, "input_px": 380, "batch": "per GPU",
     "source": "same README, 'Training performance: NVIDIA DGX-1 (8x V100 16GB)', 1 GPU"},
    {"gpu": "T4", "precision": "-", "images_per_s": None, "input_px": None, "batch": "-",
     "source": "no published EfficientNet-B4 training throughput on a T4 was found; measure one with "
               "benchmarks/gpu_check.py"},
]
SOURCE_URL = ("https://github.com/NVIDIA/DeepLearningExamples/blob/master/PyTorch/Classification/"
              "ConvNets/efficientnet/README.md")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=None, help="a data root (default: a synthetic one at --side px)")
    p.add_argument("--side", type=int, default=1000, help="long side of the synthetic images, px (default 1000)")
    p.add_argument("--n", type=int, default=24, help="synthetic images per subtask (8 subtasks)")
    p.add_argument("--size", type=int, default=256, help="training resolution (the recipe's 256)")
    p.add_argument("--batch", type=int, default=20, help="batch size (the recipe's 20)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 8], help="worker counts to time")
    p.add_argument("--batches", type=int, default=12, help="timed batches per worker count")
    p.add_argument("--encoder", default="efficientnet-b4")
    p.add_argument("--model-steps", type=int, default=2, help="timed training steps per task type")
    p.add_argument("--no-cache", action="store_true", help="skip the prepared (cached) form")
    p.add_argument("--out", default=None, help="results file (default results/bench_loader_<machine>.md)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 300 px images, 4 per subtask, 1 worker, 2 batches of 4 at 64 px, resnet18")
    args = p.parse_args(argv)
    if args.quick:
        args.side, args.n, args.size, args.batch, args.workers, args.batches = 300, 4, 64, 4, [1], 2
        args.encoder, args.model_steps = "resnet18", 1
    return args


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs"


def machine_slug() -> str:
    cores = os.cpu_count() or 1
    kind = "gpu" if torch.cuda.is_available() else "cpu"
    return f"{kind}{cores}"


def synthetic_root(tmp: Path, side: int, n: int) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_root  # the tests' builder: images (40..48 x 56..64) x scale px

    return make_root(tmp, n=n, scale=max(1, round(side / 64)), name="bench_root")


def size_range(dataset) -> tuple[int, int]:
    from fmuia_lib.data.images import image_size

    sides = [max(image_size(f)) for f in dataset.frame["image_file"]] + \
            [min(image_size(f)) for f in dataset.frame["image_file"]]
    return min(sides), max(sides)


def vm_hwm_mib(pid: int) -> float | None:
    """Peak resident memory of a process (Linux VmHWM), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loader_rate(dataset, workers: int, batches: int, batch_size: int) -> tuple[float, float, list[float]]:
    """``(images/s, images per CPU-second, peak RSS of each worker in MiB)`` over ``batches``
    batches after a warm-up of one batch per worker (workers started, files in the page
    cache). Images per CPU-second count the loading processes' own CPU time (the workers',
    or this process's with 0 workers): what one core delivers, however busy the machine."""
    from fmuia_lib.data.dataset import collate
    from fmuia_lib.data.sampler import TaskBatchSampler
    from fmuia_lib.training.data import SeededItems

    sampler = TaskBatchSampler(dataset.task_indices, batch_size=batch_size, strategy="uniform", seed=0)
    order = []
    while len(order) < batches + max(1, workers):
        order.extend(sampler)
    keyed = [[(i, 1000 * b + j) for j, i in enumerate(batch)] for b, batch in enumerate(order)]
    warm, timed = keyed[:max(1, workers)], keyed[max(1, workers):max(1, workers) + batches]
    loader = DataLoader(SeededItems(dataset), batch_sampler=warm + timed, collate_fn=collate,
                        num_workers=workers, prefetch_factor=2 if workers else None)
    own_start = time.process_time()
    it = iter(loader)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    loaded = 0
    for _ in warm:
        loaded += next(it)["image"].shape[0]
    count, start, peaks, cpu = 0, time.perf_counter(), [], None
    for k, batch in enumerate(it):
        count += batch["image"].shape[0]
        if k == len(timed) - 1:  # every batch made, the workers still alive: their CPU time and peak memory
            cpu = sum(cpu_seconds(pid) for pid in pids) if pids else time.process_time() - own_start
            peaks = [vm_hwm_mib(pid) for pid in pids]
    seconds = time.perf_counter() - start
    del it
    # CPU time covers every batch the loading processes made (the warm-up ones too)
    return count / seconds, (loaded + count) / cpu if cpu else float("nan"), [p for p in peaks if p is not None]


def model_rate(encoder: str, size: int, batch: int, steps: int) -> dict[str, tuple[float, float]]:
    """Per task type, ``(images/s, images per CPU-second)`` of one training step (forward, loss,
    backward, AdamW) on this CPU (median over ``steps`` steps after one warm-up step)."""
    from fmuia_lib.config import TrainConfig
    from fmuia_lib.losses import build_loss
    from fmuia_lib.model import MultiTaskNet
    from fmuia_lib.tasks import load_manifest

    manifest = load_manifest()
    tasks = [manifest["cardiac_multi"], manifest["organ_cls"]]
    model = MultiTaskNet(tasks, encoder_name=encoder, encoder_weights=None).place("cpu")
    model.train()
    criterion = build_loss(TrainConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rates = {}
    for task in tasks:
        images = torch.randn(batch, 3, size, size)
        target = (torch.randint(0, task.num_classes, (batch, size, size)) if task.task_type == "segmentation"
                  else torch.randint(0, task.num_classes, (batch,)))
        times, cpu = [], []
        for step in range(steps + 1):  # the first step warms up
            start, cpu_start = time.perf_counter(), time.process_time()
            loss, _ = criterion(model(images, task.task_id), target, task)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
        rates[task.task_type] = (batch / float(np.median(times[1:])), batch / float(np.median(cpu[1:])))
    return rates


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from fmuia_lib.data.dataset import MultiTaskDataset
    from fmuia_lib.data.transforms import build_transforms

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = Path(args.root) if args.root else synthetic_root(tmp, args.side, args.n)
        dataset = MultiTaskDataset(root, transforms=build_transforms(args.size, train=True, augment="official"))
        low, high = size_range(dataset)
        say(f"# Loader throughput: {machine_name()}")
        say()
        say(f"Written by `python benchmarks/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}`"
            f" (torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). A machine "
            "shared with other jobs gives noisy figures.")
        say()
        say(f"Data: {'`' + str(root) + '`' if args.root else 'synthetic root'}, {len(dataset)} images of "
            f"{len(dataset.tasks)} subtasks, sides {low}-{high} px; pipeline: decode + checks, resize to "
            f"{args.size} px, the official augmentation, collate, batches of {args.batch}.")
        say()
        say("| form | workers | images/s (wall) | per worker (wall) | images per CPU-second (one core) "
            "| peak RSS per worker (MiB) |")
        say("|---|---|---|---|---|---|")
        results: dict[tuple[str, int], float] = {}
        per_core: dict[str, float] = {}
        forms = [("decoded from the root", dataset)]
        cache_note = None
        if not args.no_cache:
            from fmuia_lib.data.cache import build_cache

            start = time.perf_counter()
            cache = build_cache(root, tmp / "cache", args.size, labels=True)
            built = time.perf_counter() - start
            forms.append(("prepared (fmuia data cache)", dataset.with_cache(cache)))
            cache_note = (f"The prepared form took {built:.1f} s to build ({len(dataset) / built:.1f} images/s, "
                          f"one process) and holds {cache.nbytes / 2 ** 20:.1f} MiB on disk "
                          f"({cache.nbytes / len(dataset) / 1024:.0f} KiB per image).")
        for name, data in forms:
            for workers in args.workers:
                rate, per_cpu, peaks = loader_rate(data, workers, args.batches, args.batch)
                results[name, workers] = rate
                per_core[name] = max(per_core.get(name, 0.0), per_cpu)
                peak = f"{max(peaks):.0f}" if peaks else "-"
                say(f"| {name} | {workers} | {rate:.1f} | {rate / max(workers, 1):.1f} | {per_cpu:.1f} | {peak} |")
        say()
        own = vm_hwm_mib(os.getpid())
        say(f"Main process peak RSS: {own:.0f} MiB. A worker's peak RSS counts the pages it shares with the "
            "others (Python, torch, OpenCV). A worker holds the table of rows and the batch it makes, never the "
            "root's images: they are read one at a time, the prepared form's through memory-mapped pages that the "
            "operating system shares between workers and evicts." if own else "")
        if cache_note:
            say(cache_note)
        say()
        torch.set_num_threads(os.cpu_count() or 1)  # the model gets every core (the tests' builder sets 1)
        consumed = model_rate(args.encoder, args.size, args.batch, args.model_steps)
        say(f"## What the model consumes\n\n{args.encoder} (random weights), {args.size} px, batch {args.batch}, "
            f"forward + loss + backward + AdamW on this CPU ({torch.get_num_threads()} threads): "
            + ", ".join(f"{kind} {rate:.2f} images/s ({per_cpu:.2f} per CPU-second)"
                        for kind, (rate, per_cpu) in consumed.items()) + ".")
        say()
        say(f"Published EfficientNet-B4 training throughput on one GPU ({SOURCE_URL}; ImageNet classification "
            "at its input size, not fmuia's network at 256 px: quoted, not converted):")
        say()
        say("| GPU | precision | images/s | input px | source |")
        say("|---|---|---|---|---|")
        for row in PUBLISHED:
            say(f"| {row['gpu']} | {row['precision']} | {row['images_per_s'] or '-'} | {row['input_px'] or '-'} "
                f"| {row['source']} |")
        say()
        say("## Reading")
        say()
        for sentence in verdict(results, per_core, consumed, args.encoder):
            say(sentence)
    out = Path(args.out) if args.out else REPO / "results" / f"bench_loader_{machine_slug()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


def verdict(results: dict[tuple[str, int], float], per_core: dict[str, float],
            consumed: dict[str, tuple[float, float]], encoder: str) -> list[str]:
    """Sentences worded from this run's numbers."""
    out = []
    a100 = next(r["images_per_s"] for r in PUBLISHED if r["gpu"] == "A100 80GB" and r["precision"].startswith("AMP"))
    need_wall = max(rate for rate, _ in consumed.values())
    need_cpu = max(per_cpu for _, per_cpu in consumed.values())
    for name, core in per_core.items():
        out.append(f"- {name}: one core delivers {core:.1f} images per CPU-second, {core / need_cpu:.0f}x what "
                   f"{encoder} consumes per CPU-second of this machine ({need_cpu:.2f}); {a100 / core:.1f} such "
                   f"cores would match the A100's published {a100} images/s (B4 at 380 px, AMP; at 256 px a GPU "
                   f"consumes more, so more cores are needed), and two cores give {2 * core:.0f} images/s if nothing "
                   "else runs on them.")
        for workers in (1, 2, 8):
            rate = results.get((name, workers))
            if rate is not None:
                out.append(f"  {workers} worker(s) delivered {rate:.1f} images/s of wall time in this run "
                           f"(the model step: {need_wall:.2f} images/s)"
                           + (f"; this machine has {os.cpu_count()} logical CPUs, so they did not all run at once"
                              if workers > (os.cpu_count() or 1) else "") + ".")
    plain, cached = per_core.get("decoded from the root"), per_core.get("prepared (fmuia data cache)")
    if plain and cached:
        out.append(f"- The prepared form delivers {cached / plain:.1f}x the images per CPU-second of decoding "
                   "from the root.")
    return out


if __name__ == "__main__":
    sys.exit(main())
