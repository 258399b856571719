"""Packaging: pyproject, environment.yml, constraints and the command line agree."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import yaml

from fmuia_lib import cli


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_installs_the_package_with_lab_and_test(repo_root):
    """conda provides Python and pip; the dependencies are pyproject's only (no second list)."""
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-e .[lab,test]"]
    assert "python=3.11" in env["dependencies"]


#: Versions a Google Colab runtime ships (Colab updates them; ipywidgets has stayed at
#: 7.7.1 for years), torch and torchvision at the oldest fmuia runs on (tv_tensors.KeyPoints).
#: The core dependencies must accept them, so that installing fmuia there changes none of them.
COLAB_SHIPS = {"ipywidgets": "7.7.1", "ipykernel": "6.17.1", "notebook": "6.5.7", "torch": "2.8.0",
               "torchvision": "0.23.0", "numpy": "2.0.2", "pandas": "2.2.2", "matplotlib": "3.10.0",
               "scikit-learn": "1.6.1", "scipy": "1.14.1", "pillow": "11.1.0", "tqdm": "4.67.1",
               "pyyaml": "6.0.2", "seaborn": "0.13.2", "timm": "1.0.15", "opencv-python-headless": "4.11.0.86"}
JUPYTER = ("jupyter", "jupyterlab", "notebook", "ipykernel", "nbconvert", "nbclassic", "widgetsnbextension",
           "jupyterlab-widgets")


def test_core_dependencies_are_met_by_colab_and_leave_its_jupyter_alone(repo_root):
    from packaging.requirements import Requirement

    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    core = {_name(d): Requirement(d) for d in project["dependencies"]}
    assert not set(core) & set(JUPYTER), "Jupyter front ends belong to the [lab] extra"
    for name, version in COLAB_SHIPS.items():
        if name in core:
            assert core[name].specifier.contains(version), f"{core[name]} refuses Colab's {name} {version}"
    lab = {_name(d) for d in project["optional-dependencies"]["lab"]}
    assert {"jupyterlab", "ipykernel", "nbconvert"} <= lab
    assert "lab" in (repo_root / "Makefile").read_text().split("-e", 1)[1].split("\n", 1)[0]


def test_package_metadata_uses_ranges_not_the_ci_pins(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    torch_specs = [d for d in project["dependencies"] if _name(d) in ("torch", "torchvision")]
    assert len(torch_specs) == 2 and not any("==" in d for d in torch_specs)
    pins = [l for l in (repo_root / "constraints.txt").read_text().splitlines()
            if l and not l.startswith("#")]
    assert {_name(p) for p in pins} >= {"torch", "torchvision"}
    assert project["requires-python"] == ">=3.11"  # tomllib


def test_minimum_versions_have_what_the_code_uses(repo_root):
    """The metadata's torch and torchvision minimums are not below the first releases with the
    APIs fmuia calls (the installed versions, which the tests run with, have them)."""
    import torch
    import torchvision
    from packaging.requirements import Requirement
    from packaging.version import Version
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    assert hasattr(tv_tensors, "KeyPoints") and hasattr(v2, "ClampKeyPoints")  # torchvision 0.23
    assert torch.amp.GradScaler("cpu", enabled=False) is not None  # torch 2.3
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    core = {_name(d): Requirement(d) for d in project["dependencies"]}
    assert not core["torchvision"].specifier.contains("0.22.1") and core["torchvision"].specifier.contains("0.23.0")
    assert not core["torch"].specifier.contains("2.7.1") and core["torch"].specifier.contains("2.8.0")
    for name, module in (("torch", torch), ("torchvision", torchvision)):
        assert core[name].specifier.contains(Version(module.__version__).base_version), name


def test_ci_runs_the_readme_test_command(repo_root):
    assert "make test" in (repo_root / ".ci" / "run").read_text()
    readme = (repo_root / "README.md").read_text()
    assert "make test" in readme and "make run" in readme


def test_every_cli_verb_points_at_a_real_function():
    import importlib
    for verb, (module, func) in cli.COMMANDS.items():
        assert callable(getattr(importlib.import_module(module), func)), verb


def test_cli_help_lists_the_verbs():
    out = subprocess.run([sys.executable, "-m", "fmuia_lib.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for verb in ("data", "train", "predict", "evaluate", "validate-submission", "suite"):
        assert verb in out


def test_the_public_face_resolves_and_loads_nothing_until_asked():
    """``from fmuia_lib import MultiTaskNet, train, ...`` works for every public name, and the
    names are imported on first use: importing the package loads no torch (the scorer's own
    imports: tests/test_evaluate.py)."""
    import fmuia_lib

    assert all(getattr(fmuia_lib, name) is not None for name in fmuia_lib.__all__)
    code = "import sys, fmuia_lib; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"
