"""The committed notebooks: structure, parameters, executed outputs, and the student version.

nbval (``make test``) re-executes the notebooks; these tests check what is committed:
every notebook opens the same way (the Colab setup included), its parameters are the
profile, the folders and its own settings, it carries
the outputs of a real run (no errors, an environment record, a reasonable size), and the
student version built from it still runs.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from fmuia_lib import env_info, series, suite
from fmuia_lib.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_BYTES = 2_000_000
EXERCISES_HEADING = "## Exercises"


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _outputs_text(nb) -> str:
    return "".join(o.get("text", "") for c in _code_cells(nb) for o in c.get("outputs", []))


def _student_module():
    spec = importlib.util.spec_from_file_location("make_student_version", ROOT / "scripts" / "make_student_version.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    "03_multitask_training": set(),
    "04_error_analysis": {"predict_batch_size", "worst_k", "interactive_widgets"},
    "05_submission": {"predict_batch_size"},
    "06_experiments": {"sweep_tasks", "sweep_steps", "head_lr_mults", "samplers", "fpn_modes", "half_fraction",
                       "pretrain_compare", "pretrain_profile", "kernel_name"},
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
def test_exercises_are_graded_and_their_verdicts_are_checked(path):
    nb = _read(path)
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                 and c.source.startswith(EXERCISES_HEADING))
    solutions = [i for i, c in enumerate(nb.cells) if "solution" in c.metadata.get("tags", [])]
    assert solutions and min(solutions) > start
    for i in solutions:
        check = nb.cells[i + 1]
        assert check.source.startswith("# NBVAL_CHECK_OUTPUT") and "exercises.check_" in check.source
        if check.get("outputs"):
            assert "[PASS]" in _outputs_text(nbformat.v4.new_notebook(cells=[check]))


def test_student_stub_keeps_signature_docstring_and_imports():
    module = _student_module()
    stub = module.stub_source('import math\n\n\ndef f(x: int) -> int:\n    """Doc."""\n    y = math.sqrt(x)\n    return y\n')
    assert stub.startswith("import math\n\n\ndef f(x: int) -> int:\n    \"\"\"Doc.\"\"\"")
    assert stub.rstrip().endswith("raise NotImplementedError") and "sqrt" not in stub
    compile(stub, "<stub>", "exec")
    with pytest.raises(ValueError, match="at least one function"):
        module.stub_source("x = 1")


def test_student_version_refuses_to_overwrite_the_teacher_notebooks():
    with pytest.raises(ValueError, match="refusing"):
        _student_module().build(ROOT)


@pytest.mark.slow
def test_student_version_runs_up_to_the_exercises(tmp_path):
    """Build the student series; run every exercise section (and all of notebook 02) in a kernel.

    Each check must report NOT DONE, and nothing may raise: a student can run the whole
    notebook before solving anything.
    """
    import papermill as pm

    written = _student_module().build(tmp_path)
    assert len(written) == len(NOTEBOOKS)
    sections = []
    for path in written:
        nb = _read(path)
        assert not any(c.get("outputs") for c in _code_cells(nb))
        start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                     and c.source.startswith(EXERCISES_HEADING))
        sections += nb.cells[start:]
    exercises_only = nbformat.v4.new_notebook(cells=sections)
    exercises_only.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(exercises_only, str(tmp_path / "exercises.ipynb"))
    executed = pm.execute_notebook(str(tmp_path / "exercises.ipynb"), str(tmp_path / "exercises_run.ipynb"),
                                   kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    text = _outputs_text(executed)
    checks = sum(len(re.findall(r"exercises\.check_", c.source)) for c in sections if c.cell_type == "code")
    assert text.count("[NOT DONE]") == checks and "[PASS]" not in text and "[FAIL]" not in text

    nb02 = next(p for p in written if p.name.startswith("02_"))
    run = pm.execute_notebook(str(nb02), str(tmp_path / "02_run.ipynb"), kernel_name="python3",
                              progress_bar=False, cwd=str(ROOT), parameters={"run_dir": str(tmp_path / "run")})
    assert "[NOT DONE] routing rule" in _outputs_text(run)
