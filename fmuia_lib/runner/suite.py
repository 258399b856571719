"""Run the notebook series headlessly: ``fmuia suite --profile NAME``.

The suite

1. loads the profile and prepares its data once, up front (generates the phantom or converts
   the real slice when missing, then checks both data roots as ``fmuia data check`` does),
2. executes ``notebooks/01_*.ipynb`` ... ``06_*.ipynb`` in order with papermill, giving each
   notebook ``profile``, ``run_dir``, ``data_dir`` and ``overrides`` (those it declares, read
   with ``papermill.inspect_notebook``); each notebook builds its settings from them with
   :func:`fmuia_lib.profiles.run_settings`, as it does when opened by hand,
3. hands artefacts between notebooks through one run folder (``OUT/artifacts``, see
   :mod:`fmuia_lib.runner.run_folder`),
4. writes the executed notebooks, an HTML export of each and ``summary_metrics.csv``,
5. stops at the first failing cell and says which notebook and cell failed.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from fmuia_lib import publishing
from fmuia_lib.config import ConfigError, check_runnable
from fmuia_lib.profiles import SHIPPED_DIR, Profile, load_profile, project_root, run_settings
from fmuia_lib.progress import _LogLines, logging_output
from fmuia_lib.runner.run_folder import (LOCAL_RUN_DIR, METRICS_DIR, RunSetupError, check_data_root, in_colab,
                              prepare_data)

#: Where a notebook of the series is fetched from on Colab, where only the open notebook is on
#: disk: the published repository's (``fmuia_lib.publishing``); None while unpublished.
NOTEBOOKS_URL = publishing.notebooks_url()


class NotebookFailed(RunSetupError):
    """A cell of a notebook raised; the message names the notebook, the cell and the error."""


# -- the notebooks ----------------------------------------------------------------------------
def notebooks_dir() -> Path:
    folder = project_root() / "notebooks"
    if not folder.is_dir():
        raise RunSetupError(f"no notebooks/ folder under {project_root()}: run the suite from an fmuia checkout")
    return folder


def notebook_paths(selection: list[str] | None = None) -> list[Path]:
    """The series in order; ``selection`` picks by number (``"3"``, ``"03"``) or name."""
    paths = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return paths
    chosen = []
    for item in selection:
        hits = [p for p in paths if _matches(p, item)]
        if not hits:
            raise RunSetupError(f"no notebook {item!r}; the series is: {', '.join(p.stem for p in paths)}")
        chosen.extend(h for h in hits if h not in chosen)
    return sorted(chosen)


def _matches(path: Path, key: str) -> bool:
    key = key.removesuffix(".ipynb")
    return path.stem == key or path.stem.split("_", 1)[0] == key.zfill(2)


def find_notebook(key: str, download_to: str | Path | None = None) -> Path:
    """Notebook ``key`` (``"03"`` or its name) of the series.

    Looked for in the checkout's ``notebooks/``, then in the working folder and its
    ``notebooks/``. On Colab, where only the open notebook is on disk, a notebook given by
    its full name (``"03_multitask_training"``) is downloaded from the repository into
    ``download_to``.
    """
    folders = [project_root() / "notebooks", Path.cwd(), Path.cwd() / "notebooks"]
    for folder in folders:
        hits = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if _matches(p, key))
        if hits:
            return hits[0]
    name = f"{key.removesuffix('.ipynb')}.ipynb"
    if in_colab() and download_to is not None and "_" in name and NOTEBOOKS_URL:
        import urllib.request

        target = Path(download_to) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        urllib.request.urlretrieve(NOTEBOOKS_URL + name, target)
        return target
    raise RunSetupError(f"notebook {key!r} not found in {', '.join(map(str, folders))}: put the series' "
                     "notebooks in the working folder, or run from an fmuia checkout")


def declared_parameters(notebook: str | Path) -> dict[str, dict[str, Any]]:
    """The parameters ``notebook`` declares: name -> papermill's description (``default``
    as source text, ``help`` from the comment). Exactly one cell must be tagged."""
    import nbformat
    import papermill as pm

    nb = nbformat.read(str(notebook), as_version=4)
    tagged = sum("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells)
    if tagged != 1:
        raise RunSetupError(f"{notebook}: expected exactly one cell tagged 'parameters', found {tagged}")
    return dict(pm.inspect_notebook(str(notebook)))


def notebook_parameters(profile: str | Path, notebook: Path, run_dir: str | Path,
                        data_dir: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                        kernel_name: str = "python3") -> dict[str, Any]:
    """What the suite gives ``notebook``: the profile, the run folder, the data folder and
    overrides (when given), the kernel; only the parameters the notebook declares."""
    values: dict[str, Any] = {"profile": str(profile), "run_dir": str(run_dir), "kernel_name": kernel_name}
    if data_dir is not None:
        values["data_dir"] = str(data_dir)
    if overrides:
        values["overrides"] = dict(overrides)
    declared = declared_parameters(notebook)
    return {k: v for k, v in values.items() if k in declared}


def check_notebook_settings(profile: Profile, paths: list[Path]) -> None:
    """Each ``notebooks:`` entry of the profile names a notebook of the series and settings
    that notebook declares."""
    stems = {p.stem: p for p in notebook_paths()}
    for stem, values in profile.notebooks.items():
        if stem not in stems:
            raise RunSetupError(f"{profile.path}: notebooks.{stem}: no such notebook; the series is "
                             f"{', '.join(stems)}")
        unknown = sorted(set(values) - set(declared_parameters(stems[stem])))
        if unknown:
            raise RunSetupError(f"{profile.path}: notebooks.{stem}: {unknown} are not parameters of {stem}")


# -- the suite -------------------------------------------------------------------------------
@dataclass
class SuiteResult:
    out: Path
    executed: list[Path]
    html: list[Path]
    timings: dict[str, float]
    summary_csv: Path | None


def run_suite(profile: str | Path = "cpu-smoke", data: str | Path | None = None,
              out: str | Path = "runs/suite", notebooks: list[str] | None = None,
              kernel: str = "python3", html: bool = True, progress: bool = True,
              overrides: Mapping[str, Any] | None = None, update_notebooks: bool = False) -> SuiteResult:
    """Execute the series under ``profile``; see the module docstring.

    Raises :class:`fmuia_lib.profiles.ProfileError` (a ConfigError) for a bad profile or
    override, RunSetupError for missing data, :class:`NotebookFailed` for a failing cell.
    ``update_notebooks`` runs the notebooks with their own defaults (the cpu-smoke profile)
    and writes the executed notebooks back over the sources, so that the committed notebooks
    carry the outputs of a real run.
    """
    prof = load_profile(profile)
    out = Path(out).expanduser().resolve()
    run_dir = out / "artifacts"
    if update_notebooks:
        if prof.name != "cpu-smoke" or data is not None or overrides:
            raise RunSetupError("--update-notebooks runs the notebooks with their defaults, which are the "
                             "cpu-smoke profile: use it with --profile cpu-smoke, without --data or --set")
        from fmuia_lib.profiles import resolve
        from fmuia_lib.runner.run_folder import default_run_dir

        run_dir = resolve(default_run_dir(prof))  # where the notebooks' defaults put their files
    paths = notebook_paths(notebooks)
    check_notebook_settings(prof, paths)
    _check_kernel(kernel)

    # Prepare and check the data once, up front, so bad data fails before any notebook starts.
    settings = run_settings(prof, overrides, data_dir=data, run_dir=run_dir)
    _check_out(out, settings)
    roots = prepare_data(settings)
    _validate_roots(roots)
    check_runnable(settings.config)  # device, encoder, weights: before any notebook starts

    executed_dir, html_dir = out / "notebooks", out / "html"
    for folder in (run_dir, executed_dir, html_dir):
        folder.mkdir(parents=True, exist_ok=True)
    (out / "profile.yaml").write_text(yaml.safe_dump(
        {"name": prof.name, "description": prof.description, "data": prof.data,
         "train": prof.train, "notebooks": prof.notebooks, "overrides": dict(overrides or {})},
        sort_keys=False), encoding="utf-8")
    exporter = _html_exporter() if html else None
    # a shipped profile travels by name, any other by its path
    given_profile = prof.name if prof.path is None or prof.path.parent == SHIPPED_DIR else prof.path

    timings: dict[str, float] = {}
    executed, exported = [], []
    for i, nb in enumerate(paths, 1):
        params = {} if update_notebooks else notebook_parameters(
            given_profile, nb, run_dir, data_dir=settings.data.dir if data is not None else None,
            overrides=overrides, kernel_name=kernel)
        target = executed_dir / nb.name
        print(f"[{i}/{len(paths)}] {nb.stem} ({prof.name})", flush=True)
        start = time.perf_counter()
        try:
            run_notebook(nb, target, params, kernel=kernel, progress=progress)
        except NotebookFailed:
            if exporter:
                exported.append(export_html(target, html_dir, exporter))
            raise
        timings[nb.stem] = time.perf_counter() - start
        executed.append(target)
        print(f"      done in {timings[nb.stem]:.1f} s -> {target}", flush=True)
        if exporter:
            exported.append(export_html(target, html_dir, exporter))
        if update_notebooks:
            shutil.copyfile(target, nb)

    summary = write_summary(run_dir, out / "summary_metrics.csv")
    (out / "timings.json").write_text(json.dumps(
        {**{k: round(v, 2) for k, v in timings.items()}, "total": round(sum(timings.values()), 2)},
        indent=2), encoding="utf-8")
    print(f"suite {prof.name}: {len(executed)} notebooks in {sum(timings.values()):.1f} s; "
          f"executed notebooks in {executed_dir}" + (f"; metrics in {summary}" if summary else ""))
    return SuiteResult(out, executed, exported, timings, summary)


def _check_kernel(kernel: str) -> None:
    """The Jupyter kernel the notebooks run in must be installed."""
    from jupyter_client.kernelspec import KernelSpecManager

    installed = sorted(KernelSpecManager().find_kernel_specs())
    if kernel not in installed:
        raise RunSetupError(f"--kernel {kernel!r}: no such Jupyter kernel; installed: {', '.join(installed) or 'none'}")


def _check_out(out: Path, settings) -> None:
    """The suite's output folder: a folder, not, inside or around a data root or the notebooks."""
    from fmuia_lib.paths import inside_data_root_problem, output_folder_problem

    folders = [(Path(r), "the data root") for r in (settings.config.data_root, settings.config.val_root) if r]
    if settings.data is not None:
        folders.append((settings.data.dir, "the data folder"))
    for folder, what in folders:
        problem = output_folder_problem(out, folder, name="--out", what=what)
        if problem:
            raise RunSetupError(problem)
    problem = inside_data_root_problem(out, "the suite's outputs")  # any data root, not only the run's
    if problem:
        raise RunSetupError(problem)


def _validate_roots(roots) -> None:
    """Every CSV row and file of the data roots, as ``fmuia data check`` does."""
    from fmuia_lib.data.layout import validate_root

    for root in (r for r in roots if r is not None):
        problems = validate_root(check_data_root(root))
        if problems:
            shown = "\n  ".join(map(str, problems[:10]))
            raise RunSetupError(f"data root {root} has {len(problems)} problem(s) "
                             f"(`fmuia data check {root}` lists them all):\n  {shown}")


def run_notebook(notebook: str | Path, target: str | Path, parameters: dict[str, Any],
                 kernel: str = "python3", progress: bool = False, quiet_kernel: bool = False) -> Path:
    """Execute one notebook of the series (by number, name or path) with papermill.

    Runs in the project folder (in a checkout; else the working folder), so relative paths
    mean the same as in the suite. On a failing cell raises :class:`NotebookFailed` naming
    the notebook, the cell and the error; the executed notebook, error included, is at
    ``target``. ``quiet_kernel`` sends the kernel process's own stderr (start-up warnings)
    to /dev/null: use it when calling from inside a notebook, where that stream would land
    in the cell's output. Cell outputs and errors travel through the Jupyter protocol and
    are kept either way.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    target = Path(target)
    source = Path(notebook) if Path(notebook).suffix == ".ipynb" else find_notebook(str(notebook), target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {}
    progress_bar: bool | dict[str, Any] = progress
    if progress and logging_output():  # a log, not a terminal: whole lines, as they come
        progress_bar = {"file": _LogLines(sys.stdout), "mininterval": 0, "miniters": 1, "ncols": 100,
                        "desc": f"      {source.stem}", "leave": True}
        extra["stdout_file"] = _Prefixed(sys.stdout, "      | ")  # what the notebook prints, training lines too
    try:
        with _stderr_to_devnull(quiet_kernel):
            pm.execute_notebook(str(source), str(target), parameters=parameters, kernel_name=kernel,
                                progress_bar=progress_bar, cwd=str(project_root()), **extra)
    except PapermillExecutionError as exc:
        raise NotebookFailed(f"{source.name} failed at cell {exc.cell_index} (execution count "
                             f"{exc.exec_count}): {exc.ename}: {str(exc.evalue)[:500]}\n"
                             f"executed notebook with the error: {target}") from None
    return target


class _Prefixed:
    """A text stream that writes each whole line to ``stream`` behind ``prefix``, flushed:
    a notebook's printed output relayed, as it comes, into the suite's log."""

    def __init__(self, stream, prefix: str) -> None:
        self.stream, self.prefix, self._partial = stream, prefix, ""

    def write(self, text: str) -> None:
        lines = (self._partial + text.replace("\r", "\n")).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self.stream.write(self.prefix + line.rstrip() + "\n")
        self.stream.flush()

    def flush(self) -> None:  # a partial line waits for its end
        self.stream.flush()


@contextlib.contextmanager
def _stderr_to_devnull(active: bool) -> Iterator[None]:
    """Point file descriptor 2 at /dev/null (inherited by child processes) while active."""
    if not active:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _html_exporter():
    """nbconvert's HTML exporter; None (and a note) when nbconvert is not installed."""
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        print("HTML export skipped: nbconvert is not installed (pip install 'fmuia[lab]')")
        return None
    return HTMLExporter()


def export_html(notebook: Path, html_dir: Path, exporter=None) -> Path:
    """Write ``html_dir/<notebook>.html`` with nbconvert's HTML exporter."""
    body, _ = (exporter or _html_exporter()).from_filename(str(notebook))
    target = html_dir / f"{notebook.stem}.html"
    target.write_text(body, encoding="utf-8")
    return target


def write_summary(run_dir: Path, target: Path) -> Path | None:
    """Concatenate the notebooks' tidy metric tables into one CSV (a ``notebook`` column added)."""
    import pandas as pd

    tables = []
    for csv_file in sorted((run_dir / METRICS_DIR).glob("*.csv")):
        table = pd.read_csv(csv_file)
        table.insert(0, "notebook", csv_file.stem)
        tables.append(table)
    if not tables:
        return None
    pd.concat(tables, ignore_index=True).to_csv(target, index=False)
    return target


def suite_main(args) -> int:
    """``fmuia suite``: run the series. Exit 2 for a bad profile, override or data (nothing
    ran), 1 naming the notebook and cell when a notebook fails."""
    from fmuia_lib.profiles import parse_overrides

    try:
        run_suite(args.profile, data=args.data, out=args.out, notebooks=args.notebooks, kernel=args.kernel,
                  overrides=parse_overrides(args.overrides), update_notebooks=args.update_notebooks)
    except NotebookFailed as exc:
        print(f"fmuia suite: {exc}", file=sys.stderr)
        return 1
    except (RunSetupError, ConfigError) as exc:
        from fmuia_lib.paths import one_line

        print(f"fmuia suite: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    return 0
