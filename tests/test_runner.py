"""The suite runner: profiles, parameters, data preparation, explained errors, execution."""
from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from fmuia_lib import runner
from fmuia_lib.config import TrainConfig
from fmuia_lib.evaluate import validate_submission
from fmuia_lib.tasks import load_manifest

ROOT = Path(__file__).resolve().parents[1]
REAL_SRC = ROOT.parent / "shared" / "real_us"


def test_every_profile_loads_into_a_valid_train_config():
    assert set(runner.list_profiles()) >= {"cpu-smoke", "gpu-full", "real-slice"}
    for name in runner.list_profiles():
        profile = runner.load_profile(name)
        config = TrainConfig.from_dict(profile.train)
        assert profile.name == name and profile.description
        assert profile.data["source"] in {"phantom", "real", "user"}
        assert (config.max_steps if config.epochs is None else config.epochs) > 0


def test_make_run_makes_the_phantom_of_the_cpu_smoke_profile():
    data = runner.load_profile("cpu-smoke").data
    recipe = (ROOT / "Makefile").read_text()
    assert f"--train {data['phantom_train']} --val {data['phantom_val']}" in recipe
    assert "suite --profile cpu-smoke" in recipe


def test_gpu_full_is_the_baseline_recipe():
    config = TrainConfig.from_dict(runner.load_profile("gpu-full").train)
    assert (config.encoder, config.encoder_weights, config.image_size) == ("efficientnet-b4", "imagenet", 256)
    assert config.head_lr_mult == 10.0 and config.batch_size == 20 and config.epochs == 50


def test_unknown_profile_and_bad_field_are_explained(tmp_path):
    with pytest.raises(runner.SuiteError, match="known profiles: .*cpu-smoke"):
        runner.load_profile("no-such-profile")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndata: {source: phantom, dir: x}\ntrain: {learning_rate: 0.1}\n")
    with pytest.raises(ValueError, match="unknown TrainConfig field 'learning_rate'"):
        runner.load_profile(bad)


def test_notebook_selection_by_number_and_name():
    names = [p.stem for p in runner.notebook_paths()]
    assert names == sorted(names) and len(names) == 6
    assert [p.stem for p in runner.notebook_paths(["3", "01_dataset_exploration"])] == [names[0], names[2]]
    with pytest.raises(runner.SuiteError, match="no notebook '9'"):
        runner.notebook_paths(["9"])


def test_parameters_are_filtered_to_what_each_notebook_declares(tmp_path):
    profile = runner.load_profile("real-slice")
    for nb in runner.notebook_paths():
        params = runner.notebook_parameters(profile, nb, tmp_path / "artifacts")
        declared = runner.declared_parameters(nb)
        assert set(params) <= set(declared), nb.stem
        assert params["data_dir"] == "runs/real_slice" and params["data_source"] == "real"
        assert params["run_dir"] == str(tmp_path / "artifacts")
    nb03 = runner.notebook_paths(["03"])[0]
    params = runner.notebook_parameters(profile, nb03, tmp_path)
    assert params["image_size"] == profile.train["image_size"]
    assert params["checkpoint_path"] == str(tmp_path / runner.CHECKPOINT_NAME)
    nb06 = runner.notebook_paths(["06"])[0]
    assert runner.notebook_parameters(profile, nb06, tmp_path)["pretrain_compare"] is True


def test_user_data_replaces_the_profile_data(tmp_path):
    profile = runner.load_profile("cpu-smoke")
    shared = runner.shared_parameters(profile, tmp_path / "run", data_dir=tmp_path / "mine")
    assert shared["data_source"] == "user"
    assert shared["data_root"] == str(tmp_path / "mine" / "train")


def test_missing_data_gives_a_short_explanation(tmp_path):
    with pytest.raises(runner.SuiteError, match="does not exist. Pass --data"):
        runner.prepare_data(tmp_path / "nothing", "user")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(runner.SuiteError, match="has no csv_files"):
        runner.prepare_data(tmp_path / "empty", "user")
    with pytest.raises(runner.SuiteError, match="data_source='web'"):
        runner.prepare_data(tmp_path, "web")
    with pytest.raises(runner.SuiteError, match="real-data source .* not found"):
        runner.prepare_data(tmp_path / "real", "real", real_src=tmp_path / "no_src")


def test_user_data_with_train_and_val_roots(tmp_path, make_root):
    make_root(tmp_path / "data", tasks=["breast_2cls"], n=2, name="train")
    make_root(tmp_path / "data", tasks=["breast_2cls"], n=2, name="val")
    roots = runner.prepare_data(tmp_path / "data", "user")
    assert roots.train == tmp_path / "data" / "train" and roots.val == tmp_path / "data" / "val"


def test_missing_weights_are_explained(tmp_path):
    runner.check_encoder_weights("resnet18", None)
    with pytest.raises(runner.SuiteError, match="cannot be loaded"):
        runner.check_encoder_weights("resnet18", str(tmp_path / "missing.pth"))


def test_missing_checkpoint_without_training_is_explained(tmp_path):
    roots = runner.DataRoots(tmp_path, tmp_path)
    with pytest.raises(runner.SuiteError, match="run notebook 03"):
        runner.ensure_checkpoint(tmp_path / "none.pt", roots, train_if_missing=False)


def test_summary_concatenates_notebook_tables(tmp_path):
    (tmp_path / "metrics").mkdir()
    pd.DataFrame({"task_id": ["a"], "metric": ["DSC"], "model": [0.5]}).to_csv(tmp_path / "metrics" / "04_x.csv", index=False)
    pd.DataFrame({"metric": ["IoU"], "value": [0.1]}).to_csv(tmp_path / "metrics" / "05_y.csv", index=False)
    summary = pd.read_csv(runner.write_summary(tmp_path, tmp_path / "summary.csv"))
    assert list(summary["notebook"]) == ["04_x", "05_y"]
    assert runner.write_summary(tmp_path / "none", tmp_path / "s.csv") is None


def test_a_failing_cell_is_named(tmp_path):
    nb = new_notebook(cells=[new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                             new_code_cell("y = x + 1"), new_code_cell("raise ValueError(f'bad value {y}')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "07_broken.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(runner.SuiteError) as info:
        runner.run_notebook(path, tmp_path / "out" / path.name, {"x": 41})
    message = str(info.value)
    assert "07_broken.ipynb failed at cell" in message and "ValueError: bad value 42" in message
    assert (tmp_path / "out" / path.name).is_file()


def test_suite_command_exits_non_zero_with_the_reason(tmp_path, capsys):
    args = argparse.Namespace(profile="no-such-profile", data=None, out=str(tmp_path), notebooks=None,
                              kernel="python3", update_notebooks=False)
    assert runner.suite_main(args) == 1
    assert "fmuia suite: profile 'no-such-profile' not found" in capsys.readouterr().err


def test_update_notebooks_only_with_the_defaults(tmp_path):
    with pytest.raises(runner.SuiteError, match="cpu-smoke"):
        runner.run_suite("real-slice", out=tmp_path, update_notebooks=True)


@pytest.mark.slow
@pytest.mark.skipif(not REAL_SRC.is_dir(), reason=f"the real slice is not at {REAL_SRC}")
def test_real_slice_profile_runs_notebook_01(tmp_path):
    """The real-slice profile end to end on one notebook: conversion, parameters, execution, HTML."""
    roots = runner.prepare_data(tmp_path / "real", "real", real_src=REAL_SRC)
    result = runner.run_suite("real-slice", data=tmp_path / "real", out=tmp_path / "suite", notebooks=["01"],
                              progress=False)
    executed = nbformat.read(str(result.executed[0]), as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "data[train]  real" in text
    assert not [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert result.html[0].stat().st_size > 0 and roots.train.is_dir()


@pytest.mark.slow
@pytest.mark.skipif(not REAL_SRC.is_dir(), reason=f"the real slice is not at {REAL_SRC}")
def test_real_slice_series_trains_predicts_and_scores_the_nine_real_tasks(tmp_path):
    """Notebooks 03-05 under the real-slice profile (a short training): the 9 real subtasks
    are trained, compared with their trivial baselines, written as a valid submission."""
    roots = runner.prepare_data(tmp_path / "real", "real", real_src=REAL_SRC)
    result = runner.run_suite("real-slice", data=tmp_path / "real", out=tmp_path / "suite",
                              notebooks=["03", "04", "05"], html=False, progress=False,
                              extra_parameters={"max_steps": 40, "eval_every": 40, "warmup_steps": 5})
    summary = pd.read_csv(result.summary_csv)
    table = summary[summary["notebook"] == "04_error_analysis"]
    real_tasks = {t.task_id for t in load_manifest().values() if t.real_us_folder}
    assert set(table["task_id"]) == real_tasks and len(real_tasks) == 9
    assert table["baseline"].notna().all() and table["value"].notna().all()
    submission = result.out / "artifacts" / "submission"
    assert validate_submission(submission, roots.val) == []
