"""What every test folder shares (tests/ and the notebooks under nbval).

**One series run folder per test session.** The notebooks nbval executes keep their files in
the folder ``$FMUIA_RUN_DIR`` names (``fmuia_lib.runner.run_folder.default_run_dir``); this session
points it at a fresh temporary folder, so a test never reads a run left by an earlier
session or by a person's own work in ``runs/notebooks``. pytest-xdist's workers inherit it.

**One cpu-smoke training per session** (:func:`series_run`): notebook 03's run, trained once in
that folder, whichever process asks first (a file lock), by the tests that need a trained
model (the ``series_run`` fixture) and before nbval executes notebooks 03-05. Notebook 03
then finds the finished run with its own config and uses it
(``run_folder.resume_if_interrupted``) instead of training it a second time.

**Scheduling for ``pytest -n 2``** (the Makefile's ``make test``): the tests that wait for
the cpu-smoke run go last, the training and the longest independent tests first, so the
two workers are busy while it trains (run with ``--dist loadfile --no-loadscope-reorder``).

**nbval's wait for a cell's output**: nbval gives a kernel 5 s (a constant, no option) to
send a cell's output after the cell has finished; on a loaded machine a plot can take
longer, failing the cell with "Timeout of 5 seconds exceeded waiting for output". It is
raised to :data:`NBVAL_OUTPUT_TIMEOUT_S`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent
NBVAL_OUTPUT_TIMEOUT_S = 120
#: Notebooks that read the series' trained model (03 resumes the finished run).
NEEDS_SERIES_RUN = ("03_multitask_training", "04_error_analysis", "05_submission")
#: Test files by how long they run, longest first: handed out first under pytest-xdist.
LONG_FIRST = ("tests/test_colab.py", "notebooks/06_experiments.ipynb", "tests/test_runner.py",
              "tests/test_phantom_learnability.py", "tests/test_real.py", "notebooks/01_dataset_exploration.ipynb",
              "notebooks/02_head_design.ipynb", "tests/test_notebooks.py", "tests/test_losses.py",
              "tests/test_sturdy_training.py", "tests/test_train.py", "tests/test_official_recipe.py")
_OWN_RUN_DIR = "FMUIA_TEST_OWNS_RUN_DIR"


def pytest_configure(config) -> None:
    from fmuia_lib.runner.run_folder import RUN_DIR_VARIABLE

    if not os.environ.get("PYTEST_XDIST_WORKER"):  # the session's main process: workers inherit
        os.environ[RUN_DIR_VARIABLE] = tempfile.mkdtemp(prefix="fmuia-series-")
        os.environ[_OWN_RUN_DIR] = os.environ[RUN_DIR_VARIABLE]
    # kernels, workers and subprocesses compute on one thread each: several share the cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_unconfigure(config) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(_OWN_RUN_DIR):
        shutil.rmtree(os.environ.pop(_OWN_RUN_DIR), ignore_errors=True)


def _notebook(item) -> str | None:
    """The notebook an nbval cell belongs to (its stem), or None for other tests."""
    path = Path(str(getattr(item, "fspath", "")))
    return path.stem if path.suffix == ".ipynb" else None


def _needs_series_run(item) -> bool:
    return _notebook(item) in NEEDS_SERIES_RUN or "series_run" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(session, config, items) -> None:
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:
        IPyNbCell = ()
    for item in items:
        if isinstance(item, IPyNbCell):
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S

    def rank(item) -> tuple[int, int]:
        file = Path(str(item.fspath)).resolve().relative_to(REPO_ROOT).as_posix()
        if _notebook(item) == NEEDS_SERIES_RUN[0]:
            return 0, 0  # starts the training
        if _needs_series_run(item):
            return 3, 0
        if file in LONG_FIRST:
            return 1, LONG_FIRST.index(file)
        return 2, 0

    files = {}
    for item in items:  # a file's rank is that of its most waiting test
        files[item.fspath] = max(files.get(item.fspath, (0, 0)), rank(item))
    items.sort(key=lambda item: files[item.fspath])  # stable: the order within a file is kept


def series_run() -> Path:
    """The session's series run folder, holding notebook 03's finished cpu-smoke run
    (``train/``) and the checkpoint it hands to 04 and 05 (``checkpoint.pt``): what
    notebook 03 run with its defaults does, done once per folder."""
    from filelock import FileLock

    from fmuia_lib import profiles
    from fmuia_lib.runner import run_folder
    from fmuia_lib.training import train

    paths = run_folder.run_paths(None, "cpu-smoke")
    paths.root.mkdir(parents=True, exist_ok=True)
    with FileLock(paths.root / ".series-run.lock"):
        if paths.checkpoint.is_file():
            return paths.root
        settings = profiles.run_settings("cpu-smoke", run_dir=paths.root)  # notebook 03's parameters
        run_folder.prepare_data(settings)
        result = train(run_folder.resume_if_interrupted(settings.config), progress=False)
        run_folder.hand_over_checkpoint(result.best_checkpoint, paths, settings)
    return paths.root


@pytest.fixture(scope="session", name="series_run")
def series_run_fixture() -> Path:
    """The series run folder with notebook 03's trained cpu-smoke run (:func:`series_run`)."""
    return series_run()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def pytest_runtest_setup(item) -> None:
    if _notebook(item) in NEEDS_SERIES_RUN:
        series_run()
