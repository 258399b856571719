"""Course mode (``fmuia course``, otter-grader): what the student gets, and the points grading gives.

The course is built once from the committed notebooks (otter's master notebooks). Every
notebook's teacher version must grade at full marks, its untouched student version at zero,
a planted wrong answer must lose exactly its exercise's points, and an answer handed to
fmuia_lib (or to a package doing the whole exercise) must score 0 for its exercise. Those checks run
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

from fmuia_lib import cli, course, publishing

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


def scores(course_dir: Path, stem: str, nb: nbformat.NotebookNode, tmp_path: Path,
           failed: dict | None = None) -> dict[str, tuple[float, float]]:
    """``{exercise: (points, possible)}`` from the autograder's test files, run on ``nb``;
    ``failed`` receives ``{exercise: [names of the failing tests]}``."""
    tests = tmp_path / f"{stem}-tests"
    with zipfile.ZipFile(course_dir / "autograder" / f"{stem}.zip") as archive:
        archive.extractall(tests)
    env = run_exercises(nb)
    result = {}
    for path in sorted((tests / "tests").glob("*.py")):
        test_file = ExceptionTestFile.from_file(str(path))
        test_file.run(env)
        result[test_file.name] = (float(test_file.score), float(test_file.possible))
        if failed is not None:
            failed[test_file.name] = [r.test_case.name for r in test_file.test_case_results if not r.passed]
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
    assert student.cells[1].source == publishing.setup_cell(NOTEBOOKS[2].name, extras="[course]")
    assert 'EXTRAS = "", ""' not in student.cells[1].source and 'EXTRAS = "' in student.cells[1].source
    assert _read(NOTEBOOKS[2]).cells[1].source == publishing.setup_cell(NOTEBOOKS[2].name)  # the teacher's


# -- grading ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", STEMS)
def test_the_teacher_version_grades_at_full_marks(course_dir, stem, tmp_path):
    got = scores(course_dir, stem, _read(course_dir / "solutions" / f"{stem}.ipynb"), tmp_path)
    assert got and all(points == possible > 0 for points, possible in got.values()), got


@pytest.mark.parametrize("stem", STEMS)
def test_the_untouched_student_version_grades_at_zero(course_dir, stem, tmp_path):
    got = scores(course_dir, stem, _read(course_dir / "student" / f"{stem}.ipynb"), tmp_path)
    assert got and all(points == 0 and possible > 0 for points, possible in got.values()), got


#: Wrong answers, at least one per notebook: (notebook, function it defines, exercise, source,
#: whether a public check already fails it).
WRONG = [
    ("01_dataset_exploration", "task_probabilities", "q01_task_probabilities", '''
def task_probabilities(counts, strategy, temperature, task_weights=None):
    n = np.array(list(counts.values()), dtype=float)
    w = {"uniform": np.ones_like(n), "proportional": n}.get(strategy, n ** temperature)  # T instead of 1/T
    w = w * np.array([task_weights[t] for t in counts]) if task_weights else w
    return dict(zip(counts, w / w.sum()))''', True),
    ("02_head_design", "features_for", "q02_routing", '''
def features_for(task, features, fpn_decoder):
    return features[-1]  # every head reads the deepest feature''', True),
    ("02_head_design", "features_for", "q02_routing", '''
def features_for(task, features, fpn_decoder):
    fpn_map = fpn_decoder(features)  # the FPN runs for every task
    return fpn_map if task.task_type in ("segmentation", "detection") else features[-1]''', True),
    ("02_head_design", "GridHead", "q02_grid_head", '''
class GridHead(nn.Module):
    def __init__(self, in_channels, mid_channels=128):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False), nn.BatchNorm2d(mid_channels), nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 3, padding=1, bias=False), nn.BatchNorm2d(mid_channels), nn.ReLU())
        self.out = nn.Conv2d(mid_channels, 5, 1)

    def forward(self, fpn_map):
        return torch.sigmoid(self.out(self.stem(fpn_map)))  # the objectness logit squashed too''', True),
    ("02_head_design", "GridHead", "q02_grid_head", '''
class GridHead(nn.Module):
    def __init__(self, in_channels, mid_channels=128):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1), nn.BatchNorm2d(mid_channels), nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 3, padding=1), nn.BatchNorm2d(mid_channels), nn.ReLU())
        self.out = nn.Conv2d(mid_channels, 5, 1)  # convolutions with a bias

    def forward(self, fpn_map):
        raw = self.out(self.stem(fpn_map))
        return torch.cat([torch.sigmoid(raw[:, :4]), raw[:, 4:]], dim=1)''', False),
    ("03_multitask_training", "objective", "q03_objective", '''
def objective(raw, probabilities, weights, task_types):
    return sum(weights[task_types[t]] * loss for t, loss in raw.items()) / len(raw)  # p_t left out''', True),
    ("03_multitask_training", "centre_target", "q03_centre_target", '''
def centre_target(box, height, width):
    x0, y0, x1, y1 = box.float().tolist()
    cx, cy = (x0 + x1) / 2 * width, (y0 + y1) / 2 * height
    col, row = min(max(math.floor(cx), 0), width - 1), min(max(math.floor(cy), 0), height - 1)
    sigma_x, sigma_y = max(0.5, (x1 - x0) * width / 6), max(0.5, (y1 - y0) * height / 6)  # 0.54 left out
    cols, rows = torch.arange(width)[None, :].float(), torch.arange(height)[:, None].float()
    heatmap = torch.exp(-(cols - col) ** 2 / (2 * sigma_x ** 2) - (rows - row) ** 2 / (2 * sigma_y ** 2))
    return heatmap, (row, col), torch.tensor([cx - col, cy - row]).clamp(0, 1)''', True),
    ("03_multitask_training", "train_step", "q03_train_step", '''
def train_step(model, criterion, optimizer, batch, max_norm=None):
    model.train()
    outputs = model(batch["image"], batch["task_id"])
    loss, raw = criterion(outputs, batch["target"], model.task(batch["task_id"]))
    loss.backward()  # the previous step's gradients are never cleared
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return raw.item()''', True),
    ("03_multitask_training", "train_step", "q03_train_step", '''
def train_step(model, criterion, optimizer, batch, max_norm=None):
    model.train()
    outputs = model(batch["image"], batch["task_id"])
    loss, raw = criterion(outputs, batch["target"], model.task(batch["task_id"]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()  # max_norm ignored
    return raw.item()''', False),
    ("04_error_analysis", "dice", "q04_dice", '''
def dice(pred, gt, num_classes):
    return np.ones(num_classes)''', True),
    ("04_error_analysis", "hausdorff", "q04_hausdorff", '''
def hausdorff(a, b):
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float(np.hypot(*a.shape))
    return float(distance_transform_edt(~b)[a].max())  # one direction only''', True),
    ("05_submission", "mre", "q05_mre", '''
def mre(pred, gt):
    return np.linalg.norm(pred - gt, axis=2).sum(axis=1)  # summed, not averaged''', True),
    ("05_submission", "iou", "q05_box_iou", '''
def iou(pred, gt):
    w = np.clip(np.minimum(pred[:, 2], gt[:, 2]) - np.maximum(pred[:, 0], gt[:, 0]), 0, None)
    h = np.clip(np.minimum(pred[:, 3], gt[:, 3]) - np.maximum(pred[:, 1], gt[:, 1]), 0, None)
    union = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1]) + (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    with np.errstate(invalid="ignore"):
        return w * h / (union - w * h)  # 0/0 for boxes of zero area''', False),
    ("06_experiments", "paired_difference", "q06_paired_difference", '''
def paired_difference(table, arm, reference, score):
    a, b = table[table["arm"] == arm][score], table[table["arm"] == reference][score]
    mean = float(a.mean() - b.mean())  # right mean, unpaired spread
    return {"mean": mean, "t": mean / float((a.var() / len(a) + b.var() / len(b)) ** 0.5)}''', None),
]

#: Answers that hand the exercise to fmuia_lib or to a package doing all of it, right in value:
#: (notebook, function, exercise, source). Each must score 0, failing its own-work test only.
DELEGATING = [
    ("06_experiments", "paired_difference", "q06_paired_difference", '''
def paired_difference(table, arm, reference, score):
    from scipy import stats
    wide = table.pivot(index="seed", columns="arm", values=score)
    result = stats.ttest_rel(wide[arm], wide[reference])
    return {"mean": float((wide[arm] - wide[reference]).mean()), "t": float(result.statistic)}'''),
    ("01_dataset_exploration", "task_probabilities", "q01_task_probabilities", '''
def task_probabilities(counts, strategy, temperature, task_weights=None):
    from fmuia_lib.data.sampler import TaskBatchSampler
    rows = np.cumsum([0, *counts.values()])
    indices = {t: list(range(rows[i], rows[i + 1])) for i, t in enumerate(counts)}
    sampler = TaskBatchSampler(indices, 1, strategy=strategy, temperature=temperature, task_weights=task_weights)
    return sampler.task_probabilities()'''),
    ("02_head_design", "features_for", "q02_routing", '''
def features_for(task, features, fpn_decoder):
    from types import SimpleNamespace
    from fmuia_lib.heads import reads_fpn
    spec = SimpleNamespace(task_type=task.task_type, is_dense=task.task_type in ("segmentation", "detection"))
    return fpn_decoder(features) if reads_fpn(spec) else features[-1]'''),
    ("02_head_design", "GridHead", "q02_grid_head", '''
from fmuia_lib.heads import GridDetectionHead
class GridHead(GridDetectionHead):
    pass'''),
    ("03_multitask_training", "centre_target", "q03_centre_target", '''
def centre_target(box, height, width):
    from fmuia_lib.losses import centre_heatmap
    heat, cell, offset = centre_heatmap(box[None], height, width)
    return heat[0], tuple(cell[0].tolist()), offset[0]'''),
    ("04_error_analysis", "dice", "q04_dice", '''
from fmuia_lib.challenge.metrics import dice_per_class as dice'''),
    ("04_error_analysis", "dice", "q04_dice", '''
def dice(pred, gt, num_classes):
    from sklearn.metrics import f1_score
    return f1_score(gt.ravel(), pred.ravel(), labels=list(range(num_classes)), average=None, zero_division=1.0)'''),
    ("04_error_analysis", "hausdorff", "q04_hausdorff", '''
def hausdorff(a, b):
    from fmuia_lib.challenge.metrics import hausdorff_pair
    return hausdorff_pair(a, b)'''),
    ("04_error_analysis", "hausdorff", "q04_hausdorff", '''
def hausdorff(a, b):
    from scipy.spatial.distance import directed_hausdorff
    if not a.any() or not b.any():
        return 0.0 if not a.any() and not b.any() else float(np.hypot(*a.shape))
    pa, pb = np.argwhere(a), np.argwhere(b)
    return float(max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0]))'''),
    ("05_submission", "iou", "q05_box_iou", '''
def iou(pred, gt):
    from fmuia_lib.challenge.metrics import box_iou
    return box_iou(pred, gt)'''),
    ("05_submission", "iou", "q05_box_iou", '''
def iou(pred, gt):
    import torch
    from torchvision.ops import box_iou
    return box_iou(torch.as_tensor(pred), torch.as_tensor(gt)).diagonal().numpy()'''),
    ("05_submission", "mre", "q05_mre", '''
def mre(pred, gt):
    from fmuia_lib.challenge.metrics import mean_radial_error
    return mean_radial_error(pred, gt)'''),
]


def plant(nb: nbformat.NotebookNode, name: str, source: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose answer defining ``name`` is replaced by ``source``."""
    nb = nbformat.from_dict(nb)
    (cell,) = [c for c in nb.cells[course.exercises_start(nb):] if c.cell_type == "code"
               and re.search(rf"^(def|class) {name}\b", c.source, re.M) and not c.source.startswith('"""')]
    cell.source = source.strip()
    return nb


@pytest.mark.parametrize("stem, name, exercise, source, public", WRONG,
                         ids=[f"{w[2]}-{i}" for i, w in enumerate(WRONG)])
def test_a_wrong_answer_loses_exactly_its_exercise_s_points(course_dir, stem, name, exercise, source, public,
                                                            tmp_path):
    """Among them the answers that passed the public checks before they gave real feedback:
    np.ones for Dice, features[-1] for routing, n ** T for the temperature sampler."""
    teacher = _read(course_dir / "solutions" / f"{stem}.ipynb")
    failed = {}
    got = scores(course_dir, stem, plant(teacher, name, source), tmp_path, failed)
    assert got[exercise][0] == 0 < got[exercise][1]
    assert all(points == possible for other, (points, possible) in got.items() if other != exercise), got
    if public is not None:  # the public test is the first of an exercise
        public_test = f"{exercise} - 1"
        assert (public_test in failed[exercise]) == public, failed[exercise]


@pytest.mark.parametrize("stem, name, exercise, source", DELEGATING,
                         ids=[f"{d[2]}-{i}" for i, d in enumerate(DELEGATING)])
def test_an_answer_that_delegates_to_a_library_scores_0(course_dir, stem, name, exercise, source, tmp_path):
    """Right in value on the public check, so the own-work test fails it (an edge case may
    too): the hidden tests never ask fmuia_lib for their expected values, and one watches
    what the answer calls."""
    teacher = _read(course_dir / "solutions" / f"{stem}.ipynb")
    failed = {}
    got = scores(course_dir, stem, plant(teacher, name, source), tmp_path, failed)
    assert got[exercise][0] == 0 < got[exercise][1]
    assert all(points == possible for other, (points, possible) in got.items() if other != exercise), got
    tests = [c.source for c in _read(ROOT / "notebooks" / f"{stem}.ipynb").cells
             if c.source.startswith('""" # BEGIN TEST CONFIG') and re.search(rf"^{re.escape(name)}\)?$|\({name}\)$",
                                                                          c.source.strip().splitlines()[-1])]
    (own,) = [i for i, t in enumerate(tests, 1) if "sys.setprofile(watch)" in t]
    assert f"{exercise} - 1" not in failed[exercise] and f"{exercise} - {own}" in failed[exercise], failed[exercise]


def _hidden_tests_by_exercise(nb: nbformat.NotebookNode) -> dict[str, list[str]]:
    found, current, in_tests = {}, None, False
    for i, marker, config in course._with_cells(nb):
        if marker == "BEGIN QUESTION":
            current = config["name"]
        elif marker in ("BEGIN TESTS", "END TESTS"):
            in_tests = marker == "BEGIN TESTS"
        elif marker is None and in_tests:
            source = nb.cells[i].source
            if re.search(r"^\s*hidden:\s*true\s*$", source.split("# END TEST CONFIG")[0], re.M):
                found.setdefault(current, []).append(source)
    return found


def test_every_exercise_has_an_own_work_test_and_no_test_asks_the_library():
    """The hidden tests compute their expected values without fmuia_lib, and one per exercise
    watches the answer's calls for fmuia_lib's."""
    for path in NOTEBOOKS:
        master = _read(path)
        hidden = _hidden_tests_by_exercise(master)
        assert set(hidden) == set(course.question_names(master)), path.stem
        for name, tests in hidden.items():
            assert any("sys.setprofile(watch)" in t and '"fmuia_lib"' in t for t in tests), name
            assert not any("fmuia_lib" in line and "import" in line for t in tests for line in t.splitlines()), name


def test_fmuia_course_grade_gives_points_per_exercise(course_dir, tmp_path, capsys):
    """The teacher's command: otter's local grading (no Docker) of a submitted notebook."""
    stem, name, exercise, source, _ = next(w for w in WRONG if w[2] == "q05_mre")  # a wrong MRE, a right IoU
    submission = tmp_path / "submitted.ipynb"
    nbformat.write(plant(_read(course_dir / "student" / f"{stem}.ipynb"), "iou",
                         next(c.source for c in _read(course_dir / "solutions" / f"{stem}.ipynb").cells
                              if c.source.startswith("def iou"))), str(submission))
    nbformat.write(plant(_read(submission), name, source), str(submission))
    assert cli.main(["course", "grade", str(submission), "--course", str(course_dir),
                     "--json", str(tmp_path / "points.json")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"q05_box_iou\s+2\.0\s+2\.0\s+3/3\s+graded", out), out
    assert re.search(r"q05_mre\s+0\.0\s+1\.0\s+0/2\s+graded", out), out
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


def test_grading_runs_each_submission_in_a_process_of_its_own_with_a_time_limit(course_dir, tmp_path, capsys):
    """A submission that never ends is killed (its kernel too) and scores 0, saying why; the
    other submissions of the same call are graded; the teacher is told that grading runs the
    students' code."""
    import os
    import time

    stem = "05_submission"
    solutions = _read(course_dir / "solutions" / f"{stem}.ipynb")
    right = plant(_read(course_dir / "student" / f"{stem}.ipynb"), "iou",
                  next(c.source for c in solutions.cells if c.source.startswith("def iou")))
    pid_file = tmp_path / "pid"
    looping = plant(right, "mre", f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                                  "def mre(pred, gt):\n    return 0\nwhile True:\n    pass")
    nbformat.write(looping, str(tmp_path / "looping.ipynb"))
    nbformat.write(right, str(tmp_path / "right.ipynb"))
    started = time.perf_counter()
    assert cli.main(["course", "grade", str(tmp_path / "looping.ipynb"), str(tmp_path / "right.ipynb"),
                     "--course", str(course_dir), "--timeout", "40", "--json", str(tmp_path / "points.json")]) == 0
    captured = capsys.readouterr()
    assert "grading runs the students' code" in captured.err and "40 s at most" in captured.err
    rows = json.loads((tmp_path / "points.json").read_text())
    by = {(Path(r["submission"]).stem, r["exercise"]): r for r in rows}
    assert by[("looping", "q05_box_iou")]["points"] == by[("looping", "q05_mre")]["points"] == 0.0
    assert by[("looping", "q05_mre")]["status"] == "timed out after 40 s"
    assert by[("right", "q05_box_iou")]["points"] == 2.0 and by[("right", "q05_box_iou")]["status"] == "graded"
    assert by[("right", "q05_mre")]["points"] == 0.0 and by[("right", "q05_mre")]["tests_passed"] == "0/2"
    assert "looping.ipynb:" in captured.out and "total 0 / 3" in captured.out and "total 2 / 3" in captured.out
    kernel = int(pid_file.read_text())
    assert kernel != os.getpid()
    time.sleep(1)
    with pytest.raises(ProcessLookupError):
        os.kill(kernel, 0)  # the student's kernel was killed with the grading process
    print(f"two submissions graded in {time.perf_counter() - started:.1f} s (one killed at 40 s)")


def test_container_grading_needs_docker(course_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(course.shutil, "which", lambda name: None)
    submission = course_dir / "student" / "05_submission.ipynb"
    assert cli.main(["course", "grade", str(submission), "--course", str(course_dir), "--docker"]) == 2
    assert "--docker: no `docker` command" in capsys.readouterr().err
    assert cli.main(["course", "grade", str(submission), "--course", str(course_dir), "--timeout", "0"]) == 2
    assert "--timeout 0" in capsys.readouterr().err


def test_container_grading_reads_otter_s_grades(course_dir, tmp_path, monkeypatch):
    """With Docker, otter grade runs the submissions (stood in for here: no Docker in the
    tests); its final_grades.csv becomes the same table."""
    import otter.grade

    monkeypatch.setattr(course.shutil, "which", lambda name: "/usr/bin/docker")
    calls = []

    def fake_main(*, name, paths, output_dir, autograder, timeout, no_network):
        calls.append((name, sorted(p.name for p in Path(paths[0]).iterdir()), timeout, no_network))
        files = sorted(Path(paths[0]).iterdir())
        table = [{"file": "points-per-question", "q05_box_iou": 2.0, "q05_mre": 1.0, "total_points_earned": 3.0,
                  "percent_correct": 1, "grading_status": "--"}]
        table += [{"file": f.name, "q05_box_iou": 2.0, "q05_mre": float(i), "total_points_earned": 2.0 + i,
                   "percent_correct": 0, "grading_status": "Completed"} for i, f in enumerate(files)]
        import pandas as pd

        pd.DataFrame(table).to_csv(Path(output_dir) / "final_grades.csv", index=False)

    monkeypatch.setattr(otter.grade, "main", fake_main)
    first, second = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    for path in (first, second):
        shutil.copy2(course_dir / "student" / "05_submission.ipynb", path)
    table = course.grade([first, second], course_dir, timeout=60, docker=True)
    assert calls == [("05_submission", ["0000_05_submission.ipynb", "0001_05_submission.ipynb"], 60, True)]
    assert table.groupby("submission")["points"].sum().to_dict() == {str(first): 2.0, str(second): 3.0}
    assert set(table["possible"]) == {1.0, 2.0} and set(table["status"]) == {"graded"}


def test_the_student_badge_opens_the_student_version_and_the_checks_say_what_to_upload(course_dir, tmp_path):
    student = _read(course_dir / "student" / "04_error_analysis.ipynb")
    assert course.student_badge("04_error_analysis.ipynb") in student.cells[0].source
    heading = student.cells[course.exercises_start(student)].source
    assert "tests.zip" in heading and "!unzip -o tests.zip" in heading and "Hand in this notebook" in heading
    with zipfile.ZipFile(course_dir / "student" / "tests.zip") as archive:
        handed_out = (course_dir / "student" / "tests").glob("*.py")
        assert sorted(archive.namelist()) == sorted(f"tests/{p.name}" for p in handed_out)
    published = "https://colab.research.google.com/github/teacher/course/blob/main/student"
    out = tmp_path / "c"
    course.build(out, notebooks=["04"], student_colab=published)
    student = _read(out / "student" / "04_error_analysis.ipynb")
    assert f"]({published}/04_error_analysis.ipynb)" in student.cells[0].source
    master = _read(ROOT / "notebooks" / "04_error_analysis.ipynb")
    leaked = nbformat.from_dict(student)
    leaked.cells[0].source = publishing.with_badge(leaked.cells[0].source, "04_error_analysis.ipynb",
                                                   setting="someone/fmuia")
    assert any("master notebook" in p for p in course.check_student_notebook(master, leaked))
    with pytest.raises(course.CourseError, match="--student-colab"):
        course.build(tmp_path / "d", notebooks=["04"], student_colab="github.com/teacher/course")


def test_a_built_course_is_marked_so_that_only_it_may_be_replaced(course_dir, tmp_path, capsys):
    """--overwrite replaces the course a build left (its marker), never a folder of other files."""
    from fmuia_lib.paths import replace_problem

    assert course.made_by_build(course_dir) and replace_problem(course_dir, course.BUILD_COMMAND) is None
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "thesis.txt").write_text("keep me")
    assert cli.main(["course", "build", "--out", str(tmp_path / "thesis"), "--overwrite"]) == 2
    assert "not made by fmuia course build" in capsys.readouterr().err
    assert (tmp_path / "thesis" / "thesis.txt").read_text() == "keep me"
