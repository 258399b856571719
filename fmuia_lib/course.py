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

:func:`grade` grades one submitted notebook on this machine, without Docker (otter's local
grading, ``otter run``), and returns the points of each exercise. Grading executes a
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
import logging
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import nbformat
import pandas as pd
import yaml

EXERCISES_HEADING = "## Exercises"
IGNORE_TAG = "otter_ignore"
#: The setup cell's install target; the student version installs the course extra with it.
PACKAGE = '"fmuia @ git+https://github.com/fmuia/fmuia"'
COURSE_PACKAGE = '"fmuia[course] @ git+https://github.com/fmuia/fmuia"'
#: What a student notebook may keep of the master's metadata.
NOTEBOOK_METADATA = {"kernelspec", "language_info", "otter"}
CELL_METADATA = {"tags", "editable", "deletable", "otter"}
CELL_TAGS = {"parameters", "otter_answer_cell", IGNORE_TAG}
_BEGIN_SOLUTION = re.compile(r"^\s*#\s*BEGIN\s+SOLUTION", re.IGNORECASE)
_END_SOLUTION = re.compile(r"^\s*#\s*END\s+SOLUTION", re.IGNORECASE)
_INIT_CELL = "# Initialize Otter"


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
def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Otter's student notebook made fit to hand out (a copy).

    Keeps only kernel, language and otter metadata (no papermill record, no widget state);
    keeps only the cell tags a student needs; moves otter's init cell from the top of the
    notebook to the exercises (the series opens the same way in every version); tags the
    cells before the exercises ``otter_ignore`` (grading runs the exercises only); makes
    the Colab setup install the ``course`` extra, which brings otter for the checks.
    """
    nb = nbformat.from_dict(nb)
    nb.metadata = nbformat.from_dict({k: v for k, v in nb.metadata.items() if k in NOTEBOOK_METADATA})
    init = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(_INIT_CELL)]
    nb.cells = [c for c in nb.cells if not any(c is i for i in init)]
    start = exercises_start(nb)
    nb.cells[start + 1:start + 1] = init
    for i, cell in enumerate(nb.cells):
        cell.metadata = nbformat.from_dict({k: v for k, v in cell.metadata.items() if k in CELL_METADATA})
        tags = [t for t in cell.metadata.get("tags", []) if t in CELL_TAGS]
        if i < start and cell.cell_type == "code" and IGNORE_TAG not in tags:
            tags.append(IGNORE_TAG)
        cell.metadata["tags"] = tags  # papermill's parameterize_notebook reads every cell's tags
        cell.pop("attachments", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.source = cell.source.replace(PACKAGE, COURSE_PACKAGE)
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
      and otter's (papermill records, widget state and the images in it).
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
          overwrite: bool = False) -> list[Exercise]:
    """Write the student version, the autograders and the solutions of the series to ``out``
    (see the module docstring); returns the exercises. Nothing is written when a notebook
    fails (the course is made in a temporary folder and moved to ``out`` at the end)."""
    from fmuia_lib.paths import output_problem, replace_problem, write_marker

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
            student = student_notebook(read_notebook(dist / "student" / master_path.name))
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
def grade(submission: str | Path, course: str | Path) -> pd.DataFrame:
    """Grade a submitted notebook with the autograder ``build`` wrote into ``course``.

    The autograder is chosen by the notebook's otter assignment name. Returns one row per
    exercise: ``exercise``, ``points`` scored, ``possible``, ``tests_passed`` (``"2/3"``).
    """
    nb = read_notebook(submission)
    name = nb.metadata.get("otter", {}).get("assignment_name")
    if not name:
        raise CourseError(f"{submission}: not a notebook of the course (no otter assignment name in its "
                          "metadata); submit the student version you were given")
    archive = Path(course) / "autograder" / f"{name}.zip"
    if not archive.is_file():
        raise CourseError(f"{submission}: no autograder {archive} for assignment {name!r} "
                          f"(build the course with `fmuia course build --out {course}`)")
    graded = graded_copy(nb)
    _otter()
    from otter.api import grade_submission

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.ipynb"
        nbformat.write(graded, str(path))
        with _quiet():
            results = grade_submission(str(path), str(archive), quiet=True)
    rows = []
    text = nbformat.writes(nb)
    position = {name: text.find(f'"{name}') % (len(text) + 1) for name in results.results}  # not found: last
    order = sorted(results.results, key=lambda name: (position[name], name))  # the notebook's order
    for exercise in order:
        result = results.results[exercise]
        passed = sum(r.passed for r in result.test_case_results)
        rows.append({"exercise": exercise, "points": float(result.score), "possible": float(result.possible),
                     "tests_passed": f"{passed}/{len(result.test_cases)}"})
    return pd.DataFrame(rows, columns=["exercise", "points", "possible", "tests_passed"])


# -- command line ----------------------------------------------------------------------------------
def build_main(args) -> int:
    """``fmuia course build`` (a CourseError is bad input: ``cli.main``)."""
    exercises = build(args.out, source=args.source, notebooks=args.notebooks, overwrite=args.overwrite)
    print(f"{len(exercises)} exercises, {sum(e.points for e in exercises):g} points: student version in "
          f"{Path(args.out) / 'student'}, autograders in {Path(args.out) / 'autograder'}")
    return 0


def grade_main(args) -> int:
    """``fmuia course grade`` (a CourseError is bad input: ``cli.main``)."""
    from fmuia_lib.paths import atomic_write, check_output

    if args.json:  # checked before grading: never into a data root, over the submission or the course
        check_output(args.json, name="--json", what="the grades", file=True,
                     inputs=[(args.submission, "the submission"), (args.course, "the course folder")])
    table = grade(args.submission, args.course)
    print(table.to_string(index=False))
    print(f"total {table['points'].sum():g} / {table['possible'].sum():g}")
    if args.json:
        atomic_write(args.json, table.to_json(orient="records", indent=1))
    return 0


if __name__ == "__main__":  # python -m fmuia_lib.course build|grade ...
    from fmuia_lib.cli import main

    sys.exit(main(["course", *sys.argv[1:]]))
