"""Notebook 01's measurements: classes per task and image sizes, compared across data sources."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmuia_lib.notebook import exploration as ex
from fmuia_lib.data.layout import read_root
from fmuia_lib.tasks import load_manifest

TASKS = load_manifest()


def test_class_counts_of_labels_and_of_masks(make_root, tmp_path):
    root = make_root(tmp_path, tasks=("cardiac_multi", "organ_cls", "FUGC"), n=6)
    frame = read_root(root)
    # empty one mask: that image counts as an empty mask and for no class
    empty = frame.loc[frame["task_id"] == "cardiac_multi", "mask_file"].iloc[0]
    import cv2

    cv2.imwrite(empty, np.zeros_like(cv2.imread(empty, cv2.IMREAD_GRAYSCALE)))
    counts = ex.class_counts({"a": frame}, TASKS)
    assert set(counts["task_id"]) == {"cardiac_multi", "organ_cls"}  # landmarks have no classes
    organ = counts[counts["task_id"] == "organ_cls"].set_index("class_name")
    assert organ["images"].tolist() == [1] * 6 and organ["share"].sum() == pytest.approx(1)  # labels 0..5 once each
    seg = counts[counts["task_id"] == "cardiac_multi"].set_index("class_name")
    assert seg.loc[ex.EMPTY, "images"] == 1 and seg.loc["left_ventricle", "images"] == 5
    assert "background" not in seg.index


def _counts(rows):
    return pd.DataFrame(rows, columns=["data", "task_id", "task_type", "class_name", "images", "share"])


def test_balance_findings_compare_sources_by_their_numbers():
    counts = _counts([
        ("phantom", "breast_2cls", "classification", "benign", 62, 62 / 96),
        ("phantom", "breast_2cls", "classification", "malignant", 34, 34 / 96),
        ("real", "breast_2cls", "classification", "benign", 11, 11 / 21),
        ("real", "breast_2cls", "classification", "malignant", 10, 10 / 21),
        ("phantom", "breast_lesion", "segmentation", "lesion", 96, 1.0),
        ("phantom", "breast_lesion", "segmentation", ex.EMPTY, 0, 0.0),
        ("real", "breast_lesion", "segmentation", "lesion", 21, 21 / 32),
        ("real", "breast_lesion", "segmentation", ex.EMPTY, 11, 11 / 32)])
    lines = ex.balance_findings(counts)
    assert lines[0] == ("breast_2cls: phantom: benign 65% of 96 images, malignant 35% (ratio 1.8:1); "
                        "real: benign 52% of 21 images, malignant 48% (ratio 1.1:1).")
    assert lines[1] == ("breast_lesion: phantom: empty masks 0%; lesion in 100% of 96 images; "
                        "real: empty masks 34%; lesion in 66% of 32 images.")
    assert lines[2] == ("Classes are more imbalanced in phantom for 1 task(s) (breast_2cls) and in real for 0 "
                        "(none); segmentation tasks with empty masks: phantom none, real breast_lesion.")
    assert len(ex.balance_findings(counts[counts["data"] == "real"])) == 2  # one source: no comparison


def test_sizes_table_and_findings():
    sizes = pd.DataFrame({"data": ["a", "a", "b", "b", "b"], "task_id": ["x", "x", "y", "y", "y"],
                          "task_type": "segmentation", "height": [300, 300, 100, 540, 540],
                          "width": [400, 400, 100, 800, 800]})
    table = ex.size_table(sizes)
    assert table.loc[("a", "x"), "distinct_sizes"] == 1 and table.loc[("b", "y"), "distinct_sizes"] == 2
    assert table.loc[("b", "y"), "width_median"] == 800
    lines = ex.size_findings(sizes)
    assert lines[0] == ("a: 2 images, widths 400-400 px, heights 300-300 px, aspect ratios 1.33-1.33; "
                        "the largest image has 1.0x the pixels of the smallest.")
    assert lines[1].endswith("aspect ratios 1.00-1.48; the largest image has 43.2x the pixels of the smallest.")
