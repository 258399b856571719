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


def test_environment_yml_names_the_same_dependencies(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = [s for s in pip_section if not s.startswith("-e")]
    assert sorted(map(str.lower, listed)) == sorted(map(str.lower, wanted))
    assert "-e ." in pip_section
    assert "python=3.11" in env["dependencies"]


def test_package_metadata_uses_ranges_not_the_ci_pins(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    torch_specs = [d for d in project["dependencies"] if _name(d) in ("torch", "torchvision")]
    assert len(torch_specs) == 2 and not any("==" in d for d in torch_specs)
    pins = [l for l in (repo_root / "constraints.txt").read_text().splitlines()
            if l and not l.startswith("#")]
    assert {_name(p) for p in pins} >= {"torch", "torchvision"}
    assert project["requires-python"] == ">=3.10"


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
