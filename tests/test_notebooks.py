"""The committed notebooks: structure, parameters, executed outputs, and the student version.

nbval (``make test``) re-executes the notebooks; these tests check what is committed:
every notebook opens the same way, its parameters are the cpu-smoke profile, it carries
the outputs of a real run (no errors, an environment record, a reasonable size), and the
student version built from it still runs.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest

from fmuia_lib import env_info, runner
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
    assert '"google.colab" in sys.modules' in setup.source
    assert "fmuia @ git+https://github.com/fmuia/fmuia" in setup.source and '"-c"' in setup.source
    assert "GPU" in setup.source
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "env_info.print_environment" in nb.cells[tagged[0] + 2].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameter_defaults_are_the_cpu_smoke_profile(path):
    """Run as is, a notebook runs the cpu-smoke profile (what `fmuia suite` would inject)."""
    declared = runner.declared_parameters(path)
    injected = runner.notebook_parameters(runner.load_profile("cpu-smoke"), path, runner.DEFAULT_RUN_DIR)
    assert set(runner.COMMON_PARAMETERS) <= set(declared)
    for name, value in injected.items():
        assert declared[name] == value, f"{path.stem}: {name} = {declared[name]!r}, profile says {value!r}"


def test_notebook_03_parameters_are_one_to_one_with_train_config():
    declared = runner.declared_parameters(runner.notebook_paths(["03"])[0])
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    extra = set(declared) - fields
    assert fields <= set(declared), f"TrainConfig fields missing: {sorted(fields - set(declared))}"
    assert extra == set(runner.COMMON_PARAMETERS) | {"checkpoint_path"}
    TrainConfig.from_dict({k: v for k, v in declared.items() if k in fields})


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
