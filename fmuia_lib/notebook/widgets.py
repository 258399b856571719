"""An ipywidgets explorer to browse predictions task by task, worst first.

The explorer needs a live kernel: in JupyterLab, VS Code or Colab it shows a task menu,
a slider over that task's images sorted by error, and the selected image with truth and
prediction overlaid. Static viewers (GitHub, nbviewer, the HTML export) cannot run
widgets, so :func:`show_explorer` also draws a static matplotlib overview of the worst
image of every task below it.

Inputs: ``records``, a DataFrame with one row per image and at least ``task_id`` and
``error`` (higher is worse, e.g. ``1 - DSC``, ``1 - IoU``, MRE in pixels, ``1 - p(true
class)``), and ``load_item(row) -> dict`` returning ``image`` plus ``truth``,
``prediction`` and ``title`` in the form :func:`fmuia_lib.notebook.viz.overlay` draws.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import matplotlib.pyplot as plt
import pandas as pd

from fmuia_lib.tasks import TaskSpec
from fmuia_lib.notebook.viz import MAX_WIDTH, _grid, overlay, show_jpeg

LoadItem = Callable[[pd.Series], Mapping[str, Any]]


def _sorted_rows(records: pd.DataFrame, task_id: str) -> pd.DataFrame:
    return records[records["task_id"] == task_id].sort_values("error", ascending=False, kind="stable")


def prediction_explorer(records: pd.DataFrame, tasks: Mapping[str, TaskSpec], load_item: LoadItem):
    """A widget: pick a task, slide through its images from worst to best."""
    import ipywidgets as w
    from IPython.display import display

    task_ids = [t for t in tasks if t in set(records["task_id"])]
    task_menu = w.Dropdown(options=task_ids, description="task")
    rank = w.IntSlider(min=1, max=1, value=1, description="rank", continuous_update=False)
    info = w.HTML()
    canvas = w.Output()

    def refresh(*_: Any) -> None:
        rows = _sorted_rows(records, task_menu.value)
        rank.max = max(1, len(rows))
        row = rows.iloc[min(rank.value, len(rows)) - 1]
        info.value = (f"<b>{task_menu.value}</b>: image {rank.value} of {len(rows)} by error; "
                      f"error {row['error']:.4g}<br><code>{row.get('image_path', '')}</code>")
        with canvas:
            canvas.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 5))
            item = load_item(row)
            overlay(ax, item["image"], tasks[task_menu.value], item.get("truth"), item.get("prediction"),
                    item.get("title"))
            display(fig)
            plt.close(fig)

    task_menu.observe(lambda change: (setattr(rank, "value", 1), refresh()), names="value")
    rank.observe(refresh, names="value")
    refresh()
    return w.VBox([w.HBox([task_menu, rank]), info, canvas])


def static_overview(records: pd.DataFrame, tasks: Mapping[str, TaskSpec], load_item: LoadItem,
                    ncols: int = 5):
    """The worst image of every task, overlays included (a plain matplotlib figure)."""
    task_ids = [t for t in tasks if t in set(records["task_id"])]
    fig, axes = _grid(len(task_ids), ncols, size=MAX_WIDTH / ncols)
    for ax, task_id in zip(axes.flat, task_ids):
        row = _sorted_rows(records, task_id).iloc[0]
        item = load_item(row)
        overlay(ax, item["image"], tasks[task_id], item.get("truth"), item.get("prediction"),
                f"{task_id}\nerror {row['error']:.3g}")
    fig.suptitle("Worst validation image of each task (green: truth, magenta: prediction)", fontsize=11)
    fig.tight_layout()
    return fig


def show_explorer(records: pd.DataFrame, tasks: Mapping[str, TaskSpec], load_item: LoadItem,
                  interactive: bool = True) -> None:
    """Display the widget (when ``interactive``) and the static overview below it."""
    from IPython.display import display

    if interactive:
        display(prediction_explorer(records, tasks, load_item))
        print("Static viewers cannot run the explorer above; the overview below is its static copy.")
    show_jpeg(static_overview(records, tasks, load_item))
