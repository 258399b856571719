"""Course mode (``fmuia course``, otter-grader): what the student gets, and the points grading gives.

The course is built once from the committed notebooks (otter's master notebooks). Every
notebook's teacher version must grade at full marks, its untouched student version at zero,
and a planted wrong answer must lose exactly its exercise's points. Those checks run
otter's own test runner and scoring on the exercise section, in this process, with the
test files of the autograder ``fmuia course build`` wrote (hidden tests included); one
planted submission goes the whole way through ``fmuia course grade`` (otter's local
grading, a kernel of its own), which is what a teacher runs.
"""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest
from otter.test_files import ExceptionTestFile

from fmuia_lib import cli, course

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STEMS = [p.stem for p in NOTEBOOKS]


@pytest.fixture(scope="module")
def course_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("course") / "course"
    course.build(out)
    return out


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def run_exercises(nb: nbformat.NotebookNode) -> dict:
    """The namespace after running the exercise section's code cells, as grading runs them
    (otter's own init and check cells left out; a cell that raises is passed over, as
    otter's grading does)."""
    env: dict = {"__name__": "__main__"}
    for cell in nb.cells[course.exercises_start(nb):]:
        if cell.cell_type != "code" or cell.source.startswith("# Initialize Otter") or "grader.check(" in cell.source:
            continue
        try:
            exec(compile(cell.source, "<exercise cell>", "exec"), env)
        except Exception:  # noqa: BLE001 - an unanswered exercise may raise; grading goes on
            pass
    return env


def scores(course_dir: Path, stem: str, nb: nbformat.NotebookNode, tmp_path: Path) -> dict[str, tuple[float, float]]:
    """``{exercise: (points, possible)}`` from the autograder's test files, run on ``nb``."""
    tests = tmp_path / f"{stem}-tests"
    with zipfile.ZipFile(course_dir / "autograder" / f"{stem}.zip") as archive:
        archive.extractall(tests)
    env = run_exercises(nb)
    result = {}
    for path in sorted((tests / "tests").glob("*.py")):
        test_file = ExceptionTestFile.from_file(str(path))
        test_file.run(env)
        result[test_file.name] = (float(test_file.score), float(test_file.possible))
    return result


def _exercises(course_dir: Path) -> list[dict]:
    import pandas as pd

    return pd.read_csv(course_dir / "exercises.csv").to_dict("records")


# -- what the build writes ---------------------------------------------------------------------------
def test_build_writes_student_version_autograders_and_solutions(course_dir):
    assert sorted(p.stem for p in (course_dir / "student").glob("*.ipynb")) == STEMS
    assert sorted(p.stem for p in (course_dir / "autograder").glob("*.zip")) == STEMS
    assert sorted(p.stem for p in (course_dir / "solutions").glob("*.ipynb")) == STEMS
    exercises = _exercises(course_dir)
    assert {e["notebook"] for e in exercises} == set(STEMS), "at least one exercise per notebook"
    assert all(e["points"] > 0 and e["hidden_tests"] >= 1 and e["public_tests"] >= 1 for e in exercises)
    assert sorted(p.stem for p in (course_dir / "student" / "tests").glob("*.py")) == sorted(e["name"] for e in exercises)


def test_the_exercises_cover_the_recipe(course_dir):
    """The routing rule, a head, the composite loss, CenterNet targets, a training step and the
    challenge metrics each carry points."""
    names = {e["name"] for e in _exercises(course_dir)}
    for wanted in ("q02_routing", "q02_grid_head", "q03_objective", "q03_centre_target", "q03_train_step",
                   "q04_dice", "q04_hausdorff", "q05_box_iou", "q05_mre"):
        assert wanted in names


def test_the_build_refuses_a_non_empty_folder_and_the_notebooks_folder(course_dir, capsys):
    assert cli.main(["course", "build", "--out", str(course_dir), "--notebooks", "06"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli.main(["course", "build", "--out", str(ROOT / "notebooks")]) == 2
    assert "master notebooks" in capsys.readouterr().err


# -- the student version gives nothing away -------------------------------------------------------------
@pytest.mark.parametrize("stem", STEMS)
def test_the_student_version_leaks_no_answer(course_dir, stem):
    master = _read(ROOT / "notebooks" / f"{stem}.ipynb")
    student = _read(course_dir / "student" / f"{stem}.ipynb")
    public = [p.read_text() for p in (course_dir / "student" / "tests").glob("*.py")]
    assert course.check_student_notebook(master, student, public) == []
    text = json.dumps(student)
    assert "BEGIN SOLUTION" not in text and "BEGIN TESTS" not in text and "hidden: true" not in text
    for test in course.hidden_tests(master):
        name = re.search(r"def (test_\w+)", test).group(1)
        assert name not in text and not any(name in p for p in public), f"hidden test {name} was handed out"
    assert set(student.metadata) <= {"kernelspec", "language_info", "otter"}  # no widget state, no run record
    for cell in student.cells:
        assert not cell.get("outputs") and cell.get("execution_count") is None and not cell.get("attachments")


def test_the_leak_check_finds_planted_leaks(course_dir):
    master = _read(ROOT / "notebooks" / "05_submission.ipynb")
    clean = _read(course_dir / "student" / "05_submission.ipynb")
    answer = next(i for i, c in enumerate(clean.cells) if "otter_answer_cell" in c.metadata.get("tags", []))

    leaked = nbformat.from_dict(clean)
    leaked.cells[answer].source += "\n    return np.linalg.norm(pred - gt, axis=2).mean(axis=1)"
    assert any("solution line" in p for p in course.check_student_notebook(master, leaked))

    leaked = nbformat.from_dict(clean)
    leaked.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    leaked.cells[answer].outputs = [nbformat.v4.new_output("display_data", {"image/png": "iVBORw0KGgo="})]
    problems = course.check_student_notebook(master, leaked)
    assert any("widgets" in p for p in problems) and any("outputs" in p for p in problems)

    hidden = course.hidden_tests(master)[0]
    assert any("hidden test" in p for p in course.check_student_notebook(master, clean, [hidden]))


def test_the_student_version_grades_its_exercises_only(course_dir):
    """Cells above the exercises are ``otter_ignore`` (grading needs no data, no checkpoint);
    otter's init cell opens the exercises; on Colab the setup installs the course extra."""
    student = _read(course_dir / "student" / "03_multitask_training.ipynb")
    start = course.exercises_start(student)
    assert all(course.IGNORE_TAG in c.metadata.get("tags", []) for c in student.cells[:start] if c.cell_type == "code")
    assert student.cells[start + 1].source.startswith("# Initialize Otter")
    assert not any(course.IGNORE_TAG in c.metadata.get("tags", []) for c in student.cells[start:])
    assert course.COURSE_PACKAGE in student.cells[1].source
    assert course.PACKAGE in _read(NOTEBOOKS[2]).cells[1].source  # the teacher's setup is left as it is


# -- grading ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", STEMS)
def test_the_teacher_version_grades_at_full_marks(course_dir, stem, tmp_path):
    got = scores(course_dir, stem, _read(course_dir / "solutions" / f"{stem}.ipynb"), tmp_path)
    assert got and all(points == possible > 0 for points, possible in got.values()), got


@pytest.mark.parametrize("stem", STEMS)
def test_the_untouched_student_version_grades_at_zero(course_dir, stem, tmp_path):
    got = scores(course_dir, stem, _read(course_dir / "student" / f"{stem}.ipynb"), tmp_path)
    assert got and all(points == 0 and possible > 0 for points, possible in got.values()), got


#: A wrong answer for one exercise of each notebook: (notebook, function it defines, exercise, source).
WRONG = [
    ("01_dataset_exploration", "task_probabilities", "q01_task_probabilities", '''
def task_probabilities(counts, strategy, temperature):
    n = np.array(list(counts.values()), dtype=float)
    w = {"uniform": np.ones_like(n), "proportional": n}.get(strategy, n ** temperature)  # T instead of 1/T
    return dict(zip(counts, w / w.sum()))'''),
    ("02_head_design", "features_for", "q02_routing", '''
def features_for(task, features, fpn_decoder):
    fpn_map = fpn_decoder(features)  # the FPN runs for every task
    return fpn_map if task.task_type in ("segmentation", "detection") else features[-1]'''),
    ("02_head_design", "GridHead", "q02_grid_head", '''
class GridHead(nn.Module):
    def __init__(self, in_channels, mid_channels=128):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False), nn.BatchNorm2d(mid_channels), nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 3, padding=1, bias=False), nn.BatchNorm2d(mid_channels), nn.ReLU())
        self.out = nn.Conv2d(mid_channels, 5, 1)

    def forward(self, fpn_map):
        return torch.sigmoid(self.out(self.stem(fpn_map)))  # the objectness logit squashed too'''),
    ("03_multitask_training", "objective", "q03_objective", '''
def objective(raw, probabilities, weights, task_types):
    return sum(weights[task_types[t]] * loss for t, loss in raw.items()) / len(raw)  # p_t left out'''),
    ("03_multitask_training", "centre_target", "q03_centre_target", '''
def centre_target(box, height, width):
    from fmuia_lib.losses import centre_heatmap
    heat, cell, offset = centre_heatmap(box[None], height, width)
    return heat[0] ** 2, tuple(cell[0].tolist()), offset[0]  # a narrower Gaussian'''),
    ("03_multitask_training", "train_step", "q03_train_step", '''
def train_step(model, criterion, optimizer, batch):
    model.train()
    outputs = model(batch["image"], batch["task_id"])
    loss, raw = criterion(outputs, batch["target"], model.task(batch["task_id"]))
    loss.backward()  # the previous step's gradients are never cleared
    optimizer.step()
    return raw.item()'''),
    ("04_error_analysis", "hausdorff", "q04_hausdorff", '''
def hausdorff(a, b):
    from fmuia_lib.metrics import hausdorff_pair
    return hausdorff_pair(a, b, percentile=95)  # HD95 is another metric'''),
    ("05_submission", "mre", "q05_mre", '''
def mre(pred, gt):
    return np.linalg.norm(pred - gt, axis=2).sum(axis=1)  # summed, not averaged'''),
    ("06_experiments", "paired_difference", "q06_paired_difference", '''
def paired_difference(table, arm, reference, score):
    a, b = table[table["arm"] == arm][score], table[table["arm"] == reference][score]
    mean = float(a.mean() - b.mean())  # right mean, unpaired spread
    return {"mean": mean, "t": mean / float((a.var() / len(a) + b.var() / len(b)) ** 0.5)}'''),
]


def plant(nb: nbformat.NotebookNode, name: str, source: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose answer defining ``name`` is replaced by ``source``."""
    nb = nbformat.from_dict(nb)
    (cell,) = [c for c in nb.cells[course.exercises_start(nb):] if c.cell_type == "code"
               and re.search(rf"^(def|class) {name}\b", c.source, re.M)]
    cell.source = source.strip()
    return nb


@pytest.mark.parametrize("stem, name, exercise, source", WRONG, ids=[w[2] for w in WRONG])
def test_a_wrong_answer_loses_exactly_its_exercise_s_points(course_dir, stem, name, exercise, source, tmp_path):
    teacher = _read(course_dir / "solutions" / f"{stem}.ipynb")
    got = scores(course_dir, stem, plant(teacher, name, source), tmp_path)
    assert got[exercise][0] == 0 < got[exercise][1]
    assert all(points == possible for other, (points, possible) in got.items() if other != exercise), got


def test_fmuia_course_grade_gives_points_per_exercise(course_dir, tmp_path, capsys):
    """The teacher's command: otter's local grading (no Docker) of a submitted notebook."""
    stem, name, exercise, source = WRONG[-2]  # 05: a wrong mean radial error, a right IoU
    submission = tmp_path / "submitted.ipynb"
    nbformat.write(plant(_read(course_dir / "student" / f"{stem}.ipynb"), "iou",
                         next(c.source for c in _read(course_dir / "solutions" / f"{stem}.ipynb").cells
                              if c.source.startswith("def iou"))), str(submission))
    nbformat.write(plant(_read(submission), name, source), str(submission))
    assert cli.main(["course", "grade", str(submission), "--course", str(course_dir),
                     "--json", str(tmp_path / "points.json")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"q05_box_iou\s+2\.0\s+2\.0\s+3/3", out) and re.search(r"q05_mre\s+0\.0\s+1\.0\s+1/2", out), out
    assert "total 2 / 3" in out
    assert {r["exercise"]: r["points"] for r in json.loads((tmp_path / "points.json").read_text())} == \
        {"q05_box_iou": 2.0, "q05_mre": 0.0}


def test_a_student_s_check_cells_run_the_public_tests(course_dir, tmp_path):
    """In the student's kernel, next to the handed-out tests/ folder: a right answer passes its
    check, an unanswered one fails it and says why."""
    import papermill as pm

    stem = "05_submission"
    student = _read(course_dir / "student" / f"{stem}.ipynb")
    student.cells = student.cells[course.exercises_start(student):]  # the cells above need data and a checkpoint
    answer = next(c.source for c in _read(course_dir / "solutions" / f"{stem}.ipynb").cells
                  if c.source.startswith("def iou"))
    folder = tmp_path / "handed_out"
    shutil.copytree(course_dir / "student" / "tests", folder / "tests")
    nbformat.write(plant(student, "iou", answer), str(folder / f"{stem}.ipynb"))
    ran = pm.execute_notebook(str(folder / f"{stem}.ipynb"), str(folder / "ran.ipynb"), cwd=str(folder),
                              kernel_name="python3", progress_bar=False)
    checks = {re.search(r'grader.check\("(\w+)"\)', c.source).group(1): "".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in c.outputs)
        for c in ran.cells if c.cell_type == "code" and c.source.startswith("grader.check(")}
    assert "All test cases passed" in checks["q05_box_iou"], checks
    assert "failed" in checks["q05_mre"] and "expected [5.0]" in checks["q05_mre"], checks


def test_grading_bad_input_is_one_message_and_exit_2(course_dir, tmp_path, capsys):
    assert cli.main(["course", "grade", str(tmp_path / "missing.ipynb"), "--course", str(course_dir)]) == 2
    assert "missing.ipynb: no such notebook" in capsys.readouterr().err
    (tmp_path / "text.ipynb").write_text("not json")
    assert cli.main(["course", "grade", str(tmp_path / "text.ipynb"), "--course", str(course_dir)]) == 2
    assert "not a Jupyter notebook" in capsys.readouterr().err
    assert cli.main(["course", "grade", str(NOTEBOOKS[0]), "--course", str(course_dir)]) == 2
    assert "not a notebook of the course" in capsys.readouterr().err
    assert cli.main(["course", "grade", str(course_dir / "student" / f"{STEMS[0]}.ipynb"),
                     "--course", str(tmp_path)]) == 2
    assert "no autograder" in capsys.readouterr().err


def test_without_otter_the_course_commands_say_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(__import__("sys").modules, "otter", None)
    monkeypatch.setitem(__import__("sys").modules, "otter.assign", None)
    assert cli.main(["course", "build", "--out", str(tmp_path / "c"), "--notebooks", "06"]) == 2
    assert "pip install 'fmuia[course]'" in capsys.readouterr().err


def test_a_master_without_its_assignment_config_is_refused_and_nothing_is_written(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    nb = _read(NOTEBOOKS[-1])
    nb.cells = [c for c in nb.cells if not c.source.startswith("# ASSIGNMENT CONFIG")]
    nbformat.write(nb, str(source / NOTEBOOKS[-1].name))
    assert cli.main(["course", "build", "--out", str(tmp_path / "c"), "--source", str(source)]) == 2
    err = capsys.readouterr().err
    assert f"{source / NOTEBOOKS[-1].name}: expected one raw '# ASSIGNMENT CONFIG' cell, found 0" in err
    assert not (tmp_path / "c").exists(), "a failed build writes nothing"
