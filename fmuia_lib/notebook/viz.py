"""Plots for the notebooks: data, training curves and error analysis.

Every function draws with matplotlib (seaborn for a few statistical plots) and returns
the figure, so a notebook shows it and a script can save it. Inputs are plain arrays or
the tidy DataFrames the notebooks build; nothing here reads models or trains.

Overlays follow one convention everywhere: ground truth in green, prediction in
magenta; masks are drawn as translucent colour per class, boxes as rectangles, landmarks
as numbered dots (an arrow from truth to prediction shows the error).

Sizes are chosen for the notebooks' 100 dpi: no figure is wider than :data:`MAX_WIDTH`
inches (about the width a notebook viewer shows without shrinking it) and no text is
smaller than :data:`SMALL` points, so that labels stay legible at the committed size.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib import patheffects
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, TASK_TYPES, TaskSpec

TRUE_COLOUR = "#1a9850"
PRED_COLOUR = "#d01c8b"
TYPE_COLOURS = dict(zip(TASK_TYPES, ("#4477aa", "#ee6677", "#228833", "#ccbb44")))
#: Widest figure, in inches (1,000 pixels at the notebooks' 100 dpi).
MAX_WIDTH = 10.0
#: Smallest font size used, in points (11 pixels at 100 dpi).
SMALL = 8
#: Colours of data sources compared side by side (notebook 01).
SOURCE_COLOURS = ("#4477aa", "#ee7733", "#009988", "#cc3311")


def _grid(n: int, ncols: int, size: float = 2.4) -> tuple[Figure, np.ndarray]:
    """``n`` square panels of ``size`` inches in rows of ``ncols`` (fewer columns when the
    row would be wider than MAX_WIDTH); unused panels are hidden."""
    ncols = max(1, min(ncols, n, int(MAX_WIDTH // size)))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def readable_log_axis(ax, which: str) -> None:
    """Put ``ax``'s ``which`` axis ("x" or "y") on a log scale whose tick labels never collide:
    plain numbers (0.05, 200) at 1, 2 and 5 times each power of ten over a range of at most
    two decades, at the powers of ten alone over a wider one, and no labels on minor ticks
    (matplotlib labels them over a short range, where they overprint each other)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(ax, f"set_{which}scale")("log")
    low, high = getattr(ax, f"get_{which}lim")()
    decades = np.log10(high / low) if low > 0 and high > low else 1.0
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


# -- data ----------------------------------------------------------------------------------
def plot_counts(counts: pd.DataFrame) -> Figure:
    """Images per task and split: ``counts`` has columns task_id, task_type, split, images."""
    table = counts.pivot_table(index=["task_type", "task_id"], columns="split", values="images",
                               aggfunc="sum", fill_value=0)
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(table) + 1))
    left = np.zeros(len(table))
    labels = [f"{tid} ({ttype})" for ttype, tid in table.index]
    for split, colour in zip(table.columns, ("#4477aa", "#bbbbbb", "#ee6677")):
        ax.barh(labels, table[split].to_numpy(), left=left, color=colour, label=split)
        left += table[split].to_numpy()
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.legend(loc="lower right")
    ax.set_title("Images per subtask and split")
    fig.tight_layout()
    return fig


def plot_class_balance(labels: pd.DataFrame, tasks: Mapping[str, TaskSpec]) -> Figure:
    """Class shares of classification tasks: ``labels`` has columns task_id, label (int)."""
    ids = [t for t in tasks if t in set(labels["task_id"])]
    fig, axes = _grid(len(ids), ncols=3, size=3.2)
    for ax, task_id in zip(axes.flat, ids):
        task = tasks[task_id]
        counts = (labels.loc[labels["task_id"] == task_id, "label"].value_counts()
                  .reindex(range(task.num_classes), fill_value=0))
        ax.bar(range(task.num_classes), counts.to_numpy(), color=TYPE_COLOURS[CLASSIFICATION])
        ax.set_xticks(range(task.num_classes), task.class_names, rotation=45, ha="right", fontsize=SMALL)
        ax.set_title(f"{task_id}\nmajority share {counts.max() / max(1, counts.sum()):.2f}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_image_sizes(sizes: pd.DataFrame, hue: str = "task_type") -> Figure:
    """Width against height of every image: ``sizes`` has width, height and the ``hue``
    column (task_type, or a data source)."""
    fig, ax = plt.subplots(figsize=(6, 4.8))
    groups = list(dict.fromkeys(sizes[hue]))
    for i, (name, part) in enumerate((g, sizes[sizes[hue] == g]) for g in groups):
        colour = TYPE_COLOURS.get(name, SOURCE_COLOURS[i % len(SOURCE_COLOURS)])
        ax.scatter(part["width"], part["height"], s=14, alpha=0.6, label=f"{name} ({len(part)})", color=colour)
    if max(sizes["width"].max() / sizes["width"].min(), sizes["height"].max() / sizes["height"].min()) > 4:
        readable_log_axis(ax, "x")  # sizes over more than a factor of 4: equal ratios at equal distances
        readable_log_axis(ax, "y")
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Image sizes on disk (the model resizes all to one square)", fontsize=10)
    ax.legend(fontsize=SMALL)
    fig.tight_layout()
    return fig


def plot_class_shares(counts: pd.DataFrame, tasks: Mapping[str, TaskSpec]) -> Figure:
    """Share of each class per task, one bar per data source side by side.

    ``counts`` is :func:`fmuia_lib.notebook.exploration.class_counts` (columns data, task_id,
    class_name, images, share); one panel per task, in manifest order.
    """
    ids = [t for t in tasks if t in set(counts["task_id"])]
    sources = list(dict.fromkeys(counts["data"]))
    fig, axes = _grid(len(ids), ncols=3, size=3.3)
    width = 0.8 / len(sources)
    for ax, task_id in zip(axes.flat, ids):
        part = counts[counts["task_id"] == task_id]
        names = list(dict.fromkeys(part["class_name"]))
        x = np.arange(len(names))
        for i, source in enumerate(sources):
            shares = part[part["data"] == source].set_index("class_name")["share"].reindex(names)
            ax.bar(x + (i - (len(sources) - 1) / 2) * width, shares.to_numpy(), width,
                   color=SOURCE_COLOURS[i % len(SOURCE_COLOURS)], label=source)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=SMALL)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of images", fontsize=SMALL)
        ax.set_title(f"{task_id} ({tasks[task_id].task_type})", fontsize=9)
    axes.flat[0].legend(fontsize=SMALL)
    fig.tight_layout()
    return fig


def speckle_statistics(image: np.ndarray, window: int = 7) -> dict[str, float]:
    """Intensity and speckle numbers of one grey image (uint8 or float).

    ``local_contrast`` is the median over the image of the local speckle contrast
    ``std / mean`` in ``window x window`` patches (bright pixels only). Fully developed
    speckle (Rayleigh-distributed amplitude) has contrast sqrt(4/pi - 1) = 0.52; log
    compression, as in B-mode display, lowers it.
    """
    import cv2

    grey = image.mean(axis=2) if image.ndim == 3 else image
    grey = grey.astype(np.float64)
    mean = cv2.blur(grey, (window, window))
    sq = cv2.blur(grey ** 2, (window, window))
    std = np.sqrt(np.clip(sq - mean ** 2, 0, None))
    bright = mean > 10
    contrast = float(np.median(std[bright] / mean[bright])) if bright.any() else float("nan")
    return {"mean": float(grey.mean()), "std": float(grey.std()),
            "dark_fraction": float((grey < 10).mean()), "local_contrast": contrast}


def plot_intensity(stats: pd.DataFrame) -> Figure:
    """Per-image mean intensity and speckle contrast by task type (from speckle_statistics)."""
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH, 3.8))
    order = [t for t in TASK_TYPES if t in set(stats["task_type"])]
    sns.boxplot(data=stats, x="task_type", y="mean", hue="task_type", order=order, ax=axes[0],
                palette=TYPE_COLOURS, legend=False)
    axes[0].set_title("Mean grey level per image")
    sns.boxplot(data=stats, x="task_type", y="local_contrast", hue="task_type", order=order,
                ax=axes[1], palette=TYPE_COLOURS, legend=False)
    axes[1].axhline(np.sqrt(4 / np.pi - 1), ls="--", c="k", lw=1)
    axes[1].text(0.02, np.sqrt(4 / np.pi - 1), " Rayleigh speckle 0.52", va="bottom", fontsize=SMALL,
                 transform=axes[1].get_yaxis_transform())
    axes[1].set_title("Local speckle contrast (std / mean, 7x7)")
    fig.tight_layout()
    return fig


# -- overlays --------------------------------------------------------------------------------
#: A dark outline that keeps small labels legible on bright speckle.
_OUTLINE = [patheffects.withStroke(linewidth=2, foreground="black")]


def overlay(ax: plt.Axes, image: np.ndarray, task: TaskSpec, truth: Any = None, prediction: Any = None,
            title: str | None = None) -> None:
    """Draw ``image`` with ground truth and/or prediction of ``task`` in original pixels.

    segmentation: label masks (H x W); classification: class index; detection: box
    ``[x_min, y_min, x_max, y_max]``; Regression: points ``(K, 2)`` as ``(x, y)``.
    """
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    kind = task.task_type
    if kind == SEGMENTATION:
        for mask, colour, fill in ((truth, TRUE_COLOUR, 0.35), (prediction, PRED_COLOUR, 0.0)):
            if mask is None:
                continue
            mask = np.asarray(mask)
            if fill:
                ax.imshow(np.ma.masked_where(mask == 0, mask), cmap="tab10", alpha=fill,
                          vmin=0, vmax=9, interpolation="nearest")
            for c in range(1, task.num_classes):
                if (mask == c).any():
                    ax.contour(mask == c, levels=[0.5], colors=[colour], linewidths=1.0)
    elif kind == DETECTION:
        for box, colour in ((truth, TRUE_COLOUR), (prediction, PRED_COLOUR)):
            if box is not None:
                x0, y0, x1, y1 = np.asarray(box, dtype=float)
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.5))
    elif kind == REGRESSION:
        if truth is not None and prediction is not None:
            t, p = np.asarray(truth, float), np.asarray(prediction, float)
            for (tx, ty), (px, py) in zip(t, p):
                ax.annotate("", xy=(px, py), xytext=(tx, ty),
                            arrowprops={"arrowstyle": "->", "color": "yellow", "lw": 1})
        for pts, colour, marker in ((truth, TRUE_COLOUR, "o"), (prediction, PRED_COLOUR, "x")):
            if pts is not None:
                pts = np.asarray(pts, dtype=float)
                ax.scatter(pts[:, 0], pts[:, 1], c=colour, s=22, marker=marker)
                for k, (x, y) in enumerate(pts, 1):
                    ax.text(x + 4, y - 4, str(k), color=colour, fontsize=9, fontweight="bold",
                            path_effects=_OUTLINE)
    elif kind == CLASSIFICATION:
        parts = []
        if truth is not None:
            parts.append(f"true {task.class_names[int(truth)]}")
        if prediction is not None:
            parts.append(f"pred {task.class_names[int(prediction)]}")
        ax.text(0.02, 0.98, "\n".join(parts), transform=ax.transAxes, va="top", fontsize=SMALL,
                color="white", bbox={"facecolor": "black", "alpha": 0.6, "pad": 2})
    if title:
        ax.set_title(title, fontsize=SMALL)


def gallery(items: Sequence[Mapping[str, Any]], tasks: Mapping[str, TaskSpec], ncols: int = 4,
            suptitle: str | None = None, size: float = 2.4) -> Figure:
    """Images with overlays in panels of ``size`` inches; each item has ``task_id``,
    ``image`` and optionally ``truth``, ``prediction`` and ``title`` (what :func:`overlay` draws)."""
    fig, axes = _grid(len(items), ncols, size)
    for ax, item in zip(axes.flat, items):
        overlay(ax, item["image"], tasks[item["task_id"]], item.get("truth"), item.get("prediction"),
                item.get("title"))
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def sample_grid(frame: pd.DataFrame, tasks: Mapping[str, TaskSpec], task_type: str,
                per_task: int = 2) -> Figure:
    """The first ``per_task`` images of every task of one type, ground truth overlaid.

    ``frame`` is a table from :func:`fmuia_lib.data.layout.read_root`.
    """
    from fmuia_lib.data.dataset import load_image, load_mask

    items = []
    for row in frame[frame["task_name"] == task_type].groupby("task_id", sort=False).head(per_task).itertuples():
        truth = load_mask(row.mask_file) if task_type == SEGMENTATION else row.target
        items.append({"task_id": row.task_id, "image": load_image(row.image_file), "truth": truth,
                      "title": row.task_id})
    ncols = per_task * max(1, 5 // per_task)  # whole tasks per row
    return gallery(items, tasks, ncols=ncols, size=2.0, suptitle=f"{task_type}: ground truth in green")


# -- training ----------------------------------------------------------------------------------
def plot_task_probabilities(probabilities: Mapping[str, Mapping[str, float]],
                            tasks: Mapping[str, TaskSpec]) -> Figure:
    """Grouped bars: ``probabilities[strategy][task_id]`` = chance that a batch is that task's."""
    frame = pd.DataFrame(probabilities).reindex([t for t in tasks if t in next(iter(probabilities.values()))])
    fig, ax = plt.subplots(figsize=(MAX_WIDTH, 4))
    width = 0.8 / len(frame.columns)
    x = np.arange(len(frame))
    for i, strategy in enumerate(frame.columns):
        ax.bar(x + i * width, frame[strategy], width, label=strategy)
    ax.set_xticks(x + 0.4 - width / 2, frame.index, rotation=75, fontsize=SMALL)
    ax.set_ylabel("P(batch is from task)")
    ax.set_title("Task sampling probability per strategy")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_loss_curves(history: pd.DataFrame, tasks: Mapping[str, TaskSpec], smooth: int = 5) -> Figure:
    """Training loss per task (left) and per task type (right) against the step.

    ``history`` has one row per step with columns step, task_id and loss.
    """
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH, 4))
    hist = history.copy()
    hist["task_type"] = hist["task_id"].map(lambda t: tasks[t].task_type)
    for task_id, part in hist.groupby("task_id", sort=False):
        axes[0].plot(part["step"], part["loss"].rolling(smooth, min_periods=1).mean(), lw=0.8,
                     color=TYPE_COLOURS[tasks[task_id].task_type], alpha=0.6)
    for task_type, part in hist.groupby("task_type", sort=False):
        axes[1].plot(part["step"], part["loss"].rolling(smooth, min_periods=1).mean(),
                     label=task_type, color=TYPE_COLOURS[task_type])
    axes[0].set_title(f"Loss per task (one line each, running mean of {smooth})", fontsize=10)
    axes[1].set_title("Loss per task type", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
    axes[1].legend()
    fig.tight_layout()
    return fig


def plot_lr_schedule(steps: Sequence[int], lrs: Mapping[str, Sequence[float]]) -> Figure:
    """Learning rate of each parameter group against the step."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in lrs.items():
        ax.plot(steps, values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_yscale("log")
    ax.set_title("Learning-rate schedule per parameter group")
    ax.legend(fontsize=SMALL)
    fig.tight_layout()
    return fig


# -- error analysis ------------------------------------------------------------------------------
def plot_confusion(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str],
                   ax: plt.Axes, title: str = "") -> None:
    """Confusion matrix with counts (rows: truth, columns: prediction)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(class_names)
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=list(range(n)), display_labels=list(class_names),
                                            ax=ax, colorbar=False, cmap="Blues",
                                            text_kw={"fontsize": SMALL if n > 5 else 9})
    ax.set_xticklabels(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    ax.tick_params(labelsize=SMALL)
    ax.set_xlabel("predicted", fontsize=SMALL)
    ax.set_ylabel("true", fontsize=SMALL)
    ax.set_title(title, fontsize=9)


def plot_roc(y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str], ax: plt.Axes,
             title: str = "") -> None:
    """ROC curve per class (one-vs-rest); classes absent from ``y_true`` are skipped and said so."""
    from sklearn.metrics import auc, roc_curve

    y_true = np.asarray(y_true)
    skipped = []
    for c, name in enumerate(class_names):
        positives = y_true == c
        if positives.all() or not positives.any():
            skipped.append(name)
            continue
        fpr, tpr, _ = roc_curve(positives, probs[:, c])
        ax.plot(fpr, tpr, lw=1.2, label=f"{name} ({auc(fpr, tpr):.2f})")
        if len(class_names) == 2:
            break  # two classes: one curve says it all
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set_xlabel("false positive rate", fontsize=SMALL)
    ax.set_ylabel("true positive rate", fontsize=SMALL)
    ax.tick_params(labelsize=SMALL)
    ax.set_title(title + (f"\nno positives: {', '.join(skipped)}" if skipped and len(class_names) > 2 else ""),
                 fontsize=9)
    ax.legend(fontsize=SMALL, loc="lower right")


def classification_panels(per_image: pd.DataFrame, tasks: Mapping[str, TaskSpec], kind: str) -> Figure:
    """One panel per classification task of ``per_image`` (:func:`fmuia_lib.notebook.error_analysis.per_image_errors`
    rows): ``kind`` ``"confusion"`` (:func:`plot_confusion`) or ``"roc"`` (:func:`plot_roc`).
    Confusion panels grow with the number of classes, so that 8 class names stay legible."""
    ids = list(dict.fromkeys(per_image["task_id"]))
    most = max(tasks[t].num_classes for t in ids)
    size = 3.3 if kind == "confusion" and most > 4 else 2.5 if kind == "confusion" else 3.0
    fig, axes = _grid(len(ids), ncols=4, size=size)
    for ax, task_id in zip(axes.flat, ids):
        part, task = per_image[per_image["task_id"] == task_id], tasks[task_id]
        if kind == "confusion":
            plot_confusion(part["true"], part["predicted"], task.class_names, ax, title=task_id)
        elif kind == "roc":
            plot_roc(part["true"], np.stack(part["probs"].to_list()), task.class_names, ax, title=task_id)
        else:
            raise ValueError(f"kind must be 'confusion' or 'roc', got {kind!r}")
    fig.tight_layout()
    return fig


def _top_class(y_true: Sequence[int], probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whether the top class is right, its probability): the reliability of the top class."""
    probs = np.asarray(probs, dtype=float)
    return (probs.argmax(axis=1) == np.asarray(y_true)).astype(int), probs.max(axis=1)


def expected_calibration_error(y_true: Sequence[int], probs: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the gap between accuracy and confidence of the top class, averaged over
    equal-width confidence bins weighted by the share of images in each.

    The per-bin accuracy and confidence are sklearn's ``calibration_curve``; it does not
    return how many images each bin holds, so the weights count them with the same
    bins (``np.searchsorted`` on the inner edges, sklearn's rule for ``strategy="uniform"``).
    """
    from sklearn.calibration import calibration_curve

    correct, confidence = _top_class(y_true, probs)
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=n_bins, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], confidence), minlength=n_bins)
    weights = counts[counts > 0] / len(confidence)
    return float(np.sum(weights * np.abs(accuracy - mean_confidence)))


def plot_reliability(per_image: pd.DataFrame, n_bins: int = 5) -> Figure:
    """Reliability diagram of the top class, one panel per classification task (sklearn's
    ``calibration_curve``): a calibrated model lies on the diagonal. Each panel's title gives
    the task's ECE (:func:`expected_calibration_error`) and its images; each point is one
    non-empty confidence bin."""
    from sklearn.calibration import calibration_curve

    ids = list(dict.fromkeys(per_image["task_id"]))
    fig, axes = _grid(len(ids), ncols=3, size=3.1)
    for ax, task_id in zip(axes.flat, ids):
        part = per_image[per_image["task_id"] == task_id]
        probs = np.stack(part["probs"].to_list())
        correct, confidence = _top_class(part["true"], probs)
        accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=n_bins, strategy="uniform")
        ece = expected_calibration_error(part["true"], probs, n_bins)
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        ax.plot(mean_confidence, accuracy, marker="o", ms=5, lw=1.5, color=TYPE_COLOURS[CLASSIFICATION])
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{task_id}\nECE {ece:.3f}, {len(part)} images", fontsize=9)
        ax.set_xlabel("confidence (bin mean)", fontsize=SMALL)
        ax.set_ylabel("accuracy in the bin", fontsize=SMALL)
        ax.tick_params(labelsize=SMALL)
    fig.suptitle(f"Reliability of the top class ({n_bins} confidence bins; dotted: calibrated)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_metric_distribution(per_image: pd.DataFrame, metric: str, title: str) -> Figure:
    """Strip + box plot of one per-image metric (column ``metric``) for every task."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(MAX_WIDTH * 0.8, 0.3 * per_image["task_id"].nunique() + 1.2))
    sns.boxplot(data=per_image, y="task_id", x=metric, color="#dddddd", fliersize=0, ax=ax)
    sns.stripplot(data=per_image, y="task_id", x=metric, size=3.5, color=PRED_COLOUR, ax=ax)
    ax.set_ylabel("")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_iou_vs_size(per_image: pd.DataFrame) -> Figure:
    """Detection IoU against the true box's share of the image area, per task."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for task_id, part in per_image.groupby("task_id"):
        ax.scatter(part["box_area_fraction"], part["IoU"], s=18, label=task_id)
    readable_log_axis(ax, "x")
    ax.set_xlabel("true box area / image area")
    ax.set_ylabel("IoU")
    ax.set_ylim(-0.02, 1.02)
    ax.axhline(0.5, ls=":", c="grey", lw=1)
    ax.set_title("Detection IoU against the size of the true box", fontsize=10)
    ax.legend(fontsize=SMALL)
    fig.tight_layout()
    return fig


def plot_landmark_positions(per_image: pd.DataFrame, tasks: Mapping[str, TaskSpec]) -> Figure:
    """Where the landmarks are and where the model puts them, in fractions of the image's
    width and height: one panel per Regression task of ``per_image``
    (:func:`fmuia_lib.notebook.error_analysis.per_image_errors` rows), true positions as dots and
    predictions as crosses, one colour per landmark. Predictions bunched in a small cloud
    while the truth is spread out is a collapse toward the mean position."""
    ids = list(dict.fromkeys(per_image["task_id"]))
    fig, axes = _grid(len(ids), ncols=3, size=3.3)
    colours = plt.get_cmap("tab10").colors
    for ax, task_id in zip(axes.flat, ids):
        part = per_image[per_image["task_id"] == task_id]
        scale = np.array([[w, h] for h, w in part["size"]], dtype=float)[:, None, :]
        truth = np.stack(part["truth"].to_list()) / scale
        pred = np.stack(part["prediction"].to_list()) / scale
        for k, name in enumerate(tasks[task_id].class_names):
            colour = colours[k % len(colours)]
            ax.scatter(truth[:, k, 0], truth[:, k, 1], s=14, color=colour, alpha=0.6, label=name)
            ax.scatter(pred[:, k, 0], pred[:, k, 1], s=22, color=colour, marker="x")
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)  # image y grows downwards
        ax.set_aspect("equal")
        ax.tick_params(labelsize=SMALL)
        ax.set_xlabel("x / width", fontsize=SMALL)
        ax.set_ylabel("y / height", fontsize=SMALL)
        ax.set_title(task_id, fontsize=9)
        ax.legend(fontsize=SMALL, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.suptitle("Landmarks: true positions (dots) and predictions (crosses)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_ablation(table: pd.DataFrame, value: str = "quality") -> Figure:
    """One panel per dataset: ``value`` (``quality`` or ``diff``) of each arm per task type,
    as bars of the mean over seeds with the seed-to-seed standard deviation as error bars
    (``fmuia_lib.experiments.ablation.type_table``'s columns ``value`` and ``value_std``).

    An arm keeps its colour in every plot, whichever arms a table holds: the official arm
    grey, the fmuia recipe black, ``+X`` and ``-X`` the colour of switch X (``-X`` hatched).
    """
    from fmuia_lib.switches import SWITCHES

    names = list(SWITCHES)
    palette = plt.get_cmap("tab20").colors  # one colour per switch: tab10 would repeat after ten
    if len(names) > len(palette):
        palette = [plt.get_cmap("turbo")(i / (len(names) - 1)) for i in range(len(names))]

    def style(arm: str) -> dict[str, Any]:
        if arm in ("official", "fmuia"):
            return {"color": "0.6" if arm == "official" else "0.15"}
        colour = palette[names.index(arm[1:])] if arm[1:] in names else "0.4"
        return {"color": colour, "hatch": "///", "edgecolor": "white"} if arm.startswith("-") else {"color": colour}

    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(MAX_WIDTH, 3.6), squeeze=False, sharey=True)
    for ax, dataset in zip(axes.flat, datasets):
        part = table[table["dataset"] == dataset]
        types = list(dict.fromkeys(part["task_type"]))
        arms = list(dict.fromkeys(part["arm"]))
        width = 0.8 / len(arms)
        for i, arm in enumerate(arms):
            rows = part[part["arm"] == arm].set_index("task_type").reindex(types)
            x = np.arange(len(types)) + (i - (len(arms) - 1) / 2) * width
            ax.bar(x, rows[value], width, yerr=rows[f"{value}_std"].fillna(0), capsize=2, label=arm, **style(arm))
        ax.set_xticks(np.arange(len(types)), types, fontsize=SMALL)
        ax.axhline(0, color="k", linewidth=0.6)
        ax.set_title(dataset, fontsize=9)
    axes.flat[0].set_ylabel("quality" if value == "quality" else "quality - official (paired by seed)",
                            fontsize=SMALL)
    axes.flat[-1].legend(fontsize=SMALL, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def show_jpeg(fig: Figure, quality: int = 80) -> None:
    """Display a figure as JPEG and close it.

    Ultrasound speckle is noise, which PNG cannot compress: a grid of images is several
    times smaller as JPEG, which keeps executed notebooks small. Use it for image grids;
    keep PNG (the default) for line plots and text.
    """
    import io

    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", pil_kwargs={"quality": quality}, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buffer.getvalue(), format="jpeg"))
