"""Profiles, run settings, the series' shared steps and the papermill suite.

The central contract: one function (``profiles.run_settings``) builds a run's TrainConfig,
and the four ways of starting a run (``fmuia train --config``, ``fmuia suite --profile``,
``papermill -p profile`` and a notebook opened by hand) give the same TrainConfig for every
shipped profile.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from fmuia_lib import cli, profiles
from fmuia_lib.runner import run_folder, suite
from fmuia_lib.config import ConfigError, TrainConfig
from fmuia_lib.sources.phantom import generate
from fmuia_lib.challenge.evaluate import validate_submission
from fmuia_lib.switches import FMUIA_RECIPE
from fmuia_lib.tasks import load_manifest
from conftest import TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]
REAL_SRC = ROOT.parent / "shared" / "real_us"
NB03 = ROOT / "notebooks" / "03_multitask_training.ipynb"


# -- profiles -------------------------------------------------------------------------------
def test_profiles_ship_inside_the_package():
    assert profiles.SHIPPED_DIR == ROOT / "fmuia_lib" / "profiles"
    assert set(profiles.list_profiles()) >= {"cpu-smoke", "gpu-full", "real-slice", "ci-tiny"}
    assert not (ROOT / "notebooks" / "profiles").exists()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"profiles/*.yaml"' in pyproject


@pytest.mark.parametrize("name", profiles.list_profiles())
def test_every_shipped_profile_is_valid(name):
    profile = profiles.load_profile(name)
    assert profile.name == name and profile.description
    assert profile.data["source"] in profiles.DATA_SOURCES
    config = profiles.run_settings(name).config
    assert (config.max_steps or config.epochs) > 0 and config.data_root.endswith("train")
    assert "device" not in profile.train, "the device is the machine's, not the recipe's"


def test_a_profile_loads_by_path_and_a_run_config_reads_as_a_profile(tmp_path):
    copy = tmp_path / "mine.yaml"
    copy.write_text((profiles.SHIPPED_DIR / "cpu-smoke.yaml").read_text())
    assert profiles.load_profile(copy).train == profiles.load_profile("cpu-smoke").train
    written = TrainConfig(epochs=None, max_steps=7, eval_every=7, lr=0.5).to_yaml(tmp_path / "config.yaml")
    profile = profiles.load_profile(written)
    expected = TrainConfig(epochs=None, max_steps=7, eval_every=7, lr=0.5, out_dir=str(profiles.resolve("runs/train")))
    assert profile.data == {} and profiles.run_settings(profile).config == expected


@pytest.mark.parametrize("text, message", [
    ("name: x\ndata: {source: phantom, dir: d}\ntrain: {learning_rate: 0.1}\n",
     r"bad.yaml: train: unknown TrainConfig field 'learning_rate'"),
    ("name: x\ndata: {source: web, dir: d}\n", r"bad.yaml: data.source='web'"),
    ("name: x\ndata: {source: phantom, folder: d}\n", r"bad.yaml: data: unknown key\(s\) \['folder'\]"),
    ("name: x\ndata: {source: phantom, dir: d, phantom_train: -1}\n", r"data.phantom_train=-1"),
    ("name: x\ntrain: {}\nextras: 1\n", r"bad.yaml: unknown top-level key\(s\) \['extras'\]"),
    ("name: x\ntrain: [1, 2]\n", r"bad.yaml: train: expected a mapping"),
    ("train: {lr: [\n", r"bad.yaml: not valid YAML"),
])
def test_a_bad_profile_is_explained(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(profiles.ProfileError, match=message):
        profiles.load_profile(bad)


def test_an_unknown_profile_lists_the_shipped_ones(tmp_path):
    with pytest.raises(profiles.ProfileError, match="shipped profiles: .*cpu-smoke"):
        profiles.load_profile("no-such-profile")
    with pytest.raises(profiles.ProfileError, match="not found"):
        profiles.load_profile(tmp_path / "missing.yaml")


def test_overrides_win_over_the_profile_which_wins_over_the_defaults(tmp_path):
    settings = profiles.run_settings("cpu-smoke", {"lr": 0.5, "loss_weights.detection": 3.0},
                                     run_dir=tmp_path / "run", device="cpu")
    config, smoke = settings.config, profiles.load_profile("cpu-smoke").train
    assert config.lr == 0.5 and config.encoder == smoke["encoder"] and config.weight_decay == TrainConfig().weight_decay
    assert config.loss_weights == {**TrainConfig().loss_weights, "detection": 3.0}  # one entry of a dict field
    assert config.device == "cpu" and config.out_dir == str(tmp_path / "run" / "train")
    assert config.data_root == str(profiles.resolve(profiles.load_profile("cpu-smoke").data["dir"]) / "train")
    table = settings.table()
    assert table.loc["lr", "from"] == "override" and table.loc["encoder", "from"] == "profile cpu-smoke"
    assert table.loc["out_dir", "from"] == "run_dir" and table.loc["device", "from"] == "device"
    assert "weight_decay" not in table.index, "only values that differ from the defaults are listed"


def test_a_data_dir_replaces_the_profile_data_and_is_never_written(tmp_path):
    settings = profiles.run_settings("cpu-smoke", data_dir=tmp_path / "mine")
    assert settings.data == profiles.DataSettings(source="user", dir=tmp_path / "mine")
    assert settings.config.data_root == str(tmp_path / "mine" / "train")
    assert settings.table().loc["data_root", "from"] == "data_dir"
    with pytest.raises(run_folder.RunSetupError, match="does not exist"):
        run_folder.prepare_data(settings)
    assert not (tmp_path / "mine").exists()


def test_explicit_paths_in_the_profile_or_overrides_are_kept(tmp_path):
    settings = profiles.run_settings("cpu-smoke", {"val_root": None, "out_dir": str(tmp_path / "o")},
                                     run_dir=tmp_path / "run")
    assert settings.config.val_root is None and settings.config.out_dir == str(tmp_path / "o")
    split = profiles.Profile(name="split", data={"source": "user", "dir": str(tmp_path / "d")},
                             train={"data_root": str(tmp_path / "p"), "val_root": None, "out_dir": str(tmp_path / "x")})
    config = profiles.run_settings(split).config
    assert (config.data_root, config.val_root, config.out_dir) == (str(tmp_path / "p"), None, str(tmp_path / "x"))
    config = profiles.run_settings(split, data_dir=tmp_path / "mine", run_dir=tmp_path / "run").config
    assert config.data_root == str(tmp_path / "mine" / "train") and config.val_root is None
    assert config.out_dir == str(tmp_path / "run" / "train"), "every path of a notebook derives from run_dir"


def test_a_bad_override_names_the_field():
    with pytest.raises(ConfigError, match="unknown TrainConfig field 'learning_rat'"):
        profiles.run_settings("cpu-smoke", {"learning_rat": 1})
    with pytest.raises(ConfigError, match="'lr' is not a dict field"):
        profiles.run_settings("cpu-smoke", {"lr.x": 1})


def test_notebook_settings_take_the_given_value_then_the_profile_then_the_default(tmp_path):
    settings = profiles.run_settings("gpu-full")
    names = ("grid_profile", "grid_overrides", "main_effects", "recipe", "all_but_one", "seeds", "phantom_tasks",
             "real_slice")
    knobs = settings.notebook_settings("06_experiments", given={**dict.fromkeys(names), "all_but_one": True},
                                       defaults={"seeds": [0], "all_but_one": False, "phantom_tasks": ["FUGC"],
                                                 "real_slice": False, "recipe": ["dice_ce"]})
    knobs = {k: knobs[k] for k in ("seeds", "all_but_one", "phantom_tasks", "real_slice", "recipe")}
    assert knobs == {"seeds": [0, 1, 2], "all_but_one": True, "phantom_tasks": "all", "real_slice": False,
                     "recipe": ["dice_ce"]}
    with pytest.raises(profiles.ProfileError, match=r"notebooks.06_experiments: unknown setting\(s\) \['grid_overrides', 'jobs', 'main_effects', 'phantom_tasks', 'real_slice', 'seeds'\]"):
        profiles.run_settings("ablation").notebook_settings("06_experiments", given={"all_but_one": None},
                                                            defaults={"all_but_one": False})


def test_phantom_sizes_live_in_the_profiles_only():
    """The Makefile and the CLI take sizes from a profile or the generator, never a copy."""
    makefile = (ROOT / "Makefile").read_text()
    assert "suite --profile cpu-smoke" in makefile and "--train" not in makefile and "--val" not in makefile
    args = cli.build_parser().parse_args(["data", "phantom", "--out", "x"])
    assert args.train is None and args.val is None


# -- the four ways of starting a run ----------------------------------------------------------
def _settings_statements(cell_source: str) -> str:
    """The settings cell's statements up to the one that binds ``config`` (the rest prepares
    data and prints, which is not what is compared here)."""
    tree = ast.parse(cell_source)
    for i, node in enumerate(tree.body):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "config" for t in node.targets):
            return ast.unparse(ast.Module(body=tree.body[:i + 1], type_ignores=[]))
    raise AssertionError("the settings cell binds no `config`")


def _notebook_03_config(parameters: dict | None = None, edits: dict | None = None) -> TrainConfig:
    """Notebook 03's TrainConfig as its kernel builds it: the parameters cell (``edits``
    applied to its lines, as a person editing it by hand), papermill's injected cell for
    ``parameters`` (made by papermill itself), then the settings cell."""
    from papermill.parameterize import parameterize_notebook

    nb = nbformat.read(str(NB03), as_version=4)
    tagged = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    for name, value in (edits or {}).items():
        lines = nb.cells[tagged].source.splitlines()
        hits = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
        assert len(hits) == 1, f"no line `{name} = ...` in the parameters cell"
        lines[hits[0]] = f"{name} = {value!r}"
        nb.cells[tagged].source = "\n".join(lines)
    if parameters is not None:
        nb = parameterize_notebook(nb, parameters)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    start = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec("from fmuia_lib import profiles\nfrom fmuia_lib.runner import run_folder", namespace)  # the setup cell's imports
    for cell in cells[start:]:
        if "injected-parameters" in cell.metadata.get("tags", []) or "parameters" in cell.metadata.get("tags", []):
            exec(cell.source, namespace)
        elif "profiles.run_settings" in cell.source:
            exec(_settings_statements(cell.source), namespace)
            return namespace["config"]
    raise AssertionError("notebook 03 has no settings cell")


@pytest.mark.parametrize("name", profiles.list_profiles())
def test_the_four_ways_of_starting_a_run_give_the_same_train_config(name, tmp_path):
    run_dir = tmp_path / "run"
    args = cli.build_parser().parse_args(["train", "--config", name, "--set", f"out_dir={run_dir / 'train'}"])
    from fmuia_lib.runner.train_command import config_from_args

    ways = {
        "fmuia train --config": config_from_args(args),
        "fmuia suite --profile": _notebook_03_config(suite.notebook_parameters(name, NB03, run_dir)),
        "papermill -p profile": _notebook_03_config({"profile": name, "run_dir": str(run_dir)}),
        "notebook by hand": _notebook_03_config(edits={"profile": name, "run_dir": str(run_dir)}),
    }
    reference = ways["fmuia train --config"].to_dict()
    for way, config in ways.items():
        values = config.to_dict()
        differ = {k: (values[k], reference[k]) for k in reference if values[k] != reference[k]}
        assert not differ, f"{name}: {way} differs from fmuia train in {differ}"
    profile = profiles.load_profile(name)
    recipe = TrainConfig.from_dict(profile.train).to_dict()
    assert {k: reference[k] for k in profile.train} == {k: recipe[k] for k in profile.train}
    assert reference["out_dir"] == str(run_dir / "train")


def test_notebooks_opened_as_they_are_run_the_cpu_smoke_profile(monkeypatch):
    monkeypatch.delenv(run_folder.RUN_DIR_VARIABLE, raising=False)  # the tests' own run folder
    config = _notebook_03_config()
    assert config == profiles.run_settings("cpu-smoke", run_dir=f"{run_folder.LOCAL_RUN_DIR}/cpu-smoke").config


# -- the series' shared steps -------------------------------------------------------------------
def test_every_path_derives_from_the_run_folder(tmp_path, monkeypatch):
    paths = run_folder.run_paths(tmp_path)
    assert paths.checkpoint == tmp_path / "checkpoint.pt" and paths.train == tmp_path / "train"
    assert paths.metrics("04_x") == tmp_path / "metrics" / "04_x.csv" and (tmp_path / "metrics").is_dir()
    monkeypatch.setenv(run_folder.RUN_DIR_VARIABLE, str(tmp_path / "elsewhere"))
    assert run_folder.run_paths().root == tmp_path / "elsewhere"
    monkeypatch.delenv(run_folder.RUN_DIR_VARIABLE)
    assert run_folder.run_paths().root == profiles.resolve(run_folder.LOCAL_RUN_DIR)


def test_colab_keeps_the_run_folder_on_google_drive_when_it_is_mounted(monkeypatch):
    """03-06 mount Drive and hand their files over there; 01 and 02 do not mount it, and keep
    theirs on the machine."""
    monkeypatch.delenv(run_folder.RUN_DIR_VARIABLE, raising=False)
    monkeypatch.setitem(__import__("sys").modules, "google.colab", object())
    real_is_dir = run_folder.Path.is_dir
    for mounted in (True, False):
        monkeypatch.setattr(run_folder.Path, "is_dir", lambda self: mounted if str(self) == "/content/drive/MyDrive"
                            else real_is_dir(self))
        assert run_folder.default_run_dir() == ("/content/drive/MyDrive/fmuia/runs" if mounted else run_folder.LOCAL_RUN_DIR)


def test_missing_data_gives_a_short_explanation(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(run_folder.RunSetupError, match="has no csv_files"):
        run_folder.prepare_data(profiles.run_settings("cpu-smoke", data_dir=tmp_path / "empty"))
    real = tmp_path / "real.yaml"
    real.write_text(f"name: r\ndata: {{source: real, dir: {tmp_path / 'conv'}, real_src: {tmp_path / 'no_src'}}}\n")
    with pytest.raises(run_folder.RunSetupError, match="real-data source .* not found"):
        run_folder.prepare_data(profiles.run_settings(real))
    with pytest.raises(run_folder.RunSetupError, match="names no data"):
        run_folder.prepare_data(profiles.run_settings(profiles.Profile(name="bare")))


def test_the_phantom_is_made_when_missing_and_remade_at_another_size_or_version(tmp_path, capsys):
    spec = tmp_path / "p.yaml"
    spec.write_text(f"name: p\ndata: {{source: phantom, dir: {tmp_path / 'ph'}, phantom_train: 1, phantom_val: 1}}\n")
    roots = run_folder.prepare_data(profiles.run_settings(spec))
    assert roots == run_folder.DataRoots(tmp_path / "ph" / "train", tmp_path / "ph" / "val")
    run_folder.prepare_data(profiles.run_settings(spec))
    assert capsys.readouterr().out.count("generating the phantom") == 1
    spec.write_text(spec.read_text().replace("phantom_val: 1", "phantom_val: 2"))
    run_folder.prepare_data(profiles.run_settings(spec))
    assert "other settings; regenerating" in capsys.readouterr().out
    record = tmp_path / "ph" / "phantom.json"  # one an earlier generator made: made again
    record.write_text(json.dumps({**json.loads(record.read_text()), "version": 1}))
    run_folder.prepare_data(profiles.run_settings(spec))
    assert "another generator version; regenerating" in capsys.readouterr().out
    assert json.loads(record.read_text())["version"] == generate.VERSION


def test_user_data_with_train_and_val_roots(tmp_path, make_root):
    make_root(tmp_path / "data", tasks=["breast_2cls"], n=2, name="train")
    make_root(tmp_path / "data", tasks=["breast_2cls"], n=2, name="val")
    roots = run_folder.prepare_data(profiles.run_settings("cpu-smoke", data_dir=tmp_path / "data"))
    assert roots.train == tmp_path / "data" / "train" and roots.val == tmp_path / "data" / "val"


def test_missing_weights_are_explained(tmp_path):
    run_folder.check_encoder_weights("resnet18", None)
    with pytest.raises(run_folder.RunSetupError, match="cannot be loaded"):
        run_folder.check_encoder_weights("resnet18", str(tmp_path / "missing.pth"))


# -- parameters as papermill passes them ------------------------------------------------------
def test_papermill_p_passes_overrides_as_json_or_yaml_text_and_y_as_a_mapping(tmp_path):
    """`papermill NB out -p overrides '{"max_steps": 200}'` injects the text; `-y` a mapping:
    both give the same config, and text that is no mapping is refused, naming the parameter."""
    given = {"profile": "ci-tiny", "run_dir": str(tmp_path)}
    as_json = _notebook_03_config({**given, "overrides": '{"max_steps": 200, "lr": 2e-3}'})
    as_yaml = _notebook_03_config({**given, "overrides": "{max_steps: 200, lr: 0.002}"})
    as_y = _notebook_03_config({**given, "overrides": {"max_steps": 200, "lr": 0.002}})
    assert as_json == as_yaml == as_y and as_json.max_steps == 200 and as_json.lr == 0.002
    for text, got in (("[1, 2]", "list"), ("200", "int"), ("max_steps", "str")):
        with pytest.raises(profiles.ProfileError, match=rf"^parameter overrides: got {got} .* it takes a mapping"):
            _notebook_03_config({**given, "overrides": text})
    with pytest.raises(profiles.ProfileError, match=r"^parameter overrides: '\{max_steps: 200' is not JSON or YAML"):
        _notebook_03_config({**given, "overrides": "{max_steps: 200"})
    with pytest.raises(profiles.ProfileError, match="unknown TrainConfig field 'max_step'"):  # a mapping: TrainConfig names the key
        _notebook_03_config({**given, "overrides": '{"max_step": 200}'})


@pytest.mark.parametrize("kind, text, value", [
    (list, "[0, 1, 2]", [0, 1, 2]), (list, "- 3\n- 4\n", [3, 4]), (list, "all", "all"), (list, "None", None),
    (dict, '{"max_steps": 20}', {"max_steps": 20}), (dict, "{}", {}), (bool, "true", True), (int, "4", 4),
    (float, "1e-3", 0.001), (float, "2", 2.0), (str, "ablation", "ablation")])
def test_a_notebook_value_given_as_text_is_read_as_its_kind(kind, text, value):
    assert profiles.notebook_value("p", text, kind) == value
    assert profiles.notebook_value("p", value, kind) == value  # typed values (-y, the cell itself) pass


@pytest.mark.parametrize("kind, given", [(list, 3), (list, '{"a": 1}'), (dict, [1]), (dict, "[1]"), (int, "x"),
                                         (int, True), (bool, "3"), (str, 3)])
def test_a_notebook_value_of_another_kind_is_refused_naming_it(kind, given):
    with pytest.raises(profiles.ProfileError, match=r"^parameter p: got \w+ .*; it takes "):
        profiles.notebook_value("p", given, kind)


def test_a_notebook_s_own_settings_read_papermill_text_as_their_defaults_kind():
    """Notebook 06's dict and list settings, through the function it reads them with."""
    settings = profiles.run_settings("cpu-smoke", '{"max_steps": 50}')
    assert settings.config.max_steps == 50
    chosen = settings.notebook_settings("06_experiments", given={
        "grid_overrides": '{"max_steps": 20}', "seeds": "[0, 1]", "phantom_tasks": "all", "jobs": None},
        defaults={"grid_overrides": {}, "seeds": [0], "phantom_tasks": ["FUGC"], "jobs": 1})
    assert chosen == {"grid_overrides": {"max_steps": 20}, "seeds": [0, 1], "phantom_tasks": "all", "jobs": 1}
    with pytest.raises(profiles.ProfileError, match=r"^parameter seeds: got int 3; it takes a list"):
        settings.notebook_settings("06_experiments", given={"seeds": 3}, defaults={"seeds": [0]})


def test_the_default_run_folder_is_one_per_profile(monkeypatch, tmp_path):
    monkeypatch.delenv(run_folder.RUN_DIR_VARIABLE, raising=False)
    assert run_folder.run_paths(None, "cpu-smoke").root == profiles.resolve(run_folder.LOCAL_RUN_DIR) / "cpu-smoke"
    assert run_folder.run_paths(None, "real-slice").root == profiles.resolve(run_folder.LOCAL_RUN_DIR) / "real-slice"
    assert run_folder.run_paths(tmp_path, "real-slice").root == tmp_path  # a given run_dir is used as it is
    monkeypatch.setenv(run_folder.RUN_DIR_VARIABLE, str(tmp_path))
    assert run_folder.run_paths(None, "ci-tiny").root == tmp_path / "ci-tiny"


def test_a_checkpoint_of_another_profile_or_data_is_refused(tmp_path):
    """Notebooks 04 and 05 score only a checkpoint trained under their own profile and data."""
    paths = run_folder.run_paths(tmp_path)
    tiny = profiles.run_settings("ci-tiny", run_dir=tmp_path)
    best = tmp_path / "best.pt"
    best.write_bytes(b"x")
    run_folder.hand_over_checkpoint(best, paths, tiny)
    assert run_folder.require_checkpoint(paths, tiny) == paths.checkpoint
    with pytest.raises(run_folder.RunSetupError, match=r"trained under another run .*profile 'ci-tiny' \(here: 'cpu-smoke'\)"):
        run_folder.require_checkpoint(paths, profiles.run_settings("cpu-smoke", run_dir=tmp_path))
    other_data = profiles.run_settings("ci-tiny", data_dir=tmp_path / "mine", run_dir=tmp_path)
    with pytest.raises(run_folder.RunSetupError, match=r"data_root .*\(here: .*mine/train'\)"):
        run_folder.require_checkpoint(paths, other_data)
    (tmp_path / run_folder.CHECKPOINT_RECORD).unlink()  # a checkpoint copied by hand: no record
    with pytest.raises(run_folder.RunSetupError, match="no readable record of the profile and data"):
        run_folder.require_checkpoint(paths, tiny)


def test_a_missing_checkpoint_names_the_notebook_and_command_that_make_it(tmp_path):
    paths = run_folder.run_paths(tmp_path)
    with pytest.raises(run_folder.RunSetupError) as info:
        run_folder.require_checkpoint(paths, "ci-tiny")
    message = str(info.value)
    assert "notebook 03_multitask_training makes it" in message
    assert f"papermill 03_multitask_training.ipynb out.ipynb -p profile ci-tiny -p run_dir {tmp_path}" in message
    paths.checkpoint.write_bytes(b"x")
    assert run_folder.require_checkpoint(paths, "ci-tiny") == paths.checkpoint


def test_training_resumes_a_run_with_the_same_config_and_uses_a_finished_one(tmp_path, make_root, capsys):
    from fmuia_lib.training import train

    make_root(tmp_path / "data", tasks=["organ_cls", "IUGC"], n=4, name="train")
    make_root(tmp_path / "data", tasks=["organ_cls", "IUGC"], n=2, seed=1, name="val")
    tiny = {"switches": list(FMUIA_RECIPE), **TINY_MODEL, "image_size": 32,
            "batch_size": 2, "epochs": None, "max_steps": 4,
            "eval_every": 2, "num_workers": 0, "norm_stats_batches": 1, "device": "cpu"}
    settings = profiles.run_settings(profiles.Profile(name="t", train=tiny), data_dir=tmp_path / "data",
                                     run_dir=tmp_path / "run")
    config = settings.config
    assert run_folder.resume_if_interrupted(config) == config and capsys.readouterr().out == ""
    train(config.with_overrides({"stop_at_step": 2}), progress=False)  # a run that stopped early

    resumed = run_folder.resume_if_interrupted(config)
    assert resumed.resume == str(tmp_path / "run" / "train" / "checkpoints" / "last.pt")
    said = capsys.readouterr().out
    assert "resuming from" in said and "step 2 of 4" in said
    other = config.with_overrides({"lr": 0.5})
    assert run_folder.resume_if_interrupted(other) == other
    assert "another config (differs in lr (checkpoint: " in capsys.readouterr().out
    # a speed setting may change on resume (checkpoint.RESUME_MAY_CHANGE): `fmuia train --resume`
    # accepts the checkpoint, and so does the run folder
    faster = config.with_overrides({"num_workers": 1})
    assert run_folder.resume_if_interrupted(faster).resume == resumed.resume
    assert "resuming from" in capsys.readouterr().out
    result = train(resumed, progress=False)
    assert result.history["step"].tolist() == [1, 2, 3, 4]
    finished = run_folder.resume_if_interrupted(config)  # used as it is: the seeded run would repeat itself
    assert finished == resumed and "finished run with this config (4 steps): using it" in capsys.readouterr().out
    again = train(finished, progress=False)
    timings = ["data_s", "step_s", "images_per_s"]
    assert again.history.drop(columns=timings).equals(result.history.drop(columns=timings))
    assert again.best_checkpoint == result.best_checkpoint and again.best_score == result.best_score
    assert again.last_checkpoint == result.last_checkpoint


# -- the suite --------------------------------------------------------------------------------
def test_notebook_selection_by_number_and_name():
    names = [p.stem for p in suite.notebook_paths()]
    assert names == sorted(names) and len(names) == 6
    assert [p.stem for p in suite.notebook_paths(["3", "01_dataset_exploration"])] == [names[0], names[2]]
    with pytest.raises(run_folder.RunSetupError, match="no notebook '9'"):
        suite.notebook_paths(["9"])


def test_declared_parameters_come_from_papermill():
    declared = suite.declared_parameters(NB03)
    assert set(declared) == {"profile", "run_dir", "data_dir", "device", "overrides", "transfer_seeds", "transfer_steps"}
    assert ast.literal_eval(declared["profile"]["default"]) == "cpu-smoke"


def test_a_notebook_without_a_parameters_cell_is_refused(tmp_path):
    nb = new_notebook(cells=[new_code_cell("x = 1")])
    nbformat.write(nb, str(tmp_path / "x.ipynb"))
    with pytest.raises(run_folder.RunSetupError, match="exactly one cell tagged 'parameters', found 0"):
        suite.declared_parameters(tmp_path / "x.ipynb")


def test_the_suite_gives_each_notebook_what_it_declares(tmp_path):
    for nb in suite.notebook_paths():
        params = suite.notebook_parameters("real-slice", nb, tmp_path / "artifacts", overrides={"max_steps": 40})
        assert set(params) <= set(suite.declared_parameters(nb)), nb.stem
        assert params["profile"] == "real-slice" and params["run_dir"] == str(tmp_path / "artifacts")
        assert "data_dir" not in params, "the profile's data unless --data is given"
    nb06 = suite.notebook_paths(["06"])[0]
    params = suite.notebook_parameters("cpu-smoke", nb06, tmp_path, data_dir=tmp_path / "d",
                                       overrides={"lr": 0.1}, kernel_name="k")
    assert params == {"profile": "cpu-smoke", "run_dir": str(tmp_path), "data_dir": str(tmp_path / "d"),
                      "overrides": {"lr": 0.1}}, "06 trains in its own kernel: it takes no kernel name"


def test_profile_notebook_settings_must_exist_in_the_notebook(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndata: {source: phantom, dir: x}\nnotebooks:\n  06_experiments: {sweep_stepz: 3}\n")
    with pytest.raises(run_folder.RunSetupError, match=r"\['sweep_stepz'\] are not parameters of 06_experiments"):
        suite.check_notebook_settings(profiles.load_profile(bad), suite.notebook_paths())
    bad.write_text("name: bad\ndata: {source: phantom, dir: x}\nnotebooks:\n  07_extra: {}\n")
    with pytest.raises(run_folder.RunSetupError, match="notebooks.07_extra: no such notebook"):
        suite.check_notebook_settings(profiles.load_profile(bad), suite.notebook_paths())
    for name in profiles.list_profiles():
        suite.check_notebook_settings(profiles.load_profile(name), suite.notebook_paths())


def test_summary_concatenates_notebook_tables(tmp_path):
    (tmp_path / "metrics").mkdir()
    pd.DataFrame({"task_id": ["a"], "metric": ["DSC"], "model": [0.5]}).to_csv(tmp_path / "metrics" / "04_x.csv", index=False)
    pd.DataFrame({"metric": ["IoU"], "value": [0.1]}).to_csv(tmp_path / "metrics" / "05_y.csv", index=False)
    summary = pd.read_csv(suite.write_summary(tmp_path, tmp_path / "summary.csv"))
    assert list(summary["notebook"]) == ["04_x", "05_y"]
    assert suite.write_summary(tmp_path / "none", tmp_path / "s.csv") is None


def test_a_failing_cell_is_named(tmp_path):
    nb = new_notebook(cells=[new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                             new_code_cell("y = x + 1"), new_code_cell("raise ValueError(f'bad value {y}')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "07_broken.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(suite.NotebookFailed) as info:
        suite.run_notebook(path, tmp_path / "out" / path.name, {"x": 41})
    message = str(info.value)
    assert "07_broken.ipynb failed at cell" in message and "ValueError: bad value 42" in message
    assert (tmp_path / "out" / path.name).is_file()


def _suite_args(tmp_path, **changes) -> argparse.Namespace:
    values = dict(profile="cpu-smoke", data=None, out=str(tmp_path), notebooks=None, kernel="python3",
                  overrides=[], update_notebooks=False)
    return argparse.Namespace(**{**values, **changes})


@pytest.mark.parametrize("changes, message", [
    ({"profile": "no-such-profile"}, "fmuia suite: error: profile 'no-such-profile' not found"),
    ({"overrides": ["learning_rate=1"]}, "unknown TrainConfig field 'learning_rate'"),
    ({"data": "/nonexistent/data"}, "training data root /nonexistent/data/train does not exist"),
])
def test_bad_suite_input_exits_2_with_one_message(tmp_path, capsys, changes, message):
    assert suite.suite_main(_suite_args(tmp_path, **changes)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "notebooks").exists(), "nothing ran"


def test_update_notebooks_only_with_the_defaults(tmp_path):
    with pytest.raises(run_folder.RunSetupError, match="cpu-smoke"):
        suite.run_suite("real-slice", out=tmp_path, update_notebooks=True)


@pytest.mark.slow
@pytest.mark.skipif(not REAL_SRC.is_dir(), reason=f"the real slice is not at {REAL_SRC}")
def test_real_slice_profile_runs_the_series_on_the_nine_real_tasks(tmp_path):
    """The real-slice profile end to end: conversion, parameters, notebook 01's exploration
    with its HTML, then notebooks 03 and 04 with a short training of the tiny model: the 9 real
    subtasks are trained, compared with their trivial baselines, and 04's predictions form a
    valid submission (written by the function notebook 05 uses; 05 itself, export and
    container included, runs in nbval and in tests/test_colab.py)."""
    spec = tmp_path / "real-slice.yaml"
    raw = yaml.safe_load((profiles.SHIPPED_DIR / "real-slice.yaml").read_text())
    raw["data"].update(dir=str(tmp_path / "real"), real_src=str(REAL_SRC))
    spec.write_text(yaml.safe_dump(raw))
    result = suite.run_suite(spec, out=tmp_path / "suite", notebooks=["01", "03", "04"], progress=False,
                             overrides={"max_steps": 20, "eval_every": 20, "warmup_steps": 5, "image_size": 32,
                                        **TINY_MODEL})
    executed = nbformat.read(str(result.executed[0]), as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "data[train]  real" in text and "profile   real-slice" in text
    assert not [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert result.html[0].stat().st_size > 0 and (tmp_path / "real" / "train").is_dir()
    summary = pd.read_csv(result.summary_csv)
    table = summary[summary["notebook"] == "04_error_analysis"]
    real_tasks = {t.task_id for t in load_manifest().values() if t.real_us_folder}
    assert set(table["task_id"]) == real_tasks and len(real_tasks) == 9
    assert table["baseline"].notna().all() and table["value"].notna().all()
    predictions = result.out / "artifacts" / "val_predictions"
    assert validate_submission(predictions, tmp_path / "real" / "val") == []
