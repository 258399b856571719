"""The read/write rules of every command (fmuia_lib.paths); the commands' cases are rows of
tests/test_bad_input.py."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fmuia_lib.paths import (MARKER, OutputError, atomic_write, contained_path, data_root_around, data_root_below,
                             made_by, not_regular_problem, output_problem, replace_problem, write_marker)


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "root" / "csv_files").mkdir(parents=True)
    (tmp_path / "holder" / "a" / "root2" / "csv_files").mkdir(parents=True)
    (tmp_path / "plain").mkdir()
    return tmp_path


def test_the_output_rule_never_into_around_or_over_a_data_root_or_an_input(tree):
    assert output_problem(tree / "plain") is None
    assert output_problem(tree / "new" / "deeper") is None
    assert "is the data root" in output_problem(tree / "root")
    assert "lies inside the data root" in output_problem(tree / "root" / "x" / "y")
    assert "contains the data root" in output_problem(tree / "holder")
    assert "lies inside the data root" in output_problem(tree / "plain" / ".." / "root" / "sub")
    (tree / "plain" / "report.json").write_text("{}")
    assert "is a file" in output_problem(tree / "plain" / "report.json")
    assert output_problem(tree / "plain" / "report.json", file=True) is None
    assert "is a folder" in output_problem(tree / "plain", file=True)
    inputs = [(tree / "plain", "the submission folder")]
    assert "lies inside the submission folder" in output_problem(tree / "plain" / "r.json", file=True, inputs=inputs)
    assert "is the submission folder" in output_problem(tree / "plain", inputs=inputs)
    assert output_problem(tree / "other.json", file=True, inputs=inputs) is None
    (tree / "link").symlink_to(tree / "root", target_is_directory=True)
    assert "is the data root" in output_problem(tree / "link")


def test_data_roots_around_and_below(tree):
    assert data_root_around(tree / "root" / "a" / "b") == (tree / "root").resolve()
    assert data_root_around(tree / "plain") is None
    assert data_root_below(tree / "holder") == tree / "holder" / "a" / "root2"
    assert data_root_below(tree / "plain") is None
    assert data_root_below(tree / "root") is None  # itself excluded


def test_replacing_only_what_the_command_made(tree):
    folder = tree / "made"
    assert replace_problem(folder, "fmuia x") is None  # absent
    folder.mkdir()
    assert replace_problem(folder, "fmuia x") is None  # empty
    (folder / "thesis.txt").write_text("mine")
    assert "not made by fmuia x" in replace_problem(folder, "fmuia x")
    write_marker(folder, "fmuia y")
    assert not made_by(folder, "fmuia x") and "not made by" in replace_problem(folder, "fmuia x")
    write_marker(folder, "fmuia x")
    assert made_by(folder, "fmuia x") and replace_problem(folder, "fmuia x") is None
    (tree / "file").write_text("x")
    assert "is a file" in replace_problem(tree / "file", "fmuia x")
    linked = tree / "linked"
    linked.mkdir()
    (linked / MARKER).symlink_to(folder / MARKER)
    assert not made_by(linked, "fmuia x")  # a marker must be the folder's own file


def test_atomic_write_is_whole_or_nothing(tree, monkeypatch):
    target = tree / "plain" / "a.json"
    atomic_write(target, "[1]")
    assert target.read_text() == "[1]" and oct(target.stat().st_mode & 0o777) != oct(0o600)

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _Failing(fd))
    with pytest.raises(OutputError, match="cannot write .*a.json: No space left on device"):
        atomic_write(target, "[2]")
    assert target.read_text() == "[1]"  # the old file stands
    assert sorted(p.name for p in (tree / "plain").iterdir()) == ["a.json"]  # no temporary left


class _Failing:
    def __init__(self, fd):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def write(self, data):
        raise OSError(28, "No space left on device")


def test_only_regular_files_are_read(tree):
    fifo = tree / "pipe"
    os.mkfifo(fifo)
    assert "named pipe" in not_regular_problem(fifo)
    assert "folder" in not_regular_problem(tree / "plain")
    (tree / "f").write_text("x")
    assert not_regular_problem(tree / "f") is None
    assert not_regular_problem(tree / "missing") is None  # the caller names a missing file


def test_containment_of_reads(tree):
    assert contained_path("../imgs/a.png", "csv_files") == "imgs/a.png"
    assert contained_path("../../x.png", "csv_files") is None
    assert contained_path("/etc/passwd") is None
    (tree / "root" / "out").symlink_to(tree / "plain", target_is_directory=True)
    assert contained_path("out/x.png", root=tree / "root") is None


def test_non_finite_model_outputs_are_refused_for_every_task_type():
    from fmuia_lib.challenge.predict import records_from_outputs
    from fmuia_lib.challenge.submission import SubmissionError
    from fmuia_lib.tasks import load_manifest

    tasks = load_manifest()
    batch = {"orig_size": torch.tensor([[40, 50], [40, 50]]), "image_path": ["../a.png", "../b.png"],
             "mask_path": [None, None]}
    nan = float("nan")
    outputs = {"thyroid_nodule_det": {"boxes": torch.tensor([[0.1, 0.1, 0.5, 0.5], [nan, nan, nan, nan]])},
               "organ_cls": {"probs": torch.tensor([[0.5, 0.5, 0, 0], [nan, 0, 0, 0]])},
               "IUGC": {"points": torch.full((2, tasks["IUGC"].num_classes, 2), float("inf"))},
               "cardiac_multi": {"probs": torch.full((2, 4, 8, 8), nan)}}
    for task_id, output in outputs.items():
        with pytest.raises(SubmissionError, match="NaN or infinite"):
            records_from_outputs(tasks[task_id], batch, output)
    finite = {"boxes": torch.tensor(np.array([[0.1, 0.1, 0.5, 0.5]] * 2), dtype=torch.float32)}
    assert len(records_from_outputs(tasks["thyroid_nodule_det"], batch, finite)) == 2
