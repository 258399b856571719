"""The committed notebooks: structure, parameters, executed outputs, exercises and questionnaire.

nbval (``make test``) re-executes the notebooks; these tests check what is committed:
every notebook opens the same way (the Colab setup included) and states its prerequisites
and run time, its parameters are the profile, the folders and its own settings, it carries
the outputs of a real run (no errors, an environment record, a reasonable size), its
exercises are otter-grader questions (points, a solution, public and hidden tests), and it
ends with a questionnaire. ``tests/test_course.py`` builds and grades the course from them.
"""
from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from fmuia_lib import course, env_info, series, suite
from fmuia_lib.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_BYTES = 2_000_000


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _outputs_text(nb) -> str:
    return "".join(o.get("text", "") for c in _code_cells(nb) for o in c.get("outputs", []))


def test_the_series_has_six_notebooks():
    assert [p.stem.split("_", 1)[0] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_opens_the_same_way(path):
    nb = _read(path)
    title, setup = nb.cells[0], nb.cells[1]
    assert title.cell_type == "markdown" and title.source.startswith("# ")
    assert f"colab.research.google.com/github/fmuia/fmuia/blob/main/notebooks/{path.name}" in title.source
    assert "**Learning objectives**" in title.source
    assert setup.source == _read(NOTEBOOKS[0]).cells[1].source, "one setup cell for the whole series"
    assert "from fmuia_lib import env_info, profiles, series, viz" in setup.source
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    untagged = [i for i, c in enumerate(nb.cells) if "tags" not in c.metadata]
    assert not untagged, f"cells {untagged} have no tags list (papermill's parameterize_notebook reads it)"
    settings = nb.cells[tagged[0] + 2]
    assert "profiles.run_settings(profile" in settings.source and "series.run_paths(run_dir)" in settings.source
    assert "env_info.print_environment" in settings.source


#: The parameters every notebook declares, with their defaults: a notebook opened as it is
#: runs the cpu-smoke profile, keeps its files in runs/notebooks (Drive on Colab), uses the
#: profile's data and the best device.
COMMON = {"profile": "cpu-smoke", "run_dir": None, "data_dir": None}
OPTIONAL = {"device": None, "overrides": {}}
#: Which notebooks take a device (they run a model) and overrides (they build a TrainConfig).
TAKES = {"01_dataset_exploration": set(), "02_head_design": {"overrides"},
         "03_multitask_training": {"device", "overrides"}, "04_error_analysis": {"device"},
         "05_submission": {"device"}, "06_experiments": {"device", "overrides"}}
#: Each notebook's own settings (not TrainConfig fields).
OWN = {
    "01_dataset_exploration": {"samples_per_task", "stats_images_per_task"},
    "02_head_design": {"timing_repeats"},
    "03_multitask_training": {"transfer_seeds", "transfer_steps"},
    "04_error_analysis": {"predict_batch_size", "worst_k", "interactive_widgets"},
    "05_submission": {"predict_batch_size"},
    "06_experiments": {"grid_profile", "grid_overrides", "main_effects", "recipe", "all_but_one", "seeds",
                       "phantom_tasks", "real_slice", "jobs"},
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_are_the_profile_the_folders_the_device_overrides_and_own_settings(path):
    """Training settings come from the profile (and `overrides`), never from a second copy
    of them in a parameters cell."""
    declared = {name: ast.literal_eval(p["default"]) for name, p in suite.declared_parameters(path).items()}
    assert set(declared) - set(COMMON) - set(OPTIONAL) == OWN[path.stem]
    assert {k: declared[k] for k in COMMON} == COMMON
    assert set(declared) & set(OPTIONAL) == TAKES[path.stem]
    assert {k: declared[k] for k in TAKES[path.stem]} == {k: OPTIONAL[k] for k in TAKES[path.stem]}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert not (set(declared) - {"device"}) & fields, f"{path.stem} declares TrainConfig fields"


def _setup_on_colab(monkeypatch, tmp_path):
    """Run the setup cell as on Colab (google.colab present, pip and Drive recorded)."""
    from IPython.core.inputtransformer2 import TransformerManager

    calls = {"pip": [], "mount": [], "widgets": 0, "constraints": None}
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=lambda where: calls["mount"].append(where))
    colab.output = types.SimpleNamespace(
        enable_custom_widget_manager=lambda: calls.__setitem__("widgets", calls["widgets"] + 1))
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)

    def fake_run(argv, check=False, **kwargs):
        calls["pip"].append(list(argv))
        if "-c" in argv:
            calls["constraints"] = Path(argv[argv.index("-c") + 1]).read_text()
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    source = TransformerManager().transform_cell(_read(NOTEBOOKS[0]).cells[1].source)
    magics = []
    exec(source, {"get_ipython": lambda: types.SimpleNamespace(
        run_line_magic=lambda *args: magics.append(args))})
    assert magics == [("matplotlib", "inline")]
    return calls


def test_the_colab_setup_installs_core_dependencies_only(monkeypatch, tmp_path):
    """On Colab the setup cell installs fmuia without extras and no Jupyter package (Colab's
    own stay as they are), pins torch and the widgets to Colab's versions, turns on the
    widget manager and mounts Google Drive, where the default run folder is."""
    monkeypatch.delenv(series.RUN_DIR_VARIABLE, raising=False)  # the tests' own run folder
    calls = _setup_on_colab(monkeypatch, tmp_path)
    (argv,) = calls["pip"]
    assert argv[1:4] == ["-m", "pip", "install"]
    options_with_values = {"-c", "--constraint"}
    wanted = [a for i, a in enumerate(argv[4:], 4) if not a.startswith("-") and argv[i - 1] not in options_with_values]
    assert wanted == ["fmuia @ git+https://github.com/fmuia/fmuia"], wanted
    jupyter = ("jupyter", "notebook", "ipykernel", "ipywidgets", "nbconvert", "widgetsnbextension", "nbclassic")
    assert not any("[" in w.split("@")[0] or w.lower().startswith(jupyter) for w in wanted)
    assert not {"-U", "--upgrade", "--force-reinstall"} & set(argv)
    pinned = {line.split("==")[0] for line in calls["constraints"].splitlines()}
    assert {"torch", "torchvision", "ipywidgets"} <= pinned
    assert calls["mount"] == ["/content/drive"] and calls["widgets"] == 1
    assert series.default_run_dir().startswith("/content/drive/")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_come_from_a_clean_run(path):
    nb = _read(path)
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"
    errors = [o for c in _code_cells(nb) for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path.name} carries error outputs: {[e.ename for e in errors]}"
    unexecuted = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None]
    assert not unexecuted, f"{path.name}: cells {unexecuted} were not executed"
    assert sum(bool(c.get("outputs")) for c in _code_cells(nb)) >= 5
    assert env_info.HEADER in _outputs_text(nb), "no environment record in the outputs"
    assert "injected-parameters" not in str([c.metadata.get("tags") for c in nb.cells]), \
        "committed notebooks keep their own defaults (run with --update-notebooks)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_states_its_prerequisites_and_run_time(path):
    title = _read(path).cells[0].source
    assert re.search(r"^\*\*Prerequisites\*\*: \S", title, re.M), "no **Prerequisites** line in the title cell"
    run_time = re.search(r"^\*\*Run time\*\*: (.+?)(?:\n\n|\Z)", title, re.M | re.S)
    assert run_time, "no **Run time** line in the title cell"
    assert "cpu-smoke" in run_time.group(1) and "2 CPU cores" in run_time.group(1) and "GPU" in run_time.group(1)


def _questions(nb) -> list[tuple[dict, list[str], list, list]]:
    """Each otter question: (its config, the markers inside it, the code cells of its tests
    block, the cells of its prompt: those before its solution block)."""
    questions, current, in_tests = [], None, False
    markers = {i: (marker, config) for i, marker, config in course.otter_blocks(nb)}
    for i, cell in enumerate(nb.cells):
        marker, config = markers.get(i, (None, None))
        if marker == "BEGIN QUESTION":
            current = (config, [], [], [])
            questions.append(current)
        elif marker == "END QUESTION":
            current = None
        elif current is not None and marker is not None:
            current[1].append(marker)
            in_tests = {"BEGIN TESTS": True, "END TESTS": False}.get(marker, in_tests)
        elif current is not None and in_tests and cell.cell_type == "code":
            current[2].append(cell)
        elif current is not None and not current[1]:
            current[3].append(cell)
    return questions


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_are_otter_questions_with_points_and_hidden_tests(path):
    """The exercises are otter's master format: one assignment config (the series' settings,
    the notebook's name), then questions worth points, all or nothing, each with a solution
    block and tests: a public one (no points, the student's check) and hidden ones."""
    nb = _read(path)
    start = course.exercises_start(nb)
    assert all(i > start for i, _, _ in course.otter_blocks(nb)), "otter cells belong to the exercises"
    config = course.assignment_config(nb)
    assert config == {**course.assignment_config(_read(NOTEBOOKS[0])), "name": path.stem}
    assert config["tests"] == {"files": True, "ok_format": False} and config["run_tests"] is False
    questions = _questions(nb)
    assert questions, f"{path.name} has no exercise"
    for question, markers, tests, prompt in questions:
        assert re.fullmatch(rf"q{path.stem[:2]}_[a-z_]+", question["name"]), question["name"]
        assert prompt and all(c.cell_type == "markdown" for c in prompt), f"{question['name']}: the prompt is markdown"
        assert question["points"] > 0 and question["all_or_nothing"] is True, question
        assert markers == ["BEGIN SOLUTION", "END SOLUTION", "BEGIN TESTS", "END TESTS"], (question["name"], markers)
        hidden = [t for t in tests if re.search(r"^hidden: true$", t.source, re.M)]
        public = [t for t in tests if t not in hidden]
        assert hidden and public, f"{question['name']}: needs public and hidden tests"
        assert all(re.search(r"^points: 0$", t.source, re.M) for t in public), "public tests carry no points"
    assert len(course.question_names(nb)) == len(questions)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_code_cell_is_python(path):
    from IPython.core.inputtransformer2 import TransformerManager

    for i, cell in enumerate(_code_cells(_read(path))):
        try:
            ast.parse(TransformerManager().transform_cell(cell.source))
        except SyntaxError as exc:
            pytest.fail(f"{path.name}, code cell {i}: {exc}\n{cell.source[:300]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_ends_with_a_questionnaire(path):
    nb = _read(path)
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Questionnaire"), "the last cell"
    assert len(nb.cells) - 1 > course.exercises_start(nb), "after the exercises"
    assert 6 <= len(re.findall(r"^\d+\. \S", last.source, re.M)) <= 10
