"""Draw one phantom image per subtask with its label overlaid: docs/phantom_gallery.png.

Usage: python scripts/make_phantom_gallery.py [--seed 0] [--out docs/phantom_gallery.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fmuia_lib.sources.phantom import render_sample  # noqa: E402
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, load_manifest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "phantom_gallery.png"))
    parser.add_argument("--cols", type=int, default=6)
    args = parser.parse_args()

    tasks = list(load_manifest().values())
    rows = -(-len(tasks) // args.cols)
    fig, axes = plt.subplots(rows, args.cols, figsize=(3.2 * args.cols, 2.9 * rows), facecolor="black")
    colours = plt.get_cmap("tab10")
    for ax, task in zip(axes.ravel(), tasks):
        image, target = render_sample(task, args.seed)
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        subtitle = ""
        if task.task_type == SEGMENTATION:
            overlay = np.zeros((*target.shape, 4))
            for k in range(1, task.num_classes):  # each class tinted, its outline drawn
                overlay[target == k] = (*colours(k - 1)[:3], 0.3)
                if (target == k).any():
                    ax.contour(target == k, levels=[0.5], colors=[colours(k - 1)], linewidths=0.8)
            ax.imshow(overlay)
            subtitle = "mask: " + ", ".join(task.class_names[1:])
        elif task.task_type == CLASSIFICATION:
            subtitle = f"class: {task.class_names[target]}"
        elif task.task_type == DETECTION:
            x0, y0, x1, y1 = target
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1.2))
            subtitle = f"box: {task.class_names[0]}"
        elif task.task_type == REGRESSION:
            pts = np.asarray(target)
            ax.scatter(pts[:, 0], pts[:, 1], c=[colours(k) for k in range(len(pts))], s=18, marker="x")
            subtitle = "points: " + ", ".join(task.class_names)
        ax.set_title(f"{task.task_id}\n{subtitle}", color="white", fontsize=7.5)
        ax.axis("off")
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=72, facecolor="black")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
