"""The challenge layout: writer, reader and the validator behind ``fmuia data check``."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fmuia_lib.data.layout import (LayoutError, Problem, check_main, read_root, rel_path, validate_root,
                                   write_task_csv)
from fmuia_lib.tasks import load_manifest

TASKS = ("breast_lesion", "organ_cls", "thyroid_nodule_det", "FUGC")


# -- helpers to break a valid root in one place ----------------------------------------------

def read_rows(root: Path, name: str) -> list[list[str]]:
    with (root / "csv_files" / name).open(newline="") as fh:
        return list(csv.reader(fh))


def write_rows(root: Path, name: str, rows: list[list[str]]) -> None:
    with (root / "csv_files" / name).open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def set_cell(root: Path, name: str, line: int, column: str, value: str) -> None:
    rows = read_rows(root, name)
    rows[line - 1][rows[0].index(column)] = value
    write_rows(root, name, rows)


def file_of(root: Path, name: str, line: int, column: str = "image_path") -> Path:
    rows = read_rows(root, name)
    return root / "csv_files" / rows[line - 1][rows[0].index(column)]


def drop_column(root: Path, name: str, column: str) -> None:
    rows = read_rows(root, name)
    j = rows[0].index(column)
    write_rows(root, name, [r[:j] + r[j + 1:] for r in rows])


def add_line(root: Path, name: str, copy_of_line: int) -> None:
    rows = read_rows(root, name)
    write_rows(root, name, rows + [rows[copy_of_line - 1]])


def rewrite_mask(root: Path, line: int, change) -> None:
    mask_file = file_of(root, "breast_lesion.csv", line, "mask_path")
    cv2.imwrite(str(mask_file), change(cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED)))


# case name -> (how to break the root, csv file, line, fragment of the expected message)
BAD_INPUTS = {
    "missing image": (lambda r: file_of(r, "organ_cls.csv", 3).unlink(), "organ_cls.csv", 3, "image file not found"),
    "unreadable image": (lambda r: file_of(r, "FUGC.csv", 2).write_bytes(b"not an image"),
                         "FUGC.csv", 2, "unreadable image"),
    "missing mask": (lambda r: file_of(r, "breast_lesion.csv", 4, "mask_path").unlink(),
                     "breast_lesion.csv", 4, "mask file not found"),
    "mask of another size": (lambda r: rewrite_mask(r, 2, lambda m: m[:-3]), "breast_lesion.csv", 2,
                             "but its image is"),
    "mask value too large": (lambda r: rewrite_mask(r, 3, lambda m: np.where(m > 0, 5, 0).astype(np.uint8)),
                             "breast_lesion.csv", 3, "mask has value 5 >= num_classes 2"),
    "colour mask": (lambda r: rewrite_mask(r, 2, lambda m: np.dstack([m, m, np.zeros_like(m)])),
                    "breast_lesion.csv", 2, "colour image (3 channels that differ)"),
    "16-bit mask value too large": (lambda r: rewrite_mask(r, 3, lambda m: (m.astype(np.uint16) * 300)),
                                    "breast_lesion.csv", 3, "mask has value 300 >= num_classes 2"),
    "label out of range": (lambda r: set_cell(r, "organ_cls.csv", 2, "mask", "6"), "organ_cls.csv", 2,
                           "label 6 is outside [0, 6)"),
    "label not integer": (lambda r: set_cell(r, "organ_cls.csv", 4, "mask", "1.5"), "organ_cls.csv", 4,
                          "label '1.5' is not an integer"),
    "degenerate box": (lambda r: set_cell(r, "thyroid_nodule_det.csv", 3, "x_max", "0.5"),
                       "thyroid_nodule_det.csv", 3, "degenerate box"),
    "box outside image": (lambda r: set_cell(r, "thyroid_nodule_det.csv", 2, "y_max", "999"),
                          "thyroid_nodule_det.csv", 2, "reaches outside"),
    "box not numeric": (lambda r: set_cell(r, "thyroid_nodule_det.csv", 2, "x_min", "left"),
                        "thyroid_nodule_det.csv", 2, "not four finite numbers"),
    "point outside image": (lambda r: set_cell(r, "FUGC.csv", 3, "point_2_xy", "[10, 500]"), "FUGC.csv", 3,
                            "point_2_xy [10.0, 500.0] lies outside"),
    "point malformed json": (lambda r: set_cell(r, "FUGC.csv", 4, "point_1_xy", "[10, 5"), "FUGC.csv", 4,
                             "is not JSON"),
    "point not a pair": (lambda r: set_cell(r, "FUGC.csv", 2, "point_1_xy", "[10]"), "FUGC.csv", 2,
                         "not a JSON [x, y] pair"),
    "annotation column missing": (lambda r: drop_column(r, "organ_cls.csv", "mask"), "organ_cls.csv", 1,
                                  "missing columns ['mask']"),
    "common column missing": (lambda r: drop_column(r, "FUGC.csv", "task_id"), "FUGC.csv", 1,
                              "missing columns ['task_id']"),
    "row with too few fields": (lambda r: (r / "csv_files" / "FUGC.csv").open("a").write("../x.png,FUGC\n"),
                                "FUGC.csv", 5, "2 fields but the header has 6"),
    "unknown task id": (lambda r: set_cell(r, "organ_cls.csv", 3, "task_id", "liver_cls"), "organ_cls.csv", 3,
                        "unknown task_id 'liver_cls'"),
    "task_name contradicts manifest": (lambda r: set_cell(r, "organ_cls.csv", 2, "task_name", "segmentation"),
                                       "organ_cls.csv", 2, "organ_cls is a classification task"),
    "num_classes contradicts manifest": (lambda r: set_cell(r, "FUGC.csv", 4, "num_classes", "3"), "FUGC.csv", 4,
                                         "FUGC has 2"),
    "duplicate row": (lambda r: add_line(r, "organ_cls.csv", 3), "organ_cls.csv", 5,
                      "duplicate row: same task and image as organ_cls.csv:3"),
    "path above the root": (lambda r: set_cell(r, "FUGC.csv", 2, "image_path", "../../elsewhere/x.png"),
                            "FUGC.csv", 2, "escapes the data root"),
    "absolute path": (lambda r: set_cell(r, "breast_lesion.csv", 3, "mask_path", "/etc/passwd"),
                      "breast_lesion.csv", 3, "escapes the data root"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_validator_names_file_line_and_problem(case, make_root, tmp_path, capsys):
    root = make_root(tmp_path, tasks=TASKS, n=3)
    break_root, csv_name, line, fragment = BAD_INPUTS[case]
    break_root(root)
    problems = validate_root(root)
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert (problem.csv_file, problem.line) == (f"csv_files/{csv_name}", line)
    assert fragment in problem.message
    assert str(problem).startswith(f"csv_files/{csv_name}:{line}: ")
    assert check_main(argparse.Namespace(root=str(root), manifest=None, max_problems=200)) == 1
    assert str(problem) in capsys.readouterr().out


def test_a_truncated_png_is_found_by_default_and_not_with_header_only(make_root, tmp_path, capsys):
    root = make_root(tmp_path, tasks=["organ_cls"], n=2)
    image_file = file_of(root, "organ_cls.csv", 2)
    image_file.write_bytes(image_file.read_bytes()[:200])  # the header survives, the pixels do not
    problems = validate_root(root)
    assert [(p.line, p.path) for p in problems] == [(2, "../Classification/organ_cls/imgs/organ_cls_000.png")]
    assert "truncated PNG" in problems[0].message
    assert check_main(argparse.Namespace(root=str(root), manifest=None, max_problems=200)) == 1
    assert str(problems[0]) in capsys.readouterr().out
    assert validate_root(root, header_only=True) == []  # the opt-out reads headers only
    args = argparse.Namespace(root=str(root), manifest=None, max_problems=200, header_only=True)
    assert check_main(args) == 0 and "--header-only" in capsys.readouterr().out


def test_every_problem_is_reported_not_just_the_first(make_root, tmp_path):
    root = make_root(tmp_path, tasks=TASKS, n=3)
    file_of(root, "organ_cls.csv", 2).unlink()
    file_of(root, "organ_cls.csv", 3).unlink()
    set_cell(root, "FUGC.csv", 4, "point_1_xy", "oops")
    rewrite_mask(root, 2, lambda m: np.full_like(m, 7))
    found = {(p.csv_file, p.line) for p in validate_root(root)}
    assert found == {("csv_files/organ_cls.csv", 2), ("csv_files/organ_cls.csv", 3),
                     ("csv_files/FUGC.csv", 4), ("csv_files/breast_lesion.csv", 2)}


def test_missing_csv_folder_is_a_problem(tmp_path):
    problems = validate_root(tmp_path)
    assert len(problems) == 1 and "no csv_files/ folder" in problems[0].message


def test_problem_string_format():
    p = Problem("csv_files/breast_lesion.csv", 12, "../Segmentation/Two/breast_lesion/masks/x.png",
                "mask has value 3 >= num_classes 2")
    assert str(p) == ("csv_files/breast_lesion.csv:12: ../Segmentation/Two/breast_lesion/masks/x.png: "
                      "mask has value 3 >= num_classes 2")
    assert str(Problem("csv_files/a.csv", None, None, "cannot read")) == "csv_files/a.csv: cannot read"


def test_check_main_summary_on_valid_root(data_root, capsys):
    assert check_main(argparse.Namespace(root=str(data_root), manifest=None, max_problems=200)) == 0
    out = capsys.readouterr().out
    assert "OK, 48 rows, 8 tasks" in out
    assert "classification  organ_cls" in out and "total Regression" in out


def test_read_root_on_valid_root(data_root):
    frame = read_root(data_root)
    assert len(frame) == 48 and frame["task_id"].value_counts().eq(6).all()
    assert frame["source"].str.fullmatch(r"[\w]+\.csv:\d+").all()
    assert (frame["csv_line"] >= 2).all() and frame["image_path"].str.startswith("../").all()
    assert all(Path(f).is_file() for f in frame["image_file"])
    by_type = {t: g for t, g in frame.groupby("task_name")}
    assert by_type["segmentation"]["mask_file"].map(lambda f: Path(f).is_file()).all()
    assert by_type["classification"]["mask_file"].isna().all()
    assert all(isinstance(t, int) for t in by_type["classification"]["target"])
    assert all(len(t) == 4 and t[0] < t[2] for t in by_type["detection"]["target"])
    iugc = frame[frame["task_id"] == "IUGC"]
    assert all(np.shape(t) == (3, 2) for t in iugc["target"])
    assert iugc["point_3_xy"].map(json.loads).tolist() == [list(map(float, t[2])) for t in iugc["target"]]


def test_read_root_raises_on_bad_rows_without_opening_files(make_root, tmp_path):
    root = make_root(tmp_path, tasks=["organ_cls"], n=3)
    file_of(root, "organ_cls.csv", 2).unlink()  # a file problem: read_root does not look
    assert len(read_root(root)) == 3
    set_cell(root, "organ_cls.csv", 3, "mask", "x")
    with pytest.raises(LayoutError, match=r"csv_files/organ_cls.csv:3: .*label 'x' is not an integer"):
        read_root(root)


def test_rows_of_several_tasks_in_one_csv(make_root, tmp_path):
    """A root may hold any number of CSVs, each with rows of any tasks."""
    root = make_root(tmp_path, tasks=["organ_cls", "FUGC"], n=2)
    cls, fugc = read_rows(root, "organ_cls.csv"), read_rows(root, "FUGC.csv")
    header = fugc[0][:4] + ["mask"] + fugc[0][4:]
    merged = [header] + [r + ["", ""] for r in cls[1:]] + [r[:4] + [""] + r[4:] for r in fugc[1:]]
    for name in ("organ_cls.csv", "FUGC.csv"):
        (root / "csv_files" / name).unlink()
    write_rows(root, "all.csv", merged)
    assert validate_root(root) == []
    frame = read_root(root)
    assert frame["source"].tolist() == ["all.csv:2", "all.csv:3", "all.csv:4", "all.csv:5"]
    assert frame["target"].tolist()[:2] == [0, 1]


def test_writer_round_trip_and_refusals(tmp_path):
    tasks = load_manifest()
    root = tmp_path / "root"
    records = [{"image_path": rel_path(root, root / "Regression/IUGC/images/b.png"),
                "points": [[1, 2], [3.5, 4], [5, 6]]},
               {"image_path": "../Regression/IUGC/images/a.png", "points": [[0, 0], [1, 1], [2, 2]]}]
    out = write_task_csv(root, tasks["IUGC"], records)
    assert out == root / "csv_files" / "IUGC.csv"
    lines = out.read_text().splitlines()
    assert lines[0] == "image_path,task_id,task_name,num_classes,point_1_xy,point_2_xy,point_3_xy"
    assert lines[1].startswith("../Regression/IUGC/images/a.png,IUGC,Regression,3,")  # sorted
    assert '"[1.0, 2.0]","[3.5, 4.0]"' in lines[2]
    with pytest.raises(LayoutError, match="not inside the data root"):
        rel_path(root, tmp_path / "elsewhere.png")
    with pytest.raises(LayoutError, match="inside the data root"):
        write_task_csv(root, tasks["organ_cls"], [{"image_path": "../../x.png", "mask": 1}])
    with pytest.raises(LayoutError, match=r"label 9 is outside \[0, 6\)"):
        write_task_csv(root, tasks["organ_cls"], [{"image_path": "../x.png", "mask": 9}])
    with pytest.raises(LayoutError, match="degenerate box"):
        write_task_csv(root, tasks["thyroid_nodule_det"], [{"image_path": "../x.png", "x_min": 5, "y_min": 1,
                                                             "x_max": 5, "y_max": 3}])
    with pytest.raises(LayoutError, match="needs 3 points"):
        write_task_csv(root, tasks["IUGC"], [{"image_path": "../x.png", "points": [[1, 2]]}])
    with pytest.raises(LayoutError, match="missing key 'y_max'"):
        write_task_csv(root, tasks["thyroid_nodule_det"], [{"image_path": "../x.png", "x_min": 1, "y_min": 1,
                                                             "x_max": 2}])
