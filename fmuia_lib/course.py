"""Course mode: the notebook series as otter-grader assignments.

The committed notebooks are otter-grader's *master notebooks* (the Otter Assign format,
https://otter-grader.readthedocs.io/en/latest/otter_assign/). Each ends with an
``## Exercises`` section: a raw ``# ASSIGNMENT CONFIG`` cell, then one block per exercise
between raw ``# BEGIN QUESTION`` and ``# END QUESTION`` cells (its name and points), holding
the prompt, the solution (between ``# BEGIN SOLUTION`` / ``# END SOLUTION``) and its tests
(between ``# BEGIN TESTS`` / ``# END TESTS``; a test whose config says ``hidden: true`` is
for grading only). Run as they are (the suite, nbval), the notebooks execute the solutions
and every test after them, so a teacher notebook that runs is one whose answers pass.

:func:`build` runs Otter Assign on each notebook and writes, under ``OUT``:

* ``student/NN_name.ipynb``: the student version: solutions replaced by ``...``, hidden
  tests removed, no outputs, no widget state or other run metadata; the otter cells that
  check an answer against its public tests follow each exercise;
* ``student/tests/*.py``: the public tests (exercise names are unique in the series, so
  the six notebooks share the folder);
* ``autograder/NN_name.zip``: otter's autograder for the notebook, every test included;
* ``solutions/NN_name.ipynb``: the notebook as otter grades it, with its solutions;
* ``exercises.csv``: notebook, exercise, points, public and hidden tests.

Each student notebook is checked by :func:`check_student_notebook` before it is written:
a leak (a solution line, a hidden test, an output, run metadata) stops the build.

:func:`build` also writes ``student/tests.zip`` (the public tests, for a Colab session),
and gives each student notebook a Colab badge that opens the student version where the
teacher publishes it (``student_colab``), or, without it, a line saying to upload the
notebook; never the master, which holds the solutions and hidden tests.

The exercises grade the student's own code: the hidden tests compute their expected values
themselves (never with ``fmuia_lib``, which an answer could call to score), and one hidden
test of each exercise runs the answer while watching every function it calls
(``sys.setprofile``), failing an answer that calls ``fmuia_lib`` or a package that does the
whole exercise.

:func:`grade` grades submitted notebooks and returns the points of each exercise. Grading
RUNS THE STUDENTS' CODE. On this machine (otter's local grading, ``otter run``) each
submission is graded in a process of its own, killed with its process group after a time
limit (it then scores 0); with ``docker=True`` otter grades them in its Docker containers
(``otter grade``, no network), isolated from the teacher's machine. Grading executes a
notebook's exercise section only: every code cell before the ``## Exercises`` heading
carries otter's ``otter_ignore`` tag, in the student version and again on the submission
before it is graded, so grading costs seconds and needs no data or checkpoint. The
exercises are written to need nothing from the cells above them.

otter-grader is the optional dependency ``fmuia[course]``; it is imported only here, when a
course is built or graded.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import nbformat
import pandas as pd
import yaml

EXERCISES_HEADING = "## Exercises"
IGNORE_TAG = "otter_ignore"
#: The extra the student version's setup cell installs with fmuia (otter, for the checks).
COURSE_EXTRAS = "[course]"
#: What a student notebook may keep of the master's metadata.
NOTEBOOK_METADATA = {"kernelspec", "language_info", "otter"}
CELL_METADATA = {"tags", "editable", "deletable", "otter"}
CELL_TAGS = {"parameters", "otter_answer_cell", IGNORE_TAG}
_BEGIN_SOLUTION = re.compile(r"^\s*#\s*BEGIN\s+SOLUTION", re.IGNORECASE)
_END_SOLUTION = re.compile(r"^\s*#\s*END\s+SOLUTION", re.IGNORECASE)
_INIT_CELL = "# Initialize Otter"


#: What the student version adds to the exercises' heading: what a student needs for the checks.
CHECKING = ("\n\n**Checking your answers.** Each check cell runs the exercise's public tests, in the "
            "`tests/` folder handed out with this notebook, which must sit in the notebook's working "
            "folder: on Colab, upload `tests.zip` (Files pane, *Upload*) and run `!unzip -o tests.zip` in a "
            "new cell; in Jupyter, keep `tests/` beside the notebook. Hand in this notebook (`.ipynb`) "
            "with your answers.")
#: Seconds one submission may take to grade on this machine (``fmuia course grade --timeout``).
GRADE_TIMEOUT = 300.0


class CourseError(RuntimeError):
    """A course cannot be built or a submission graded; the message says which file and why."""


@dataclass(frozen=True)
class Exercise:
    """One autograded exercise: its notebook, name, points and how many tests of each kind."""

    notebook: str
    name: str
    points: float
    public_tests: int
    hidden_tests: int


# -- reading master notebooks --------------------------------------------------------------
def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """A notebook file, or a CourseError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CourseError(f"{path}: no such notebook")
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as exc:  # nbformat raises several kinds for a file that is not a notebook
        raise CourseError(f"{path}: not a Jupyter notebook ({type(exc).__name__}: {exc})") from None


def exercises_start(nb: nbformat.NotebookNode, name: str = "notebook") -> int:
    """Index of the ``## Exercises`` heading cell."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.startswith(EXERCISES_HEADING):
            return i
    raise CourseError(f"{name}: no markdown cell starting with {EXERCISES_HEADING!r}")


def otter_blocks(nb: nbformat.NotebookNode) -> list[tuple[int, str, dict[str, Any]]]:
    """``(cell index, marker, config)`` of every raw otter cell (``ASSIGNMENT CONFIG``,
    ``BEGIN QUESTION``, ``END TESTS``...); config is the YAML under the marker line."""
    blocks = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "raw":
            continue
        first, _, rest = cell.source.partition("\n")
        marker = re.sub(r"\s+", " ", first.lstrip("# ").strip()).upper()
        try:
            config = yaml.safe_load(rest) if rest.strip() else {}
        except yaml.YAMLError as exc:
            raise CourseError(f"cell {i} ({first.strip()}): not YAML under its first line: {exc}") from None
        if not isinstance(config, dict):
            raise CourseError(f"cell {i} ({first.strip()}): expected 'key: value' lines under its first line")
        blocks.append((i, marker, config))
    return blocks


def assignment_config(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """The YAML of the notebook's one raw ``# ASSIGNMENT CONFIG`` cell."""
    configs = [config for _, marker, config in otter_blocks(nb) if marker == "ASSIGNMENT CONFIG"]
    if len(configs) != 1:
        raise CourseError(f"expected one raw '# ASSIGNMENT CONFIG' cell, found {len(configs)}")
    return configs[0]


def question_names(nb: nbformat.NotebookNode) -> list[str]:
    """The exercises' names, in notebook order."""
    names = [config.get("name") for _, marker, config in otter_blocks(nb) if marker == "BEGIN QUESTION"]
    if not all(isinstance(name, str) and name for name in names):
        raise CourseError(f"a '# BEGIN QUESTION' cell has no name: {names}")
    return names


def solution_lines(nb: nbformat.NotebookNode) -> tuple[set[str], set[str]]:
    """``(solution, other)``: the stripped lines of every solution (between ``# BEGIN
    SOLUTION`` and ``# END SOLUTION`` comments, or ending in ``# SOLUTION``, in the cells of
    the solution blocks) and the stripped lines of everything else."""
    solution: set[str] = set()
    other: set[str] = set()
    in_block = False
    for i, marker, _ in _with_cells(nb):
        cell = nb.cells[i]
        if marker is not None:
            in_block = {"BEGIN SOLUTION": True, "END SOLUTION": False}.get(marker, in_block)
            continue
        inside = False
        for line in cell.source.splitlines():
            if in_block and cell.cell_type == "code" and _BEGIN_SOLUTION.match(line):
                inside = True
            elif inside and _END_SOLUTION.match(line):
                inside = False
            elif inside or (in_block and cell.cell_type == "code" and line.rstrip().endswith("# SOLUTION")):
                solution.add(line.strip())
            else:
                other.add(line.strip())
    return solution, other


def hidden_tests(nb: nbformat.NotebookNode) -> list[str]:
    """The source of every hidden test cell (its config docstring removed)."""
    tests, in_tests = [], False
    for i, marker, _ in _with_cells(nb):
        if marker is not None:
            in_tests = {"BEGIN TESTS": True, "END TESTS": False}.get(marker, in_tests)
            continue
        source = nb.cells[i].source
        if in_tests and re.search(r"^\s*hidden:\s*true\s*$", source.split("# END TEST CONFIG")[0], re.M | re.I):
            tests.append(source.split("# END TEST CONFIG", 1)[-1].strip())
    return tests


def _with_cells(nb: nbformat.NotebookNode) -> Iterator[tuple[int, str | None, dict[str, Any]]]:
    markers = {i: (marker, config) for i, marker, config in otter_blocks(nb)}
    for i in range(len(nb.cells)):
        marker, config = markers.get(i, (None, {}))
        yield i, marker, config


# -- the student version ---------------------------------------------------------------------
def student_badge(notebook: str, student_colab: str | None = None) -> str:
    """The student version's Colab line: a badge opening ``student_colab/notebook`` (where the
    teacher publishes the student notebooks), else a line saying to upload the notebook."""
    from fmuia_lib import publishing

    if student_colab:
        return f"[![Open In Colab]({publishing.BADGE_IMAGE})]({student_colab.rstrip('/')}/{notebook})"
    return ("**On Colab**: upload this notebook (*File > Upload notebook* at "
            "[colab.research.google.com](https://colab.research.google.com)).")


def student_notebook(nb: nbformat.NotebookNode, student_colab: str | None = None) -> nbformat.NotebookNode:
    """Otter's student notebook made fit to hand out (a copy).

    Keeps only kernel, language and otter metadata (no papermill record, no widget state);
    keeps only the cell tags a student needs; moves otter's init cell from the top of the
    notebook to the exercises (the series opens the same way in every version); tags the
    cells before the exercises ``otter_ignore`` (grading runs the exercises only); makes
    the Colab setup install the ``course`` extra, which brings otter for the checks
    (``fmuia_lib.publishing`` writes that cell); makes its Colab badge open the student
    version (:func:`student_badge`) and tells, under the exercises' heading, what the checks
    need (:data:`CHECKING`).
    """
    from fmuia_lib import publishing

    name = f"{nb.metadata.get('otter', {}).get('assignment_name') or ''}.ipynb"
    nb = nbformat.from_dict(nb)
    nb.metadata = nbformat.from_dict({k: v for k, v in nb.metadata.items() if k in NOTEBOOK_METADATA})
    init = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(_INIT_CELL)]
    nb.cells = [c for c in nb.cells if not any(c is i for i in init)]
    start = exercises_start(nb)
    nb.cells[start + 1:start + 1] = init
    if nb.cells[0].cell_type == "markdown":
        nb.cells[0].source = publishing.with_badge(nb.cells[0].source, name, line=student_badge(name, student_colab))
    nb.cells[start].source = nb.cells[start].source.rstrip("\n") + CHECKING
    for i, cell in enumerate(nb.cells):
        cell.metadata = nbformat.from_dict({k: v for k, v in cell.metadata.items() if k in CELL_METADATA})
        tags = [t for t in cell.metadata.get("tags", []) if t in CELL_TAGS]
        if i < start and cell.cell_type == "code" and IGNORE_TAG not in tags:
            tags.append(IGNORE_TAG)
        cell.metadata["tags"] = tags  # papermill's parameterize_notebook reads every cell's tags
        cell.pop("attachments", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if cell.source == publishing.setup_cell(name):
                cell.source = publishing.setup_cell(name, extras=COURSE_EXTRAS)
    return nb


def graded_copy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of a submission whose cells before the exercises are tagged ``otter_ignore``."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells[:exercises_start(nb, "submission")]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if cell.cell_type == "code" and IGNORE_TAG not in tags:
            tags.append(IGNORE_TAG)
    return nb


def check_student_notebook(master: nbformat.NotebookNode, student: nbformat.NotebookNode,
                           public_tests: Sequence[str] = ()) -> list[str]:
    """What the student version gives away, as a list of problems (empty: nothing).

    * a line of a solution that the master has nowhere outside its solutions;
    * the code of a hidden test, in the notebook or in the public test files;
    * an output, an execution count, an attachment, or metadata beyond kernel, language
      and otter's (papermill records, widget state and the images in it);
    * a Colab link to the published master notebooks.
    """
    problems = []
    solution, outside = solution_lines(master)
    text = "\n".join(c.source for c in student.cells)
    student_lines = {line.strip() for line in text.splitlines()}
    for line in sorted(solution - outside):
        if line and not line.startswith("#") and line != "..." and line in student_lines:
            problems.append(f"solution line {line!r}")
    shipped = [text, *public_tests]
    for test in hidden_tests(master):
        body = [line.strip() for line in test.splitlines() if line.strip() and not line.strip().startswith("#")]
        if any(body[0] in s for s in shipped):
            problems.append(f"hidden test {body[0]!r}")
    master_link = re.compile(r"colab\.research\.google\.com/github/[^)\s]*/notebooks/")
    if master_link.search(text):
        problems.append("a Colab link opening the master notebook (with its solutions)")
    extra = set(student.metadata) - NOTEBOOK_METADATA
    if extra:
        problems.append(f"notebook metadata {sorted(extra)}")
    for i, cell in enumerate(student.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            problems.append(f"cell {i}: outputs of a run")
        if set(cell.metadata) - CELL_METADATA:
            problems.append(f"cell {i}: metadata {sorted(set(cell.metadata) - CELL_METADATA)}")
        if cell.get("attachments"):
            problems.append(f"cell {i}: attachments")
    return problems


# -- build ---------------------------------------------------------------------------------------
def master_notebooks(source: str | Path | None = None, selection: Sequence[str] | None = None) -> list[Path]:
    """The series' notebooks: in ``source``, else the checkout's ``notebooks/``, else the
    working folder or its ``notebooks/``; ``selection`` picks by number or name."""
    from fmuia_lib.profiles import project_root

    if source is None:
        candidates = [project_root() / "notebooks", Path.cwd(), Path.cwd() / "notebooks"]
        source = next((c for c in candidates if list(c.glob("[0-9][0-9]_*.ipynb"))), None)
        if source is None:
            raise CourseError("no notebooks of the series found in " + ", ".join(map(str, candidates))
                              + ": give their folder with --source")
    folder = Path(source)
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise CourseError(f"{folder}: no notebooks named NN_*.ipynb")
    if not selection:
        return paths
    chosen = []
    for key in selection:
        key = key.removesuffix(".ipynb")
        hits = [p for p in paths if p.stem == key or p.stem.split("_", 1)[0] == key.zfill(2)]
        if not hits:
            raise CourseError(f"no notebook {key!r} in {folder}; the series is: {', '.join(p.stem for p in paths)}")
        chosen += [h for h in hits if h not in chosen]
    return sorted(chosen)


def build(out: str | Path, source: str | Path | None = None, notebooks: Sequence[str] | None = None,
          overwrite: bool = False, student_colab: str | None = None) -> list[Exercise]:
    """Write the student version, the autograders and the solutions of the series to ``out``
    (see the module docstring); returns the exercises. Nothing is written when a notebook
    fails (the course is made in a temporary folder and moved to ``out`` at the end).
    ``student_colab``: the Colab address of the folder where the teacher publishes
    ``student/`` (the student notebooks' badges open it)."""
    from fmuia_lib.paths import output_problem, replace_problem, write_marker

    if student_colab is not None and not re.match(r"^https://colab\.research\.google\.com/\S+$", student_colab):
        raise CourseError(f"--student-colab {student_colab}: expected a https://colab.research.google.com/... address")
    masters = master_notebooks(source, notebooks)
    out = Path(out)
    if any(out.resolve() == m.parent.resolve() or out.resolve() in m.parents for m in masters):
        raise CourseError(f"--out {out}: holds the master notebooks; choose another folder")
    problem = output_problem(out, name="--out", what="the course")  # no data root in, at or under it
    if problem:
        raise CourseError(problem)
    if out.exists() and any(out.iterdir()) and not overwrite:
        hint = (" (use --overwrite to replace the course built there)" if made_by_build(out)
                else "; choose a new folder (--overwrite replaces only a course that fmuia course build made)")
        raise CourseError(f"--out {out}: not empty{hint}")
    problem = replace_problem(out, BUILD_COMMAND)
    if problem:
        raise CourseError(problem)
    assign, test_file = _otter()
    exercises: list[Exercise] = []
    seen: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        made = Path(tmp) / "course"
        for sub in ("student/tests", "autograder", "solutions"):
            (made / sub).mkdir(parents=True)
        for master_path in masters:
            master = read_notebook(master_path)
            try:
                config = assignment_config(master)
                names = question_names(master)
            except CourseError as exc:
                raise CourseError(f"{master_path}: {exc}") from None
            if config.get("name") != master_path.stem:
                raise CourseError(f"{master_path}: ASSIGNMENT CONFIG name is {config.get('name')!r}, "
                                  f"expected the notebook's name {master_path.stem!r}")
            for name in names:
                if name in seen:
                    raise CourseError(f"{master_path}: exercise name {name!r} is also used in {seen[name]}")
                seen[name] = master_path.stem
            dist = _assign(assign, master_path, Path(tmp) / master_path.stem)
            student = student_notebook(read_notebook(dist / "student" / master_path.name), student_colab)
            public = sorted((dist / "student" / "tests").glob("*.py"))
            problems = check_student_notebook(master, student, [p.read_text() for p in public])
            if problems:
                raise CourseError(f"{master_path}: the student version gives away: " + "; ".join(problems))
            nbformat.write(student, str(made / "student" / master_path.name))
            for path in public:
                shutil.copy2(path, made / "student" / "tests" / path.name)
            (archive,) = (dist / "autograder").glob("*.zip")
            shutil.copy2(archive, made / "autograder" / f"{master_path.stem}.zip")
            shutil.copy2(dist / "autograder" / master_path.name, made / "solutions" / master_path.name)
            for name in names:
                tests = test_file.from_file(str(dist / "autograder" / "tests" / f"{name}.py"))
                hidden = sum(tc.hidden for tc in tests.test_cases)
                exercises.append(Exercise(master_path.stem, name, float(tests.possible),
                                          len(tests.test_cases) - hidden, hidden))
            print(f"{master_path.stem}: {len(names)} exercise(s), "
                  f"{sum(e.points for e in exercises if e.notebook == master_path.stem):g} points")
        with zipfile.ZipFile(made / "student" / "tests.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted((made / "student" / "tests").glob("*.py")):
                archive.write(path, f"tests/{path.name}")
        pd.DataFrame([e.__dict__ for e in exercises]).to_csv(made / "exercises.csv", index=False)
        write_marker(made, BUILD_COMMAND)  # what lets a later --overwrite replace this folder, and only it
        if out.is_dir():  # empty, or a course built here before (replace_problem above)
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(made), str(out))
    return exercises


#: The command whose marker (:func:`fmuia_lib.paths.write_marker`) a built course holds.
BUILD_COMMAND = "fmuia course build"


def made_by_build(folder: Path) -> bool:
    """Whether ``folder`` is a course that ``fmuia course build`` wrote (its marker file)."""
    from fmuia_lib.paths import made_by

    return made_by(folder, BUILD_COMMAND)


def _otter() -> tuple[Any, Any]:
    try:
        import otter.assign as assign
        from otter.test_files import ExceptionTestFile
    except ImportError:
        raise CourseError("course mode needs otter-grader: pip install 'fmuia[course]'") from None
    return assign, ExceptionTestFile


def _assign(assign: Any, master: Path, tmp: Path) -> Path:
    """Otter Assign on a copy of ``master`` (otter writes next to its input); returns the
    result folder holding ``student/`` and ``autograder/``."""
    copy = tmp / "master" / master.name
    copy.parent.mkdir(parents=True)
    shutil.copy2(master, copy)
    with _quiet():
        try:
            assign.main(str(copy), str(tmp / "dist"), no_pdfs=True, no_run_tests=True)
        except Exception as exc:  # otter's format errors name the question and the cell
            raise CourseError(f"{master}: otter assign failed: {type(exc).__name__}: {exc}") from None
    return tmp / "dist"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Otter's progress lines off (its loggers and stdout); warnings still reach stderr."""
    level = logging.getLogger("otter").level
    logging.getLogger("otter").setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.getLogger("otter").setLevel(level)


# -- grade ---------------------------------------------------------------------------------------
COLUMNS = ["submission", "exercise", "points", "possible", "tests_passed", "status"]


def _assignment(submission: str | Path, course: str | Path) -> tuple[nbformat.NotebookNode, str, Path]:
    """(notebook, assignment name, autograder archive) of a submission, or a CourseError."""
    nb = read_notebook(submission)
    name = nb.metadata.get("otter", {}).get("assignment_name")
    if not name:
        raise CourseError(f"{submission}: not a notebook of the course (no otter assignment name in its "
                          "metadata); submit the student version you were given")
    archive = Path(course) / "autograder" / f"{name}.zip"
    if not archive.is_file():
        raise CourseError(f"{submission}: no autograder {archive} for assignment {name!r} "
                          f"(build the course with `fmuia course build --out {course}`)")
    try:
        exercises_start(nb, str(submission))
    except CourseError as exc:
        raise CourseError(f"{exc}: not the student version of {name!r}") from None
    return nb, name, archive


def _possible(archive: Path) -> dict[str, float]:
    """``{exercise: points}`` of an autograder, read from its test files (the teacher's)."""
    _, test_file = _otter()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp)
        return {p.stem: float(test_file.from_file(str(p)).possible) for p in sorted(Path(tmp, "tests").glob("*.py"))}


def _grade_here(notebook: str, archive: str) -> list[dict[str, Any]]:
    """Otter's local grading of a notebook ready for grading (run in a process of its own)."""
    from otter.api import grade_submission

    with _quiet():
        results = grade_submission(notebook, archive, quiet=True)
    rows = []
    for exercise, result in results.results.items():
        passed = sum(r.passed for r in result.test_case_results)
        rows.append({"exercise": exercise, "points": float(result.score), "possible": float(result.possible),
                     "tests_passed": f"{passed}/{len(result.test_cases)}", "status": "graded"})
    return rows


def _grade_in_a_process(notebook: Path, archive: Path, timeout: float) -> tuple[list[dict[str, Any]], str]:
    """(rows, problem) of :func:`_grade_here` run by a child Python, killed with its process
    group (otter's kernel included) after ``timeout`` seconds; problem is "" when it finished."""
    out = notebook.with_suffix(".json")
    code = ("import json, sys; from fmuia_lib.course import _grade_here; "
            "json.dump(_grade_here(sys.argv[1], sys.argv[2]), open(sys.argv[3], 'w'))")
    env = dict(os.environ)  # the child imports this fmuia_lib
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    child = subprocess.Popen([sys.executable, "-c", code, str(notebook), str(archive), str(out)], env=env,
                             cwd=notebook.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        log, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return [], f"timed out after {timeout:g} s"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # whatever it started and left behind
    if child.returncode != 0 or not out.is_file():
        last = (log or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return [], f"grading failed (exit status {child.returncode}): {last[0][:200]}"
    return json.loads(out.read_text()), ""


def _grade_in_docker(submissions: list[tuple[str, nbformat.NotebookNode, str, Path]], timeout: float,
                     tmp: Path) -> dict[str, tuple[list[dict[str, Any]], str]]:
    """Otter's container grading (``otter grade``: Docker, no network), one run per assignment."""
    import otter.grade

    found: dict[str, tuple[list[dict[str, Any]], str]] = {}
    for name in sorted({s[2] for s in submissions}):
        folder, out = tmp / "docker" / name, tmp / "docker-out" / name
        folder.mkdir(parents=True)
        out.mkdir(parents=True)
        files = {}
        for i, (submission, nb, assignment, archive) in enumerate(submissions):
            if assignment == name:
                files[f"{i:04d}_{name}.ipynb"] = submission
                nbformat.write(graded_copy(nb), str(folder / f"{i:04d}_{name}.ipynb"))
        with _quiet():
            otter.grade.main(name=name, paths=[str(folder)], output_dir=str(out), autograder=str(archive),
                             timeout=int(timeout), no_network=True)
        table = pd.read_csv(out / "final_grades.csv")
        possible = table[table["file"] == "points-per-question"]
        exercises = [c for c in table.columns if c not in ("file", "total_points_earned", "percent_correct",
                                                           "grading_status")]
        for _, row in table[table["file"] != "points-per-question"].iterrows():
            status = str(row.get("grading_status", "Completed"))
            found[files[Path(str(row["file"])).name]] = (
                [{"exercise": e, "points": float(row[e]), "possible": float(possible[e].iloc[0]) if len(possible) else
                  float("nan"), "tests_passed": "", "status": "graded" if status == "Completed" else status}
                 for e in exercises], "")
    return found


def grade(submissions: str | Path | Sequence[str | Path], course: str | Path, timeout: float = GRADE_TIMEOUT,
          docker: bool = False) -> pd.DataFrame:
    """Grade submitted notebooks with the autograders ``build`` wrote into ``course``.

    RUNS THE STUDENTS' CODE: on this machine each submission in a process of its own, killed
    after ``timeout`` seconds (a submission that times out or crashes scores 0, and ``status``
    says why); with ``docker`` in otter's Docker containers. Each notebook's autograder is
    chosen by its otter assignment name; every submission is checked before any is graded.
    Returns one row per submission and exercise: ``submission``, ``exercise``, ``points``
    scored, ``possible``, ``tests_passed`` (``"2/3"``), ``status``.
    """
    if isinstance(submissions, (str, Path)):
        submissions = [submissions]
    if docker and shutil.which("docker") is None:
        raise CourseError("--docker: no `docker` command on this machine (grade without --docker, in a process "
                          "per submission, or install Docker)")
    checked = [(str(s), *_assignment(s, course)) for s in submissions]
    _otter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        graded = _grade_in_docker(checked, timeout, Path(tmp)) if docker else {}
        for i, (submission, nb, name, archive) in enumerate(checked):
            if docker:
                found, problem = graded.get(submission, ([], "no result from otter grade"))
            else:
                path = Path(tmp) / f"{i:04d}" / f"{name}.ipynb"
                path.parent.mkdir()
                nbformat.write(graded_copy(nb), str(path))
                found, problem = _grade_in_a_process(path, archive, timeout)
            if problem:  # nothing graded: every exercise scores 0
                found = [{"exercise": e, "points": 0.0, "possible": p, "tests_passed": "", "status": problem}
                         for e, p in _possible(archive).items()]
            text = nbformat.writes(nb)
            position = {r["exercise"]: text.find(f'"{r["exercise"]}') % (len(text) + 1) for r in found}
            for row in sorted(found, key=lambda r: (position[r["exercise"]], r["exercise"])):  # the notebook's order
                rows.append({"submission": submission, **row})
    return pd.DataFrame(rows, columns=COLUMNS)


# -- command line ----------------------------------------------------------------------------------
def build_main(args) -> int:
    """``fmuia course build`` (a CourseError is bad input: ``cli.main``)."""
    exercises = build(args.out, source=args.source, notebooks=args.notebooks, overwrite=args.overwrite,
                      student_colab=args.student_colab)
    print(f"{len(exercises)} exercises, {sum(e.points for e in exercises):g} points: student version in "
          f"{Path(args.out) / 'student'} (with tests.zip for Colab), autograders in {Path(args.out) / 'autograder'}")
    return 0


def grade_main(args) -> int:
    """``fmuia course grade`` (a CourseError is bad input: ``cli.main``)."""
    from fmuia_lib.paths import atomic_write, check_output

    if args.timeout <= 0:
        raise CourseError(f"--timeout {args.timeout:g}: expected a number of seconds above 0")
    if args.json:  # checked before grading: never into a data root, over a submission or the course
        check_output(args.json, name="--json", what="the grades", file=True,
                     inputs=[*((s, "the submission") for s in args.submissions), (args.course, "the course folder")])
    if args.docker:
        where = "in otter's Docker containers, without network"
    else:
        where = (f"on this machine with your rights, each in a process of its own, {args.timeout:g} s at most"
                 + ("; Docker is here: --docker grades in otter's containers instead"
                    if shutil.which("docker") else "; with Docker installed, --docker would isolate it"))
    print(f"grading runs the students' code: {where}", file=sys.stderr)
    table = grade(args.submissions, args.course, timeout=args.timeout, docker=args.docker)
    for submission, rows in table.groupby("submission", sort=False):
        print(f"{submission}:")
        print(rows.drop(columns="submission").to_string(index=False))
        print(f"total {rows['points'].sum():g} / {rows['possible'].sum():g}\n")
    if args.json:
        atomic_write(args.json, table.to_json(orient="records", indent=1))
    return 0


if __name__ == "__main__":  # python -m fmuia_lib.course build|grade ...
    from fmuia_lib.cli import main

    sys.exit(main(["course", *sys.argv[1:]]))
