"""Plots: calibration numbers, and figure sizes that stay legible at the notebooks' 100 dpi."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from fmuia_lib.notebook import viz  # noqa: E402
from fmuia_lib.tasks import load_manifest  # noqa: E402

TASKS = load_manifest()


def test_expected_calibration_error_by_hand():
    # top-class confidences 0.95, 0.95 (both right) and 0.55, 0.55 (one right):
    # bins [0.9, 1.0): accuracy 1, confidence 0.95; [0.5, 0.6): accuracy 0.5, confidence 0.55
    probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.55, 0.45], [0.45, 0.55]])
    y_true = np.array([0, 1, 0, 0])
    assert viz.expected_calibration_error(y_true, probs) == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)
    perfect = np.eye(3)[[0, 1, 2, 1]]
    assert viz.expected_calibration_error([0, 1, 2, 1], perfect) == pytest.approx(0.0)
    wrong = np.eye(3)[[1, 2, 0, 0]]
    assert viz.expected_calibration_error([0, 1, 2, 1], wrong) == pytest.approx(1.0)
    # a confidence on a bin edge (0.5 of a two-class tie) lands where sklearn puts it
    tie = np.full((4, 2), 0.5)
    assert viz.expected_calibration_error([0, 0, 1, 1], tie, n_bins=2) == pytest.approx(0.0)


def _classification_rows(task_id: str, n: int = 24, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    k = TASKS[task_id].num_classes
    true = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    return pd.DataFrame({"task_id": task_id, "true": true, "predicted": probs.argmax(1), "probs": list(probs)})


def _text_sizes(fig) -> list[float]:
    return [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip()]


@pytest.mark.parametrize("kind", ["confusion", "roc"])
def test_classification_panels_fit_the_page_and_keep_8_class_labels_legible(kind):
    rows = pd.concat([_classification_rows(t, seed=i) for i, t in
                      enumerate(["fetal_head_pos_cls", "breast_2cls", "organ_cls", "fetal_sacral_pos_cls"])])
    fig = viz.classification_panels(rows, TASKS, kind)
    width, _ = fig.get_size_inches()
    assert width <= viz.MAX_WIDTH
    assert min(_text_sizes(fig)) >= viz.SMALL
    if kind == "confusion":  # an 8-class panel is at least 3 inches: 8 names at 8 pt fit
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == list(TASKS["fetal_head_pos_cls"].class_names)
        assert ax.get_position().width * width >= 2.0
    plt.close(fig)
    with pytest.raises(ValueError, match="kind"):
        viz.classification_panels(rows, TASKS, "pie")


def test_reliability_and_landmark_and_gallery_figures_are_legible():
    rows = pd.concat([_classification_rows("breast_2cls"), _classification_rows("organ_cls", seed=1)])
    fig = viz.plot_reliability(rows)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["breast_2cls", "organ_cls"]  # a panel each
    assert fig.axes[0].get_title().split("\n")[1].startswith("ECE ")
    assert min(_text_sizes(fig)) >= viz.SMALL and fig.get_size_inches()[0] <= viz.MAX_WIDTH
    plt.close(fig)

    size = (300, 400)
    truth = [np.array([[100.0, 150.0], [300.0, 150.0]]) + i for i in range(5)]
    reg = pd.DataFrame({"task_id": "FUGC", "size": [size] * 5, "truth": truth, "prediction": truth})
    fig = viz.plot_landmark_positions(reg, TASKS)
    assert min(_text_sizes(fig)) >= viz.SMALL
    plt.close(fig)

    image = np.zeros((40, 60), np.uint8)
    items = [{"task_id": "IUGC", "image": image, "truth": np.array([[5.0, 5], [9, 9], [20, 20]]),
              "prediction": np.array([[6.0, 5], [9, 12], [22, 20]]), "title": "IUGC"}] * 7
    fig = viz.gallery(items, TASKS, ncols=6, size=2.4)  # 6 x 2.4 in would be too wide: 4 columns
    assert fig.get_size_inches()[0] <= viz.MAX_WIDTH and min(_text_sizes(fig)) >= viz.SMALL
    plt.close(fig)


#: The least space between two tick labels, in pixels at the figure's dpi.
GAP_PX = 4


def _overlapping_tick_labels(fig) -> list[tuple[str, str]]:
    fig.canvas.draw()
    pairs = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t for t in axis.get_ticklabels(minor=False) + axis.get_ticklabels(minor=True)
                      if t.get_visible() and t.get_text().strip()]
            boxes = [t.get_window_extent().expanded(1.0, 1.0).padded(GAP_PX / 2) for t in labels]
            pairs += [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes))
                      for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    return pairs


@pytest.mark.parametrize("low, high", [(0.013, 0.15), (0.02, 0.05), (0.001, 0.4)])
def test_log_axes_label_their_ticks_without_collisions(low, high):
    """A log axis over less than a decade gets labels on its minor ticks from matplotlib,
    which overprint each other (notebooks 01 and 04 had them)."""
    rng = np.random.default_rng(0)
    areas = np.exp(rng.uniform(np.log(low), np.log(high), 30))
    det = pd.DataFrame({"task_id": "thyroid_nodule_det", "box_area_fraction": areas, "IoU": rng.uniform(0, 1, 30)})
    fig = viz.plot_iou_vs_size(det)
    assert not _overlapping_tick_labels(fig)
    assert len([t for t in fig.axes[0].get_xticklabels() if t.get_text()]) >= 2
    plt.close(fig)
    sizes = pd.DataFrame({"width": areas * 14000, "height": areas * 14000, "task_type": "segmentation"})
    fig = viz.plot_image_sizes(sizes)
    assert not _overlapping_tick_labels(fig)
    plt.close(fig)
