"""The official baseline's training and fmuia's official-baseline profile, step for step.

::

    python benchmarks/compare_official.py --official DIR [--steps 34] [--encoder resnet18]
        [--size 64] [--batch 4] [--seed 42] [--n-train 48] [--row-order glob|sorted]
        [--fmuia-defaults]

``DIR`` is a checkout of the official repository (lijiake2408/Foundation-Model-Challenge-for-
Ultrasound-Image-Analysis: its ``dataset.py``, ``model_factory.py`` and ``utils.py`` are
imported from there, never copied into fmuia; ``albumentations`` must be installed, as
the official code needs it). A small phantom (``--n-train`` images for each of four
subtasks, one per task type) is written to a temporary folder; both trainers read its
``train/`` root and split it as the official ``train.py`` does (``random_split`` of all
rows, seed ``--seed``, 20 % validation).

* **official**: what ``train.py`` does, step for step, with the official modules: its
  seed, dataset, split, ``MultiTaskUniformSampler``, ``MultiTaskModelFactory``, parameter
  groups, default AdamW, per-epoch cosine, per-task losses (the grid detection cell
  gathered as it does), ``zero_grad``/``backward``/``step``; a loader with no worker
  processes (the official uses 4; the batches and every random draw of the main process
  are the same: a loader draws its base seed whether it has workers or not) and then
  ``utils.evaluate`` on the validation loader (batches of 8, in order) and the average
  score of ``train.py``;
* **fmuia**: the ``official-baseline`` profile's settings at the sizes above (CPU, fp32,
  NCHW), ``Trainer.train_step`` on the batches of its own sampler and loader, then
  ``Trainer.evaluate``.

Both run at CPU sizes (``--encoder``/``--size``/``--batch``), with random encoder
weights, and without the training augmentation (the official's ``RandomBrightnessContrast``
and ``GaussNoise`` draw from albumentations' generators, fmuia's equivalent from its
per-item seeds: the same distributions, not the same draws): the official run uses its
validation transforms for training, fmuia ``augment: none``. Each trainer keeps its own
random state (Python, NumPy, torch): the two never draw from each other's streams.

Per step it prints the task and the largest absolute difference of the batch's images,
its targets, the loss, and the weights after the update (every parameter and BatchNorm
buffer, matched by name; head parameters by position in the head), then the validation
scores, and a verdict: which differences remain and what causes them. ``--fmuia-defaults``
runs fmuia's library defaults where the official-baseline profile changes them (sorted
row order, fused AdamW), to show what each costs.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from fmuia_lib.profiles import run_settings
from fmuia_lib.training.data import SeededItems, loader
from fmuia_lib.training.distributed import DistributedContext
from fmuia_lib.training.loop import StepBatches, Trainer

#: one subtask of each type (the phantom renders them; the official code knows them)
TASKS = ("FUGC", "breast_2cls", "thyroid_nodule_det", "breast_lesion")


class RandomState:
    """One trainer's Python, NumPy and torch (CPU) random state, swapped in while it runs."""

    def __init__(self) -> None:
        self.state = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outside = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.setstate(self.state[0])
        np.random.set_state(self.state[1])
        torch.set_rng_state(self.state[2])
        try:
            yield
        finally:
            self.state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
            random.setstate(outside[0])
            np.random.set_state(outside[1])
            torch.set_rng_state(outside[2])


# -- the official run ------------------------------------------------------------------------
class OfficialRun:
    """``train.py``'s objects built with the official modules from ``official_dir`` (see the
    module docstring); :meth:`steps` yields one record per optimiser step."""

    def __init__(self, official_dir: Path, root: Path, args: argparse.Namespace) -> None:
        sys.path.insert(0, str(official_dir))
        A = importlib.import_module("albumentations")
        to_tensor = importlib.import_module("albumentations.pytorch").ToTensorV2
        smp_losses = importlib.import_module("segmentation_models_pytorch.losses")
        dataset = importlib.import_module("dataset")
        factory = importlib.import_module("model_factory")
        self.utils = importlib.import_module("utils")
        self.utils.set_seed(args.seed)
        self.random = RandomState()  # from here on, the official run's own random state
        with self.random.active():
            transforms = A.Compose([A.Resize(args.size, args.size),
                                    A.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
                                    to_tensor()],
                                   bbox_params=A.BboxParams(format="pascal_voc", label_fields=["class_labels"],
                                                            clip=True, min_visibility=0.1))
            full = dataset.MultiTaskDataset(data_root=str(root), transforms=transforms)
            size = len(full)
            val_size = int(size * 0.2)
            generator = torch.Generator().manual_seed(args.seed)
            train_idx, val_idx = torch.utils.data.random_split(list(range(size)), [size - val_size, val_size],
                                                               generator=generator)
            train_subset = torch.utils.data.Subset(full, train_idx.indices)
            self.val_subset = torch.utils.data.Subset(full, val_idx.indices)
            train_subset.dataframe = full.dataframe.iloc[train_idx.indices].reset_index(drop=True)
            self.sampler = dataset.MultiTaskUniformSampler(train_subset, batch_size=args.batch)
            self.train_loader = torch.utils.data.DataLoader(train_subset, batch_sampler=self.sampler,
                                                            num_workers=0,
                                                            collate_fn=self.utils.multi_task_collate_fn)
            configs = [c for c in factory.TASK_CONFIGURATIONS if c["task_id"] in TASKS]
            self.model = factory.MultiTaskModelFactory(encoder_name=args.encoder, encoder_weights=None,
                                                       task_configs=configs)
            self.types = {c["task_id"]: c["task_name"] for c in configs}
            self.losses = {"segmentation": smp_losses.DiceLoss(mode="multiclass"),
                           "classification": torch.nn.CrossEntropyLoss(), "Regression": torch.nn.MSELoss(),
                           "detection": self.utils.DetectionLoss()}
            groups = [{"params": self.model.encoder.parameters(), "lr": 1e-4}]
            groups += [{"params": head.parameters(), "lr": 1e-4 * 10.0} for head in self.model.heads.values()]
            self.optimizer = torch.optim.AdamW(groups)
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=50, eta_min=1e-6)
        self.val_rows = [full.dataframe.iloc[i]["image_path"] for i in val_idx.indices]

    def steps(self) -> Iterator[dict[str, Any]]:
        while True:  # epochs, each closed by train.py's validation and scheduler step
            with self.random.active():
                batches = iter(self.train_loader)
            for _ in range(len(self.sampler)):
                with self.random.active():
                    batch = next(batches)
                    record = self._step(batch)
                yield record
            self.validate()
            self.scheduler.step()

    def _step(self, batch: dict[str, Any]) -> dict[str, Any]:
        model = self.model
        model.train()
        images = batch["image"]
        labels = torch.stack(batch["label"])
        task_id = batch["task_id"][0]
        kind = self.types[task_id]
        outputs = model(images, task_id=task_id)
        if kind == "detection":
            _, _, h, w = outputs.shape
            cx, cy = (labels[:, 0] + labels[:, 2]) / 2.0, (labels[:, 1] + labels[:, 3]) / 2.0
            rows, cols = torch.clamp((cy * h).long(), 0, h - 1), torch.clamp((cx * w).long(), 0, w - 1)
            final = torch.zeros((images.shape[0], 5))
            for i in range(images.shape[0]):
                final[i] = outputs[i, :, rows[i], cols[i]]
        else:
            final = outputs
        loss = self.losses[kind](final, labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"task_id": task_id, "image": images, "target": labels, "loss": float(loss.detach())}

    def validate(self) -> tuple[dict[str, dict[str, float]], float]:
        with self.random.active():
            val_loader = torch.utils.data.DataLoader(self.val_subset, batch_size=8, shuffle=False, num_workers=0,
                                                     collate_fn=self.utils.multi_task_collate_fn)
            frame = self.utils.evaluate(self.model, val_loader, torch.device("cpu"))
        cols = [c for c in frame.columns if "MAE" not in c and isinstance(frame[c].iloc[0], (int, float))]
        score = float(frame[cols].mean().mean()) if len(frame) and cols else 0.0
        per_task = {row["Task ID"]: {k: float(v) for k, v in row.items() if k not in ("Task ID", "Task Name")
                                     and v == v} for _, row in frame.iterrows()}
        return per_task, score


# -- fmuia's run ----------------------------------------------------------------------------
class FmuiaRun:
    """The ``official-baseline`` profile at the comparison's sizes, through fmuia's Trainer."""

    def __init__(self, root: Path, out: Path, args: argparse.Namespace) -> None:
        overrides = {"encoder": args.encoder, "encoder_weights": None, "image_size": args.size,
                     "batch_size": args.batch, "seed": args.seed, "num_workers": 0, "augment": "none",
                     "channels_last": False, "amp": False, "tasks": list(TASKS)}
        if args.fmuia_defaults:
            overrides.update(row_order="sorted", fused_adamw=True)
        elif args.row_order:
            overrides["row_order"] = args.row_order
        self.config = run_settings("official-baseline", overrides, data_dir=root.parent, run_dir=out,
                                   device="cpu").config
        self.random = RandomState()
        with self.random.active():
            self.trainer = Trainer(self.config, DistributedContext(), torch.device("cpu"), progress=False)
            self.trainer.model.train()

    def steps(self) -> Iterator[dict[str, Any]]:
        """As ``Trainer.run``: one loader per validation interval (an epoch here)."""
        trainer, items = self.trainer, SeededItems(self.trainer.train_set)
        while True:
            start = trainer.step
            stream = StepBatches(trainer.sampler, start, start + trainer.eval_interval, item_seeds=self.config.seed)
            with self.random.active():
                batches = iter(loader(items, stream, 0, trainer.device))
            for _ in range(trainer.eval_interval):
                with self.random.active():
                    trainer.model.train()
                    batch = next(batches)
                    row = trainer.train_step(batch)
                yield {"task_id": batch["task_id"], "image": batch["image"], "target": batch["target"],
                       "loss": float(row["loss"])}
            self.validate()  # as Trainer.run at the end of each interval (no checkpoint written here)

    def validate(self) -> tuple[dict[str, dict[str, float]], float]:
        with self.random.active():
            per_task, score = self.trainer.evaluate()
        return per_task, float(score)


# -- comparing -----------------------------------------------------------------------------
def matched_weights(official: torch.nn.Module, fmuia: torch.nn.Module) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, official tensor, fmuia tensor)`` for every parameter and buffer: encoder and FPN
    decoder by name, each head's entries by position (the two name their layers differently)."""
    theirs, ours = official.state_dict(), fmuia.state_dict()
    pairs = [(k, v, ours[k]) for k, v in theirs.items() if not k.startswith("heads.")]
    for task_id in official.heads:
        a = [(k, v) for k, v in theirs.items() if k.startswith(f"heads.{task_id}.")]
        b = [v for k, v in ours.items() if k.startswith(f"heads.{task_id}.")]
        if len(a) != len(b) or any(v.shape != w.shape for (_, v), w in zip(a, b)):
            raise SystemExit(f"compare_official: error: the heads of {task_id} differ in layout")
        pairs += [(k, v, w) for (k, v), w in zip(a, b)]
    return pairs


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def weight_difference(pairs) -> tuple[float, str]:
    worst, name = 0.0, "-"
    for key, a, b in pairs:
        d = max_difference(a, b)
        if d > worst:
            worst, name = d, key
    return worst, name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="folder of the official repository")
    parser.add_argument("--steps", type=int, default=34)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--n-train", type=int, default=48, help="phantom images per subtask")
    parser.add_argument("--row-order", choices=("glob", "sorted"), default=None,
                        help="fmuia's row order before the split (default: the profile's)")
    parser.add_argument("--fmuia-defaults", action="store_true",
                        help="fmuia's library defaults for row order and AdamW instead of the profile's")
    args = parser.parse_args(argv)
    official_dir = Path(args.official).resolve()
    if not (official_dir / "model_factory.py").is_file():
        print(f"compare_official: error: {official_dir} has no model_factory.py (not the official repository)",
              file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        from fmuia_lib.sources.phantom import generate_phantom

        generate_phantom(Path(tmp) / "phantom", seed=0, n_train=args.n_train, n_val=2, tasks=list(TASKS),
                         workers=1)
        root = Path(tmp) / "phantom" / "train"
        official = OfficialRun(official_dir, root, args)
        fmuia = FmuiaRun(root, Path(tmp) / "run", args)
        return compare(official, fmuia, args)


def compare(official: OfficialRun, fmuia: FmuiaRun, args: argparse.Namespace) -> int:
    config = fmuia.config
    print(f"CPU fp32, {args.encoder} (random weights), {args.size} px, batch {args.batch}, seed {args.seed}, "
          f"{len(official.sampler.dataset)} training rows of {', '.join(TASKS)}; fmuia: official-baseline "
          f"profile, row_order={config.row_order}, fused_adamw={config.fused_adamw}, resize={config.resize}")
    val_shared = len(set(official.val_rows) & set(fmuia.trainer.val_set.frame["image_path"]))
    print(f"validation rows: {len(official.val_rows)} official, {len(fmuia.trainer.val_set)} fmuia, "
          f"{val_shared} the same")
    pairs = matched_weights(official.model, fmuia.trainer.model)
    w0, _ = weight_difference(pairs)
    print(f"initial weights: max |official - fmuia| = {w0:.3g} over {len(pairs)} tensors")
    print(f"{'step':>4}  {'task':<20} {'inputs':>9} {'targets':>9} {'loss':>9} {'weights':>9}  largest in")
    first = {}
    theirs, ours = official.steps(), fmuia.steps()
    done = 0
    for step in range(1, args.steps + 1):
        a, b = next(theirs), next(ours)
        if a["task_id"] != b["task_id"]:
            print(f"{step:>4}  batches differ: official {a['task_id']}, fmuia {b['task_id']}")
            first.setdefault("batch", step)
            break
        done = step
        diffs = {"inputs": max_difference(a["image"], b["image"]),
                 "targets": max_difference(a["target"].double().flatten(), b["target"].double().flatten()),
                 "loss": abs(a["loss"] - b["loss"])}
        diffs["weights"], where = weight_difference(pairs)
        for key, value in diffs.items():
            if value > 0:
                first.setdefault(key, step)
        print(f"{step:>4}  {a['task_id']:<20} " + " ".join(f"{v:9.2g}" for v in diffs.values())
              + f"  {where if diffs['weights'] else ''}")
    theirs_val, score_a = official.validate()
    ours_val, score_b = fmuia.validate()
    print(f"validation after step {done} (per-batch means, train.py's average score; epochs of "
          f"{len(official.sampler)} steps, each closed by a validation and the scheduler's step):")
    for task_id in TASKS:
        for metric, value in theirs_val.get(task_id, {}).items():
            other = ours_val.get(task_id, {}).get(metric)
            print(f"  {task_id:<20} {metric:<13} official {value:.6f}  fmuia "
                  + ("-" if other is None else f"{other:.6f}  difference {abs(value - other):.3g}"))
    print(f"  selection score      official {score_a:.6f}  fmuia {score_b:.6f}  difference "
          f"{abs(score_a - score_b):.3g}")
    verdict(first, args, w0, val_shared, len(official.val_rows))
    return 0


def verdict(first: dict[str, int], args: argparse.Namespace, w0: float, val_shared: int, n_val: int) -> None:
    print("remaining differences:")
    if not first and not w0:
        print(f"  none in {args.steps} steps: inputs, targets, losses and weights bit-identical")
    if w0:
        print("  initial weights differ: the two networks were not built in the same order from the same seed")
    if val_shared < n_val or "batch" in first:
        print("  the batches differ: the row order before the split (--row-order glob is the official's) or the "
              "sampler's task order")
    for key, cause in (("inputs", "resize or normalisation (the official: cv2 INTER_LINEAR, albumentations' "
                                  "Normalize)"),
                       ("targets", "box or landmark scaling"),
                       ("loss", "the forward pass (inputs, weights or dropout draws)"),
                       ("weights", "the update (AdamW implementation: fused or not; skipped steps)")):
        if key in first:
            print(f"  {key} first differ at step {first[key]}: {cause}")
    print("  by design: the official 'MAE (pixels)' scales by 256 px whatever the model size, fmuia's by the "
          "model size (equal at the official 256 px; MAE is not in the selection score)")
    print("  not compared: the training augmentation (off in both), pretrained encoder weights, loader workers")


if __name__ == "__main__":
    raise SystemExit(main())
