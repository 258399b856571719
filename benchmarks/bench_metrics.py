"""Speed of segmentation scoring: fmuia's exact Hausdorff distance against the challenge's way.

The challenge's scorer reads each predicted and true mask and, for every class, runs
SimpleITK's ``HausdorffDistanceImageFilter`` on the two binary masks. fmuia gets the
same values (checked here, number for number) from a k-d tree over boundary pixels,
guided by a fast distance transform (see ``fmuia_lib/metrics.py``).

Two workloads, each scored both ways, reading the masks from disk every time:

1. the phantom validation set (``runs/phantom/val``, made by ``make run``; a small
   phantom is generated in a temporary folder when it is missing), with imperfect
   predictions made from its ground truth;
2. ``--n`` (default 1000) generated 512 x 512 three-class masks with imperfect predictions.

Both wall-clock and CPU (process) time are printed: on a shared machine the CPU time
is the steadier figure; the target is judged on wall-clock time.

Usage: ``python benchmarks/bench_metrics.py [--n 1000] [--seed 0] [--phantom runs/phantom]``
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

from fmuia_lib import metrics
from fmuia_lib.data.layout import read_root
from fmuia_lib.evaluate import evaluate_submission
from fmuia_lib.predict import records_from_ground_truth, write_submission

TARGET_SPEEDUP = 3.0


def imperfect(mask: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong prediction: shifted, grown, shrunk, a stray blob, or empty."""
    mode = rng.integers(0, 6)
    if mode == 0:
        return np.roll(mask, int(rng.integers(-12, 13)), axis=int(rng.integers(0, 2)))
    if mode == 1:
        return cv2.dilate(mask, np.ones((7, 7), np.uint8))
    if mode == 2:
        return cv2.erode(mask, np.ones((5, 5), np.uint8))
    if mode == 3:
        out = mask.copy()
        h, w = mask.shape
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.ellipse(out, centre, (int(rng.integers(3, w // 6)), int(rng.integers(3, h // 6))), 0, 0, 360,
                    int(rng.integers(1, num_classes)), -1)
        return out
    if mode == 4:
        return np.zeros_like(mask)
    return mask


def reference_scores(pairs: list[tuple[str, str]], num_classes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The challenge's approach: per row read both masks, then per class DSC and SimpleITK HD."""
    out = []
    for (pred_file, gt_file), n in zip(pairs, num_classes):
        gt = cv2.imread(gt_file, cv2.IMREAD_GRAYSCALE)
        pred = cv2.imread(pred_file, cv2.IMREAD_GRAYSCALE)
        if pred.shape != gt.shape:
            pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
        dsc, hd = np.zeros(n), np.zeros(n)
        for c in range(n):
            p, g = (pred == c).astype(np.uint8), (gt == c).astype(np.uint8)
            total = int(p.sum()) + int(g.sum())
            dsc[c] = 1.0 if total == 0 else 2.0 * int((p * g).sum()) / total
            if p.sum() == 0 and g.sum() == 0:
                hd[c] = 0.0
            elif p.sum() == 0 or g.sum() == 0:
                hd[c] = np.sqrt(gt.shape[0] ** 2 + gt.shape[1] ** 2)
            else:
                filt = sitk.HausdorffDistanceImageFilter()
                filt.Execute(sitk.GetImageFromArray(p * 255), sitk.GetImageFromArray(g * 255))
                hd[c] = filt.GetHausdorffDistance()
        out.append((dsc, hd))
    return out


def fmuia_scores(pairs: list[tuple[str, str]], num_classes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for (pred_file, gt_file), n in zip(pairs, num_classes):
        gt = cv2.imread(gt_file, cv2.IMREAD_GRAYSCALE)
        pred = metrics.resize_nearest(cv2.imread(pred_file, cv2.IMREAD_GRAYSCALE), gt.shape)
        out.append((metrics.dice_per_class(pred, gt, n), metrics.hausdorff_per_class(pred, gt, n)))
    return out


def compare(name: str, pairs: list[tuple[str, str]], num_classes: list[int]) -> float:
    """Time both ways on the same files, check identical values, print and return the speed-up."""
    t0, c0 = time.perf_counter(), time.process_time()
    ours = fmuia_scores(pairs, num_classes)
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    ref = reference_scores(pairs, num_classes)
    t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
    hd_diff = max(float(np.max(np.abs(a[1] - b[1]))) for a, b in zip(ours, ref))
    dsc_diff = max(float(np.max(np.abs(a[0] - b[0]))) for a, b in zip(ours, ref))
    values = sum(len(a[1]) for a in ours)
    print(f"{name}: {len(pairs)} mask pairs, {values} per-class HD values")
    print(f"  SimpleITK per-row loop (challenge): {t_ref:8.2f} s wall, {c_ref:8.2f} s CPU")
    print(f"  fmuia metrics:                      {t_ours:8.2f} s wall, {c_ours:8.2f} s CPU")
    print(f"  speed-up {t_ref / t_ours:5.1f}x wall, {c_ref / c_ours:5.1f}x CPU (target >= {TARGET_SPEEDUP:.0f}x)")
    print(f"  max |HD difference| = {hd_diff:.1e}, max |DSC difference| = {dsc_diff:.1e} "
          f"({'identical' if hd_diff == 0 else 'NOT identical'})")
    if hd_diff != 0:
        raise SystemExit("Hausdorff values differ from SimpleITK")
    return t_ref / t_ours


def phantom_workload(phantom: Path, work: Path, rng: np.random.Generator) -> tuple[list, list, Path, Path]:
    val = phantom / "val"
    if not (val / "csv_files").is_dir():
        from fmuia_lib.data.phantom import generate_phantom

        print(f"{val} not found: generating a small phantom in {work / 'phantom'}")
        generate_phantom(work / "phantom", seed=0, n_train=1, n_val=8, workers=1)
        val = work / "phantom" / "val"
    records = records_from_ground_truth(val)
    frame = read_root(val).set_index(["task_id", "image_path"])
    for record in records:
        if "mask" in record:
            n = int(frame.loc[(record["task_id"], record["image_path"]), "num_classes"])
            record["mask"] = imperfect(record["mask"], n, rng)
    sub = work / "phantom_pred"
    write_submission(sub, records)
    seg = read_root(val).query("task_name == 'segmentation'")
    pairs = [(str(sub / p[3:]), f) for p, f in zip(seg["mask_path"], seg["mask_file"])]
    return pairs, seg["num_classes"].tolist(), val, sub


def generated_workload(n: int, work: Path, rng: np.random.Generator) -> tuple[list, list]:
    pairs = []
    folder = work / "masks512"
    folder.mkdir()
    for i in range(n):
        gt = np.zeros((512, 512), np.uint8)
        for c in (1, 2):
            centre = (int(rng.integers(96, 416)), int(rng.integers(96, 416)))
            axes = (int(rng.integers(15, 110)), int(rng.integers(15, 110)))
            cv2.ellipse(gt, centre, axes, float(rng.integers(0, 180)), 0, 360, c, -1)
        pred = imperfect(gt, 3, rng)
        gt_file, pred_file = folder / f"gt_{i:04d}.png", folder / f"pred_{i:04d}.png"
        cv2.imwrite(str(gt_file), gt)
        cv2.imwrite(str(pred_file), pred)
        pairs.append((str(pred_file), str(gt_file)))
    return pairs, [3] * n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="generated 512x512 mask pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phantom", type=Path, default=Path("runs/phantom"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    cv2.setNumThreads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    print("single-threaded (OpenCV and SimpleITK limited to 1 thread)")
    with tempfile.TemporaryDirectory(prefix="fmuia-bench-") as tmp:
        work = Path(tmp)
        pairs, classes, val, sub = phantom_workload(args.phantom, work, rng)
        speedups = [compare(f"phantom validation ({val})", pairs, classes)]
        t0 = time.perf_counter()
        evaluate_submission(val, sub)
        print(f"  full `fmuia evaluate` of that submission (all 27 tasks, HD95 included): "
              f"{time.perf_counter() - t0:.2f} s")
        pairs, classes = generated_workload(args.n, work, rng)
        speedups.append(compare(f"generated 512x512 masks (3 classes, seed {args.seed})", pairs, classes))
    ok = min(speedups) >= TARGET_SPEEDUP
    print(f"minimum speed-up {min(speedups):.1f}x: {'meets' if ok else 'MISSES'} the {TARGET_SPEEDUP:.0f}x target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
