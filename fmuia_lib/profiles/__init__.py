"""Profiles, and the one function that turns a profile and explicit overrides into a run's settings.

A profile is a YAML file with these keys::

    name: cpu-smoke
    description: one line
    data:                  # where the data comes from
      source: phantom      # "phantom" (generated when missing), "real" (converted when missing), "user"
      dir: runs/phantom    # holds the train/ and val/ data roots
      data_seed: 0         # seed of the phantom, or of the real slice's train/val split
      phantom_train: 8     # phantom images per subtask (default: the generator's)
      phantom_val: 4
      real_src: ../shared/real_us   # source "real": the public slices to convert
    train:                 # TrainConfig fields whose values differ from the library's defaults
      encoder: resnet18
    notebooks:             # per notebook, values for that notebook's own settings
      06_experiments: {sweep_steps: 16}
    seeds: [0, 1, 2]       # optional: the seeds of the profile's margin study (fmuia_lib.experiments.margins);
                           # the series itself trains once, with train.seed

The profiles fmuia ships live beside this file (``fmuia_lib/profiles/NAME.yaml``) and are
loaded by name; any other file is loaded by path. A plain mapping of TrainConfig fields (such
as the ``config.yaml`` a training run writes) reads as a profile with a train section only.

:func:`run_settings` is what every way of starting a run calls: ``fmuia train --config``,
``fmuia suite --profile`` and papermill (through the notebooks' parameters) and a notebook
opened by hand. The effective value of a TrainConfig field is, by precedence:
an explicit override, else the profile's ``train`` value, else the library default. Paths:
``out_dir`` is ``RUN_DIR/train`` when a run folder is given; ``data_root``/``val_root`` are
``DATA_DIR/train`` and ``DATA_DIR/val``, where DATA_DIR is a given data folder or else the
profile's ``data.dir`` (then a ``data_root`` in the profile's train section stands), unless
an override names them; a profile's ``val_root: null`` (validation split off the training
root) always stands.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from fmuia_lib.config import ConfigError, TrainConfig, _split_override

#: The training run inside a run folder (``run_dir/TRAINING_FOLDER`` is ``out_dir``).
TRAINING_FOLDER = "train"
PROFILE_KEYS = ("name", "description", "extends", "data", "train", "notebooks", "seeds")
DATA_KEYS = ("source", "dir", "data_seed", "phantom_train", "phantom_val", "real_src")
DATA_SOURCES = ("phantom", "real", "user")
#: TrainConfig fields holding paths; relative values are read from :func:`project_root`.
PATH_FIELDS = ("data_root", "val_root", "out_dir", "resume")
SHIPPED_DIR = Path(__file__).resolve().parent


class ProfileError(ConfigError):
    """A profile is missing or invalid; the message names the file and the key."""


# -- where relative paths are read from ---------------------------------------------------
def project_root(start: str | Path | None = None) -> Path:
    """The fmuia checkout around ``start`` (default: the working folder), else ``start``.

    Notebooks run with their own folder as working folder (Jupyter, nbval) or with the
    project root (the suite); relative paths are read from the project root in both cases,
    and from the working folder outside a checkout (Colab, an installed package).
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


# -- profiles -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSettings:
    """Where a run's data is and how it is made when missing."""

    source: str  #: "phantom" | "real" | "user" (only checked, never written)
    dir: Path  #: absolute; holds train/ and val/
    data_seed: int = 0
    phantom_train: int | None = None  #: None: the phantom generator's default
    phantom_val: int | None = None
    real_src: Path | None = None


@dataclass
class Profile:
    """One profile file: data, training config and notebook settings."""

    name: str
    description: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None
    seeds: list[int] | None = None  #: the margin study's seeds (fmuia_lib.experiments.margins.seed_study); None: train.seed

    def data_settings(self, data_dir: str | Path | None = None) -> DataSettings | None:
        """The profile's data, or ``data_dir`` used as it is (checked, never written)."""
        if data_dir is not None:
            return DataSettings(source="user", dir=resolve(data_dir))
        if not self.data:
            return None
        real_src = self.data.get("real_src")
        return DataSettings(source=self.data.get("source", "user"), dir=resolve(self.data["dir"]),
                            data_seed=int(self.data.get("data_seed", 0)),
                            phantom_train=self.data.get("phantom_train"),
                            phantom_val=self.data.get("phantom_val"),
                            real_src=resolve(real_src) if real_src is not None else None)


def list_profiles() -> list[str]:
    """Names of the profiles shipped with fmuia."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def profile_path(name_or_path: str | Path) -> Path:
    """The file of a shipped profile name, or a YAML path (working folder, then project root)."""
    text = str(name_or_path)
    if not text.endswith((".yaml", ".yml")) and "/" not in text and "\\" not in text:
        path = SHIPPED_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ProfileError(f"profile {text!r} not found; shipped profiles: {', '.join(list_profiles())} "
                               "(or give the path of a YAML file)")
        return path
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = path.resolve() if path.exists() else resolve(path)
    if not path.exists():
        raise ProfileError(f"profile file {path} not found")
    return path  # load_profile refuses a folder or a named pipe there


def load_profile(name_or_path: str | Path | Profile) -> Profile:
    """Read a profile by name (``cpu-smoke``) or path and check every section.

    ``extends: OTHER`` (a shipped name or a path) starts from profile OTHER: its ``data``,
    ``train`` and each notebook's settings are updated key by key with this profile's, and
    its ``seeds`` stand unless this profile gives its own. Raises :class:`ProfileError`
    naming the file and the key on anything unknown or invalid.
    """
    return _load_profile(name_or_path, ())


def _load_profile(name_or_path: str | Path | Profile, extending: tuple[Path, ...]) -> Profile:
    if isinstance(name_or_path, Profile):
        return name_or_path
    from fmuia_lib.paths import not_regular_problem

    path = profile_path(name_or_path)
    if path in extending:
        chain = " -> ".join(str(p) for p in (*extending, path))
        raise ProfileError(f"{path}: extends itself ({chain})")
    problem = not_regular_problem(path)
    if problem:  # a named pipe would block the reader
        raise ProfileError(f"profile file {path} {problem}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # binary, 5,000-digit integers, deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        raise ProfileError(f"{path}: cannot be read as a YAML text file: {reason}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: expected a mapping, got {type(raw).__name__}")
    if not {"data", "train", "notebooks", "extends"} & set(raw):  # a plain mapping of TrainConfig fields
        raw = {"name": path.stem, "train": raw}
    unknown = sorted(set(raw) - set(PROFILE_KEYS))
    if unknown:
        raise ProfileError(f"{path}: unknown top-level key(s) {unknown}; a profile has {list(PROFILE_KEYS)}")
    sections = {key: raw.get(key) or {} for key in ("data", "train", "notebooks")}
    for key, value in sections.items():
        if not isinstance(value, dict):
            raise ProfileError(f"{path}: {key}: expected a mapping, got {type(value).__name__}")
    for notebook, values in sections["notebooks"].items():
        if values is not None and not isinstance(values, dict):
            raise ProfileError(f"{path}: notebooks.{notebook}: expected a mapping of settings")
    if raw.get("extends") is not None:
        if not isinstance(raw["extends"], str):
            raise ProfileError(f"{path}: extends={raw['extends']!r}: expected a profile name or path")
        beside = path.parent / raw["extends"]  # a path is read beside this profile first
        try:
            base = _load_profile(beside if beside.suffix in (".yaml", ".yml") and beside.is_file()
                                 else raw["extends"], (*extending, path))
        except ProfileError as exc:
            raise ProfileError(f"{path}: extends {raw['extends']}: {exc}") from None
        sections = {"data": {**base.data, **sections["data"]}, "train": {**base.train, **sections["train"]},
                    "notebooks": {k: {**base.notebooks.get(k, {}), **(sections["notebooks"].get(k) or {})}
                                  for k in (*base.notebooks, *sections["notebooks"])}}
        raw.setdefault("seeds", base.seeds)
    profile = Profile(name=str(raw.get("name", path.stem)), description=str(raw.get("description", "")),
                      data=dict(sections["data"]), train=dict(sections["train"]), path=path,
                      notebooks={k: dict(v or {}) for k, v in sections["notebooks"].items()},
                      seeds=_check_seeds(raw.get("seeds"), path))
    _check_data(profile)
    try:
        TrainConfig.from_dict(profile.train)
    except (ConfigError, TypeError) as exc:
        raise ProfileError(f"{path}: train: {exc}") from None
    return profile


def _check_seeds(seeds: Any, path: Path) -> list[int] | None:
    if seeds is None:
        return None
    if (not isinstance(seeds, list) or not seeds
            or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds)):
        raise ProfileError(f"{path}: seeds={seeds!r}: expected a non-empty list of non-negative integers")
    if len(set(seeds)) != len(seeds):
        raise ProfileError(f"{path}: seeds={seeds!r}: a seed is listed twice")
    return list(seeds)


def _check_data(profile: Profile) -> None:
    data, where = profile.data, f"{profile.path}: data"
    if not data:
        return
    unknown = sorted(set(data) - set(DATA_KEYS))
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {unknown}; expected some of {list(DATA_KEYS)}")
    if data.get("source", "user") not in DATA_SOURCES:
        raise ProfileError(f"{where}.source={data['source']!r}: expected one of {DATA_SOURCES}")
    if "dir" not in data:
        raise ProfileError(f"{where}: 'dir' is missing (the folder that holds train/ and val/)")
    for key in ("dir", "real_src"):
        value = data.get(key)
        if key in data and (not isinstance(value, str) or not value.strip()):
            raise ProfileError(f"{where}.{key}={value!r}: expected a folder path")
    for key in ("data_seed", "phantom_train", "phantom_val"):
        value = data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ProfileError(f"{where}.{key}={value!r}: expected a non-negative integer")
    if data.get("source") == "real" and "real_src" not in data:
        raise ProfileError(f"{where}: source 'real' needs real_src (the folder of public slices)")


# -- the effective settings of a run --------------------------------------------------------
@dataclass
class RunSettings:
    """A run's effective settings: the TrainConfig, the data, and where each value came from."""

    profile: Profile
    config: TrainConfig
    data: DataSettings | None
    run_dir: Path | None
    sources: dict[str, str]  #: TrainConfig field -> who set it ("profile NAME", "override", ...)

    def table(self):
        """Every TrainConfig field whose value differs from the library default: value,
        default and where the value came from (a pandas DataFrame indexed by field)."""
        import pandas as pd

        defaults = TrainConfig().to_dict()
        rows = [{"field": name, "value": _show(value), "default": _show(defaults[name]),
                 "from": self.sources.get(name, f"profile {self.profile.name} (implied)")}
                for name, value in self.config.to_dict().items() if value != defaults[name]]
        return pd.DataFrame(rows, columns=["field", "value", "default", "from"]).set_index("field")

    def notebook_settings(self, notebook: str, given: Mapping[str, Any],
                          defaults: Mapping[str, Any]) -> dict[str, Any]:
        """Values of ``notebook``'s own settings: each one ``given`` (not None) wins, else
        the profile's ``notebooks: NOTEBOOK:`` value, else ``defaults``. A given value is
        read as its default's type (:func:`notebook_value`: papermill's ``-p`` passes a dict
        or list as text)."""
        section = self.profile.notebooks.get(notebook, {})
        given = {key: value if defaults.get(key) is None else notebook_value(key, value, type(defaults[key]))
                 for key, value in given.items()}
        unknown = sorted(set(section) - set(given))
        if unknown:
            raise ProfileError(f"profile {self.profile.name}: notebooks.{notebook}: unknown setting(s) "
                               f"{unknown}; {notebook} has {sorted(given)}")
        chosen = {}
        for key, value in given.items():
            if value is not None:
                chosen[key] = value
            elif key in section:
                chosen[key] = section[key]
            else:
                chosen[key] = defaults.get(key)
        return chosen


def _show(value: Any) -> Any:
    return str(value) if isinstance(value, (dict, list, tuple)) else value


#: What a notebook parameter of each kind may be given as, for :func:`notebook_value`'s messages.
_KINDS = {dict: "a mapping, e.g. '{\"max_steps\": 200}'", list: "a list, e.g. '[0, 1, 2]'",
          bool: "true or false", int: "an integer", float: "a number", str: "a text"}


def notebook_value(name: str, value: Any, kind: type) -> Any:
    """A notebook parameter ``name`` as the notebook uses it: ``value`` of type ``kind``.

    papermill's ``-p NAME VALUE`` passes a dict or a list as the text the user typed
    (``-p overrides '{"max_steps": 200}'``); that text is read as YAML (JSON is YAML) and must
    give a ``kind``. ``-y``/``-f`` (YAML) and values set in the notebook arrive typed. None
    stays None (the notebook's "use the default"). A list parameter also takes one word as
    it is (``-p phantom_tasks all``), for the notebook to read. Anything else raises
    :class:`ProfileError` naming the parameter, what it got and what it takes.
    """
    if value is None or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    if kind is dict and isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ProfileError(f"parameter {name}: {value!r} is not JSON or YAML "
                               f"({str(exc).splitlines()[0]}); it takes {_KINDS.get(kind, kind.__name__)}") from None
        if value.strip().lower() in ("", "none", "null", "~"):
            return None
        if kind is float and isinstance(parsed, str):  # YAML 1.1 reads 1e-3 as text
            try:
                return float(parsed)
            except ValueError:
                pass
        if isinstance(parsed, kind) and not (kind is int and isinstance(parsed, bool)):
            return parsed
        if kind is float and isinstance(parsed, int) and not isinstance(parsed, bool):
            return float(parsed)
        if kind is list and isinstance(parsed, str):
            return parsed
        value = parsed
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ProfileError(f"parameter {name}: got {type(value).__name__} {value!r}; it takes "
                       f"{_KINDS.get(kind, kind.__name__)} (with papermill: -p {name} 'VALUE' or -y "
                       f"'{name}: VALUE')")


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=3e-4", "loss_weights.detection=2"]`` -> a dict (values read as YAML scalars)."""
    return dict(_split_override(item) for item in items)


def run_settings(profile: str | Path | Profile, overrides: Mapping[str, Any] | None = None, *,
                 data_dir: str | Path | None = None, run_dir: str | Path | None = None,
                 device: str | None = None) -> RunSettings:
    """The effective settings of a run of ``profile`` with explicit ``overrides``.

    ``overrides`` maps TrainConfig fields to values (``"loss_weights.detection"`` sets one
    entry of a dict field); its JSON or YAML text (papermill's ``-p overrides '{...}'``) is
    read as that mapping (:func:`notebook_value`). ``data_dir`` replaces the profile's data (used as it is);
    ``run_dir`` is the folder the run's files go to (``out_dir`` = ``run_dir/train``);
    ``device`` (when not None) sets the device. Raises :class:`ProfileError` naming the
    profile and the field.
    """
    overrides = notebook_value("overrides", overrides, dict)
    prof = load_profile(profile)
    origin = f"profile {prof.name}"
    values: dict[str, Any] = dict(prof.train)
    sources = {name: origin for name in values}
    defaults = TrainConfig().to_dict()
    for key, value in (overrides or {}).items():
        name, _, entry = str(key).partition(".")
        if entry:
            base = values.get(name, defaults.get(name))
            if not isinstance(base, dict):
                raise ProfileError(f"override {key}: {name!r} is not a dict field of TrainConfig")
            values[name] = {**base, entry: value}
        else:
            values[name] = value
        sources[name] = "override"
    if overrides:  # an overridden run length clears the profile's other one (config._clear_other_length)
        from fmuia_lib.config import _clear_other_length

        _clear_other_length(values, {str(key) for key in overrides})
    if device is not None:
        values["device"], sources["device"] = device, "device"
    data = prof.data_settings(data_dir)
    if data is not None:
        from fmuia_lib.data.layout import SPLIT_FOLDERS

        for name, split in zip(("data_root", "val_root"), SPLIT_FOLDERS):
            if sources.get(name) == "override":
                continue
            # the profile's own path stands unless a data_dir is given; its `val_root: null`
            # (validation split off the training root) stands either way
            if name in prof.train and (data_dir is None or prof.train[name] is None):
                continue
            values[name] = str(data.dir / split)
            sources[name] = "data_dir" if data_dir is not None else f"{origin} (data.dir)"
    if run_dir is not None and sources.get("out_dir") != "override":
        values["out_dir"], sources["out_dir"] = str(resolve(run_dir) / TRAINING_FOLDER), "run_dir"
    for name in PATH_FIELDS:  # only real paths: anything else is left for TrainConfig.validate to name
        if isinstance(values.get(name), str) and values[name].strip():
            values[name] = str(resolve(values[name]))
    try:
        config = TrainConfig.from_dict(values)
    except (ConfigError, TypeError) as exc:
        where = f"profile {prof.name}" if prof.path is not None else "the library defaults"
        given = " with overrides" if overrides else ""
        raise ProfileError(f"{where}{given}: {exc}") from None
    return RunSettings(prof, config, data, resolve(run_dir) if run_dir is not None else None, sources)


def train_config(config: str | Path | None, overrides: Iterable[str] = (), resume: str | None = None) -> TrainConfig:
    """``fmuia train --config NAME_OR_PATH --set KEY=VALUE ... --resume CKPT``: the TrainConfig.

    Without ``--config`` the library defaults are the profile.
    """
    values = parse_overrides(overrides)
    if resume:
        values["resume"] = resume
    return run_settings(load_profile(config) if config else Profile(name="defaults"), values).config
