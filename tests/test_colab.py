"""The Colab path: the wheel in a fresh environment runs the series, one notebook at a time.

What a learner on Colab has is the installed package (no checkout around the working folder:
profiles come from the package), Colab's preinstalled libraries, and one notebook at a time,
each in a kernel of its own. This test stands in for that:

* it builds fmuia's wheel and installs it into a fresh virtual environment in a temporary
  folder outside the checkout, through the notebooks' own setup cell run as on Colab (a
  stand-in ``google.colab`` module, the wheel in the working folder, where a learner puts
  it), so that the install users run is the one tested. Colab's preinstalled torch, pandas,
  Jupyter... are stood in for by this environment's third-party packages, exposed to the
  fresh one through a ``.pth`` file (everything but fmuia itself); a core dependency they
  do not meet fails the test (pip is told to use no index);
* it copies the notebooks into a working folder there and executes them ONE AT A TIME
  with papermill (run by the fresh environment's Python, each in a fresh kernel of it,
  working folder the temporary one), choosing the ci-tiny profile with one parameter;
* notebooks 04 and 05 run first, before 03 has made the checkpoint: they must stop with a
  message naming notebook 03 and the command that makes it; then 03 runs as if its
  connection were lost half-way (``stop_at_step``), runs again and must resume; then
  01, 02, 04, 05 and 06 run and must find what 03 left in the run folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import nbformat
import pytest

from fmuia_lib.runner.run_folder import RUN_DIR_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "ci-tiny"
CHECKPOINT_HINT = "notebook 03_multitask_training makes it"


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)


def _stand_in_for_colab_packages(folder: Path) -> Path:
    """A folder of links to this environment's third-party packages, fmuia left out."""
    folder.mkdir()
    own = ("fmuia", "__editable__", "_fmuia")
    sources = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    for source in map(Path, sources):
        for entry in source.iterdir():
            if entry.name.lower().startswith(own) or entry.suffix == ".pth" or (folder / entry.name).exists():
                continue
            (folder / entry.name).symlink_to(entry)
    return folder


#: Colab's google.colab, stood in for: it records what the setup cell asks of it.
COLAB_STUB = """
import types

drive = types.SimpleNamespace(mount=lambda path: print("colab: mount", path))
output = types.SimpleNamespace(enable_custom_widget_manager=lambda: print("colab: widgets"))
"""
#: Runs a setup cell's source (argv[1]) as Colab would: google.colab loaded, IPython's syntax.
RUN_SETUP = """
import sys
import types

import google.colab  # loaded on Colab before any cell runs
from IPython.core.inputtransformer2 import TransformerManager

source = TransformerManager().transform_cell(open(sys.argv[1]).read())
shell = types.SimpleNamespace(run_line_magic=lambda *args: None)
exec(compile(source, "setup cell", "exec"), {"__name__": "__main__", "get_ipython": lambda: shell})
import fmuia_lib

print("fmuia from", fmuia_lib.__file__)
"""


def _colab_setup(python: Path, work: Path, base: Path, notebook: str) -> subprocess.CompletedProcess:
    """Run ``notebook``'s setup cell (as committed) with the fresh environment's Python, in the
    working folder, as on Colab; pip is kept off the network (PIP_NO_INDEX)."""
    stub = base / "colab-stub"
    if not stub.exists():
        (stub / "google" / "colab").mkdir(parents=True)
        (stub / "google" / "colab" / "__init__.py").write_text(COLAB_STUB)
        (stub / "run_setup.py").write_text(RUN_SETUP)
    cell = nbformat.read(str(work / f"{notebook}.ipynb"), as_version=4).cells[1].source
    (base / f"setup_{notebook}.py").write_text(cell)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", RUN_DIR_VARIABLE)}
    env.update(PYTHONPATH=str(stub), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1",
               PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return _run([str(python), str(stub / "run_setup.py"), str(base / f"setup_{notebook}.py")], cwd=work, env=env)


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """(python of the fresh environment, working folder, environment variables)."""
    base = tmp_path_factory.mktemp("colab")
    assert ROOT not in base.parents, "the stand-in must live outside the checkout"
    started = time.perf_counter()

    # 1. the wheel, built from a copy of the sources (nothing is written into the checkout)
    src = base / "src"
    shutil.copytree(ROOT / "fmuia_lib", src / "fmuia_lib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                  "-w", str(base / "dist"), str(src)])
    assert built.returncode == 0, built.stderr
    (wheel,) = (base / "dist").glob("fmuia-*.whl")

    # 2. a fresh environment that sees Colab's stand-in packages, then the wheel with its dependencies
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "colab_preinstalled.pth").write_text(f"{_stand_in_for_colab_packages(base / 'preinstalled')}\n")
    work = base / "work"
    work.mkdir()
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        shutil.copy2(notebook, work / notebook.name)
    shutil.copy2(wheel, work / wheel.name)  # where a learner puts it on Colab
    setup = _colab_setup(python, work, base, "01_dataset_exploration")
    assert setup.returncode == 0, f"the setup cell did not install the wheel:\n{setup.stdout}\n{setup.stderr}"
    assert "mount" not in setup.stdout and "widgets" in setup.stdout, setup.stdout  # 01 leaves Drive alone
    assert "GPU" not in setup.stdout, setup.stdout
    # the fresh environment's kernel, which papermill starts for each notebook
    path = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    kernel = venv / "share" / "jupyter" / "kernels" / "python3"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (fresh fmuia environment)", "language": "python",
        "env": {"PYTHONPATH": "", "VIRTUAL_ENV": str(venv), "PATH": path, "OMP_NUM_THREADS": "1",
                "JUPYTER_PATH": str(venv / "share" / "jupyter"), "IPYTHONDIR": str(base / "ipython")}}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", RUN_DIR_VARIABLE)}
    env.update(PATH=path, OMP_NUM_THREADS="1", JUPYTER_PATH=str(venv / "share" / "jupyter"),
               JUPYTER_RUNTIME_DIR=str(base / "jupyter-runtime"), IPYTHONDIR=str(base / "ipython"))
    print(f"\nwheel built and installed into a fresh environment in {time.perf_counter() - started:.1f} s")
    return python, work, env


def test_fmuia_is_imported_from_the_installed_wheel(colab):
    python, work, env = colab
    where = _run([str(python), "-c", "import fmuia_lib, fmuia_lib.profiles as p; print(fmuia_lib.__file__); "
                  "print(p.list_profiles())"], cwd=work, env=env)
    assert where.returncode == 0, where.stderr
    module, shipped = where.stdout.splitlines()
    assert Path(module).is_relative_to(python.parent.parent), module
    assert "lib/python" in module and "site-packages/fmuia_lib/__init__.py" in module
    assert PROFILE in shipped and "cpu-smoke" in shipped


def _papermill(colab, notebook: str, **parameters) -> tuple[bool, nbformat.NotebookNode]:
    """Execute one notebook with papermill in a fresh kernel of the fresh environment, working
    folder the temporary one; the profile is its one parameter (``parameters`` add to it).
    Returns (whether it ran to the end, the executed notebook)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    python, work, env = colab
    executed = work / "executed"
    executed.mkdir(exist_ok=True)
    target = executed / f"{notebook}_{len(list(executed.glob(f'{notebook}_*.ipynb')))}.ipynb"
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "JUPYTER_RUNTIME_DIR", RUN_DIR_VARIABLE)}
    os.environ.update({k: env[k] for k in saved if k in env})  # where jupyter_client finds the kernel
    # The kernel inherits this process's environment: a Colab VM has no run-folder variable
    # (the test session sets one for its own notebooks), so the notebooks use their default.
    os.environ.pop(RUN_DIR_VARIABLE, None)
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        assert KernelSpecManager().get_kernel_spec("python3").argv[0] == str(python)
        pm.execute_notebook(str(work / f"{notebook}.ipynb"), str(target), kernel_name="python3",
                            parameters={"profile": PROFILE, **parameters}, cwd=str(work), progress_bar=False)
        ok = True
    except PapermillExecutionError:
        ok = False
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return ok, nbformat.read(str(target), as_version=4)


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") + output.get("data", {}).get("text/plain", ""))
            if output.output_type == "error":
                parts.append(f"{output.ename}: {output.evalue}")
    return "\n".join(parts)


def _errors(nb) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]


def test_the_series_runs_one_notebook_at_a_time_from_the_wheel(colab):
    python, work, env = colab
    run_dir = work / "runs" / "notebooks" / PROFILE  # the default run folder: one per profile
    started = time.perf_counter()
    timings = {}

    for notebook in ("04_error_analysis", "05_submission"):  # before 03: nothing to analyse yet
        tick = time.perf_counter()
        ok, executed = _papermill(colab, notebook)
        timings[f"{notebook} (no checkpoint)"] = time.perf_counter() - tick
        assert not ok, f"{notebook} ran without a checkpoint"
        (error,) = _errors(executed)
        assert error.startswith("RunSetupError: no checkpoint at") and CHECKPOINT_HINT in error, error
        assert f"papermill 03_multitask_training.ipynb out.ipynb -p profile {PROFILE} -p run_dir {run_dir}" in error
        assert not (run_dir / "checkpoint.pt").exists()

    tick = time.perf_counter()  # 03 loses its connection after 10 of its 20 steps ...
    ok, executed = _papermill(colab, "03_multitask_training", overrides={"stop_at_step": 10})
    assert ok, _errors(executed)
    last = run_dir / "train" / "checkpoints" / "last.pt"
    assert last.is_file() and (run_dir / "checkpoint.pt").is_file()
    ok, executed = _papermill(colab, "03_multitask_training")  # ... and is run again
    timings["03_multitask_training (stopped, then resumed)"] = time.perf_counter() - tick
    assert ok, _errors(executed)
    text = _text(executed)
    assert f"resuming from {last}: step 10 of 20" in text, text[-3000:]
    assert "checkpoint for notebooks 04 and 05" in text and "profile ci-tiny" in text

    for notebook in ("01_dataset_exploration", "02_head_design", "04_error_analysis", "05_submission",
                     "06_experiments"):
        tick = time.perf_counter()
        ok, executed = _papermill(colab, notebook)
        timings[notebook] = time.perf_counter() - tick
        assert ok and not _errors(executed), f"{notebook}: {_errors(executed)}"
        assert "profile   ci-tiny" in _text(executed)

    metrics = {p.stem for p in (run_dir / "metrics").glob("*.csv")}
    assert metrics == {"03_multitask_training", "04_error_analysis", "05_submission", "06_experiments"}
    report = nbformat.read(str(next((work / "executed").glob("05_submission_1.ipynb"))), as_version=4)
    assert "0 problem(s): the submission is complete and well formed" in _text(report)
    explorer = nbformat.read(str(next((work / "executed").glob("04_error_analysis_1.ipynb"))), as_version=4)
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for c in explorer.cells for o in c.get("outputs", [])), "the explorer widget was not displayed"
    total = time.perf_counter() - started
    print("\n" + "\n".join(f"  {k:<48} {v:6.1f} s" for k, v in timings.items()) + f"\n  {'all notebooks':<48} {total:6.1f} s")


def test_a_training_notebook_s_setup_mounts_drive_and_asks_for_a_gpu(colab):
    """03's setup cell, as on Colab: the wheel again from the working folder (already there:
    pip leaves it), Google Drive mounted for the run folder, and on this CPU a word about the GPU."""
    import torch

    python, work, env = colab
    setup = _colab_setup(python, work, work.parent, "03_multitask_training")
    assert setup.returncode == 0, setup.stderr
    assert "colab: mount /content/drive" in setup.stdout and "colab: widgets" in setup.stdout, setup.stdout
    assert ("wants a GPU" in setup.stdout) == (not torch.cuda.is_available()), setup.stdout
