"""Run the notebook series headlessly: ``fmuia suite --profile NAME``.

A *profile* (``notebooks/profiles/NAME.yaml``) says which data to use, how to train and
any extra notebook parameters. The runner

1. prepares the data (generates the phantom or converts the real slice when missing),
2. executes ``notebooks/01_*.ipynb`` ... ``06_*.ipynb`` in order with papermill, giving
   each notebook only the parameters its ``parameters`` cell declares,
3. hands artefacts between notebooks through one folder (``OUT/artifacts``): notebook 03
   writes the checkpoint there, 04 and 05 read it; 04 writes per-task metrics,
4. writes the executed notebooks, an HTML export of each and ``summary_metrics.csv``,
5. stops at the first failing cell and says which notebook and cell failed.

The same module holds the steps notebooks share (finding the project folder, preparing
data, checking that data and weights exist, training a quick checkpoint when a notebook
runs on its own), so that a notebook run by hand and one run here behave the same.
"""
from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import yaml

from fmuia_lib.tasks import load_manifest

#: Parameters every notebook declares (where its data is, where artefacts go); the runner
#: fills them, and the profile's training fields, from the profile and --data/--out.
COMMON_PARAMETERS = ("profile", "data_dir", "data_source", "data_seed", "phantom_train",
                     "phantom_val", "real_src", "run_dir")
#: Where notebooks run by hand (or by nbval) keep their artefacts, relative to the project.
DEFAULT_RUN_DIR = "runs/notebooks"
CHECKPOINT_NAME = "checkpoint.pt"
#: Tidy metric tables that notebooks write for the runner: RUN_DIR/metrics/<notebook>.csv
METRICS_DIR = "metrics"


class SuiteError(RuntimeError):
    """A short, explained problem (missing data, weights, checkpoint, failed notebook)."""


# -- where things are ---------------------------------------------------------------------
def project_root(start: str | Path | None = None) -> Path:
    """The fmuia checkout around ``start`` (default: the working folder), else ``start``.

    Notebooks run with their own folder as working folder (Jupyter, nbval) or with the
    project root (papermill from the runner); relative paths in parameters are read
    from the project root in both cases, and from the working folder elsewhere (Colab).
    """
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "data_manifest.csv").is_file() and (folder / "fmuia_lib").is_dir():
            return folder
    return start


def resolve(path: str | Path) -> Path:
    """``path`` made absolute against :func:`project_root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (project_root() / path).resolve()


def notebooks_dir() -> Path:
    folder = project_root() / "notebooks"
    if not folder.is_dir():
        raise SuiteError(f"no notebooks/ folder under {project_root()}: run the suite from an fmuia checkout")
    return folder


def notebook_paths(selection: list[str] | None = None) -> list[Path]:
    """The series in order; ``selection`` picks by number (``"3"``, ``"03"``) or name."""
    paths = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return paths
    chosen = []
    for item in selection:
        key = item.removesuffix(".ipynb")
        hits = [p for p in paths if p.stem == key or p.stem.split("_", 1)[0] == key.zfill(2)]
        if not hits:
            raise SuiteError(f"no notebook {item!r}; the series is: {', '.join(p.stem for p in paths)}")
        chosen.extend(h for h in hits if h not in chosen)
    return sorted(chosen)


# -- checks with short explanations ----------------------------------------------------------
def check_data_root(root: str | Path, what: str = "data root") -> Path:
    """Return ``root`` if it holds ``csv_files/*.csv``; else raise an explained SuiteError."""
    root = resolve(root)
    if not root.exists():
        raise SuiteError(f"{what} {root} does not exist. Pass --data (the runner) or data_dir "
                         "(notebooks) pointing at a folder with train/ and val/ data roots, or "
                         "make the phantom with `fmuia data phantom --out runs/phantom`.")
    if not any((root / "csv_files").glob("*.csv")):
        raise SuiteError(f"{what} {root} has no csv_files/*.csv, so it is not in the challenge "
                         "layout (see docs/architecture.md); `fmuia data check ROOT` explains more.")
    return root


def check_encoder_weights(encoder: str, weights: str | None) -> None:
    """Raise an explained SuiteError when ``weights`` for ``encoder`` cannot be loaded.

    ``None`` (random initialisation) always passes. Otherwise the encoder is built once
    with those weights (from a local file, the local cache or the internet), so that a
    missing file or a machine without internet gives one clear sentence up front instead
    of a deep traceback in the middle of training.
    """
    if weights is None:
        return
    from fmuia_lib.model import PretrainedWeightsUnavailable, build_encoder

    try:
        build_encoder(encoder, str(resolve(weights)) if weights != "imagenet" else weights)
    except (PretrainedWeightsUnavailable, FileNotFoundError, ValueError) as exc:
        raise SuiteError(f"encoder weights {weights!r} for {encoder!r} cannot be loaded: "
                         f"{str(exc).splitlines()[0]}") from None


# -- data -----------------------------------------------------------------------------------
class DataRoots(NamedTuple):
    train: Path
    val: Path


def prepare_data(data_dir: str | Path, source: str = "phantom", *, data_seed: int = 0,
                 phantom_train: int = 8, phantom_val: int = 4,
                 real_src: str | Path = "../shared/real_us") -> DataRoots:
    """Make sure ``DATA_DIR/train`` and ``DATA_DIR/val`` exist, and return them.

    - ``source="phantom"``: generate the phantom there when it is missing or was made
      with another seed or size (it lives under runs/, so regenerating loses nothing);
    - ``source="real"``: convert the public slice at ``real_src`` when missing;
    - ``source="user"``: only check that both roots exist.
    """
    data_dir = resolve(data_dir)
    if source == "phantom":
        _ensure_phantom(data_dir, data_seed, phantom_train, phantom_val)
    elif source == "real":
        if not (data_dir / "train" / "csv_files").is_dir():
            src = resolve(real_src)
            if not src.is_dir():
                raise SuiteError(f"real-data source {src} not found: it should hold the public "
                                 "slices (BUSI/, HC18/, ...); see the README's data section.")
            from fmuia_lib.data.real import convert_real

            print(f"converting the real slice {src} -> {data_dir}")
            convert_real(src, data_dir, seed=data_seed)
    elif source != "user":
        raise SuiteError(f"data_source={source!r}: expected 'phantom', 'real' or 'user'")
    return DataRoots(check_data_root(data_dir / "train", "training data root"),
                     check_data_root(data_dir / "val", "validation data root"))


def _ensure_phantom(out: Path, seed: int, n_train: int, n_val: int) -> None:
    record = out / "phantom.json"
    if record.is_file():
        made = json.loads(record.read_text(encoding="utf-8"))
        counts = made.get("counts", {})
        if (made.get("seed") == seed and made.get("tasks") == list(load_manifest())
                and set(counts.get("train", {}).values()) == {n_train}
                and set(counts.get("val", {}).values()) == {n_val}):
            return
        print(f"{out} holds a phantom with other settings; regenerating it")
    from fmuia_lib.data.phantom import generate_phantom

    print(f"generating the phantom (seed {seed}, {n_train} train + {n_val} val images per task) in {out}")
    generate_phantom(out, seed=seed, n_train=n_train, n_val=n_val, overwrite=True)


# -- profiles --------------------------------------------------------------------------------
@dataclass
class Profile:
    """One ``notebooks/profiles/NAME.yaml``: data, training config and notebook extras."""

    name: str
    description: str
    data: dict[str, Any]  # source, dir, data_seed, phantom_train, phantom_val, real_src
    train: dict[str, Any]  # TrainConfig fields
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # stem -> extra parameters
    path: Path | None = None


def profiles_dir() -> Path:
    return notebooks_dir() / "profiles"


def list_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Read a profile by name (``cpu-smoke``) or YAML path; check its TrainConfig fields."""
    from fmuia_lib.config import TrainConfig

    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = profiles_dir() / f"{name_or_path}.yaml"
    path = resolve(path)
    if not path.is_file():
        raise SuiteError(f"profile {name_or_path!r} not found ({path}); known profiles: "
                         f"{', '.join(list_profiles())}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(raw) - {"name", "description", "data", "train", "notebooks"})
    if unknown:
        raise SuiteError(f"{path}: unknown top-level key(s) {unknown}")
    profile = Profile(name=raw.get("name", path.stem), description=raw.get("description", ""),
                      data=dict(raw.get("data") or {}), train=dict(raw.get("train") or {}),
                      notebooks={k: dict(v or {}) for k, v in (raw.get("notebooks") or {}).items()},
                      path=path)
    TrainConfig.from_dict(profile.train)  # an unknown or invalid field fails here, naming the key
    return profile


def shared_parameters(profile: Profile, run_dir: str | Path, data_dir: str | Path | None = None,
                      kernel_name: str = "python3") -> dict[str, Any]:
    """Parameters common to the series: data, artefact folder, training config (every
    TrainConfig field, as the profile's effective config gives it)."""
    from fmuia_lib.config import TrainConfig

    data = profile.data
    located = ("data_root", "val_root", "out_dir")  # from the data folder and run_dir unless the profile sets them
    train = {k: v for k, v in TrainConfig.from_dict(profile.train).to_dict().items()
             if k in profile.train or k not in located}
    return {
        "profile": profile.name,
        "data_dir": str(data_dir if data_dir is not None else data["dir"]),
        "data_source": "user" if data_dir is not None else data.get("source", "phantom"),
        "data_seed": data.get("data_seed", 0),
        "phantom_train": data.get("phantom_train", 8),
        "phantom_val": data.get("phantom_val", 4),
        "real_src": data.get("real_src", "../shared/real_us"),
        "run_dir": str(run_dir),
        "checkpoint_path": str(Path(run_dir) / CHECKPOINT_NAME),
        "submission_dir": str(Path(run_dir) / "submission"),
        "data_root": str(Path(data_dir if data_dir is not None else data["dir"]) / "train"),
        "val_root": str(Path(data_dir if data_dir is not None else data["dir"]) / "val"),
        "out_dir": str(Path(run_dir) / "train"),
        "kernel_name": kernel_name,
        **train,
    }


def notebook_parameters(profile: Profile, notebook: Path, run_dir: str | Path,
                        data_dir: str | Path | None = None, kernel_name: str = "python3") -> dict[str, Any]:
    """The parameters ``notebook`` declares, valued from the profile (extras win)."""
    values = {**shared_parameters(profile, run_dir, data_dir, kernel_name),
              **profile.notebooks.get(notebook.stem, {})}
    declared = declared_parameters(notebook)
    return {k: v for k, v in values.items() if k in declared}


def declared_parameters(notebook: str | Path) -> dict[str, Any]:
    """Name -> default value of the notebook's ``parameters`` cell (literals only)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SuiteError(f"{notebook}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    values: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            values[target.id] = ast.literal_eval(node.value)
    return values


def show_config(**values: Any) -> None:
    """Print a notebook's settings as YAML (what this run used, next to its outputs)."""
    print(yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in values.items()},
                         sort_keys=False).rstrip())


def train_config_from_parameters(values: dict[str, Any]):
    """A TrainConfig from a dict of notebook variables (keys that are not fields are ignored)."""
    import dataclasses

    from fmuia_lib.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig.from_dict({k: v for k, v in values.items() if k in names})


# -- artefacts for notebooks run on their own -----------------------------------------------
def ensure_checkpoint(checkpoint_path: str | Path, roots: DataRoots, profile: str = "cpu-smoke",
                      train_if_missing: bool = True) -> Path:
    """Return ``checkpoint_path``; when it is missing, train a quick one (the profile's recipe).

    Notebooks 04 and 05 use this so that each runs on its own: after notebook 03 the
    checkpoint is there; in a fresh checkout a short cpu-smoke training makes one.
    """
    path = resolve(checkpoint_path)
    if path.is_file():
        return path
    if not train_if_missing:
        raise SuiteError(f"checkpoint {path} not found: run notebook 03 (or `fmuia suite`) first, "
                         "or set train_if_missing=True")
    from fmuia_lib.training import train

    config = train_config_from_parameters(load_profile(profile).train).with_overrides(
        {"data_root": str(roots.train), "val_root": str(roots.val),
         "out_dir": str(path.parent / "quick_train")})
    print(f"{path} not found: training a quick checkpoint with the {profile} recipe")
    result = train(config, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.best_checkpoint, path)
    return path


def metrics_path(run_dir: str | Path, notebook_stem: str) -> Path:
    """Where a notebook writes its tidy metrics table for the runner's summary."""
    path = resolve(run_dir) / METRICS_DIR / f"{notebook_stem}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


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
              extra_parameters: dict[str, Any] | None = None, update_notebooks: bool = False) -> SuiteResult:
    """Execute the series under ``profile``; see the module docstring. Raises SuiteError.

    ``update_notebooks`` runs the notebooks with their own defaults (which are the
    cpu-smoke profile) and writes the executed notebooks back over the sources, so that
    the committed notebooks carry the outputs of a real run.
    """
    prof = load_profile(profile)
    out = resolve(out)
    run_dir = out / "artifacts"
    if update_notebooks:
        if prof.name != "cpu-smoke" or data is not None or extra_parameters:
            raise SuiteError("--update-notebooks runs the notebooks with their defaults, which are the "
                             "cpu-smoke profile: use it with --profile cpu-smoke and without --data")
        run_dir = resolve(DEFAULT_RUN_DIR)
    executed_dir, html_dir = out / "notebooks", out / "html"
    for folder in (run_dir, executed_dir, html_dir):
        folder.mkdir(parents=True, exist_ok=True)
    paths = notebook_paths(notebooks)
    (out / "profile.yaml").write_text(yaml.safe_dump(
        {"name": prof.name, "description": prof.description, "data": prof.data,
         "train": prof.train, "notebooks": prof.notebooks}, sort_keys=False), encoding="utf-8")

    # Prepare data once, up front, so a missing root fails before any notebook starts.
    user_data = resolve(data) if data is not None else None
    shared = shared_parameters(prof, run_dir, user_data, kernel)
    prepare_data(shared["data_dir"], shared["data_source"], data_seed=shared["data_seed"],
                 phantom_train=shared["phantom_train"], phantom_val=shared["phantom_val"],
                 real_src=shared["real_src"])

    timings: dict[str, float] = {}
    executed, exported = [], []
    for i, nb in enumerate(paths, 1):
        if update_notebooks:
            params: dict[str, Any] = {}
        else:
            params = notebook_parameters(prof, nb, run_dir, user_data, kernel)
            params.update({k: v for k, v in (extra_parameters or {}).items() if k in declared_parameters(nb)})
        target = executed_dir / nb.name
        print(f"[{i}/{len(paths)}] {nb.stem} ({prof.name})", flush=True)
        start = time.perf_counter()
        try:
            run_notebook(nb, target, params, kernel=kernel, progress=progress)
        except SuiteError:
            if html:
                exported.append(export_html(target, html_dir))
            raise
        timings[nb.stem] = time.perf_counter() - start
        executed.append(target)
        print(f"      done in {timings[nb.stem]:.1f} s -> {target}", flush=True)
        if html:
            exported.append(export_html(target, html_dir))
        if update_notebooks:
            shutil.copyfile(target, nb)

    summary = write_summary(run_dir, out / "summary_metrics.csv")
    (out / "timings.json").write_text(json.dumps(
        {**{k: round(v, 2) for k, v in timings.items()}, "total": round(sum(timings.values()), 2)},
        indent=2), encoding="utf-8")
    print(f"suite {prof.name}: {len(executed)} notebooks in {sum(timings.values()):.1f} s; "
          f"executed notebooks in {executed_dir}"
          + (f"; metrics in {summary}" if summary else ""))
    return SuiteResult(out, executed, exported, timings, summary)


def run_notebook(notebook: str | Path, target: str | Path, parameters: dict[str, Any],
                 kernel: str = "python3", progress: bool = False, quiet_kernel: bool = False) -> Path:
    """Execute one notebook of the series (by number, name or path) with papermill.

    Runs in the project folder, so relative paths mean the same as in the suite. On a
    failing cell raises SuiteError naming the notebook, the cell and the error; the
    executed notebook, error included, is at ``target``. ``quiet_kernel`` sends the
    kernel process's own stderr (start-up warnings) to /dev/null: use it when calling
    from inside a notebook, where that stream would land in the cell's output. Cell
    outputs and errors travel through the Jupyter protocol and are kept either way.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    source = Path(notebook) if Path(notebook).suffix == ".ipynb" else notebook_paths([str(notebook)])[0]
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _stderr_to_devnull(quiet_kernel):
            pm.execute_notebook(str(source), str(target), parameters=parameters, kernel_name=kernel,
                                progress_bar=progress, cwd=str(project_root()))
    except PapermillExecutionError as exc:
        raise SuiteError(f"{source.name} failed at cell {exc.cell_index} (execution count "
                         f"{exc.exec_count}): {exc.ename}: {str(exc.evalue)[:500]}\n"
                         f"executed notebook with the error: {target}") from None
    return target


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


def export_html(notebook: Path, html_dir: Path) -> Path:
    """Write ``html_dir/<notebook>.html`` with nbconvert's HTML exporter."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
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
    """``fmuia suite``: run the series; exit 1 naming the notebook and cell on failure."""
    try:
        run_suite(args.profile, data=args.data, out=args.out, notebooks=args.notebooks,
                  kernel=args.kernel, update_notebooks=args.update_notebooks)
    except SuiteError as exc:
        print(f"fmuia suite: {exc}", file=sys.stderr)
        return 1
    return 0
