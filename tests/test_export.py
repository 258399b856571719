"""``fmuia export``: the Docker build context, and its model.py run as the challenge runs it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import label_free_copy

from fmuia_lib.cli import main as fmuia
from fmuia_lib.challenge.export import DEFAULT_BASE_IMAGE, base_image


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    _, checkpoint = tiny_run
    out = tmp_path_factory.mktemp("export") / "docker"
    assert fmuia(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    return out


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_build_context_has_the_official_form(exported, tiny_run):
    _, checkpoint = tiny_run
    for name in ("model.py", "weights.pt", "Dockerfile", "requirements.txt", "README.md",
                 "fmuia_lib/__init__.py", "fmuia_lib/challenge/predict.py", "fmuia_lib/model.py", "fmuia_lib/data/images.py",
                 "fmuia_lib/data_manifest.csv"):
        assert (exported / name).is_file(), name
    assert not (exported / "fmuia_lib" / "train.py").exists()  # only what prediction imports
    source = (exported / "model.py").read_text()
    assert "class Model" in source
    assert "def predict(self, data_root: str, output_dir: str, batch_size: int = 8)" in source
    assert 'default="/input/"' in source and 'default="/output/"' in source

    weights = torch.load(exported / "weights.pt", weights_only=True)
    assert weights["format"] == "fmuia-weights/2" and weights["image_size"] == 64
    assert not {"optimizer", "scheduler", "history", "rng"} & set(weights)
    # the training run's memory-format setting (None: where it pays), so that the container
    # predicts in the layout fmuia's validation used on the same device
    assert weights["channels_last"] is torch.load(checkpoint, weights_only=True)["config"]["channels_last"] is None

    state = torch.load(checkpoint, weights_only=True)
    recorded = {_canonical(k): v.split("+")[0] for k, v in state["versions"]["packages"].items()}
    pins = _pins(exported)
    # the default base image is PyTorch's on CUDA 12 (runs on a CUDA 12 driver): torch and
    # torchvision are the image's, never reinstalled over it; the rest is the training run's
    assert {"segmentation-models-pytorch", "numpy", "opencv-python-headless"} <= set(pins)
    assert not {"torch", "torchvision"} & set(pins)
    assert all(pins[name] == recorded[name] for name in pins), pins  # the training run's versions
    dockerfile = (exported / "Dockerfile").read_text()
    assert f"FROM {DEFAULT_BASE_IMAGE}\n" in dockerfile and "ENV FMUIA_EXPECT_CUDA=1" in dockerfile
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda12\.\d+-cudnn\d+-runtime", DEFAULT_BASE_IMAGE)


def _pins(folder: Path) -> dict[str, str]:
    return dict(line.split("==") for line in (folder / "requirements.txt").read_text().splitlines()
                if line and not line.startswith("#"))


def test_the_base_image_can_be_the_training_runs_or_any(tiny_run, tmp_path):
    _, checkpoint = tiny_run
    state = torch.load(checkpoint, weights_only=True)
    out = tmp_path / "ckpt"
    assert fmuia(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--base-image", "checkpoint"]) == 0
    image, _ = base_image(state["versions"])
    assert f"FROM {image}\n" in (out / "Dockerfile").read_text()
    assert state["versions"]["packages"]["torch"].split("+")[0] in image or image.startswith("python:")
    out = tmp_path / "slim"
    assert fmuia(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--base-image",
                  "python:3.11-slim"]) == 0
    dockerfile = (out / "Dockerfile").read_text()
    assert "FROM python:3.11-slim\n" in dockerfile and "FMUIA_EXPECT_CUDA" not in dockerfile
    assert {"torch", "torchvision"} <= set(_pins(out))  # no PyTorch image: requirements bring torch
    assert fmuia(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "bad"), "--base-image",
                  "no image; rm -rf /"]) == 2


def test_exported_model_runs_alone_and_scores_like_fmuia_predict(exported, tiny_run, tmp_path, capsys):
    val, checkpoint = tiny_run
    data = label_free_copy(val, tmp_path / "test_set", keep_mask_path=True)  # no labels, no masks
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # not this checkout
    env["OMP_NUM_THREADS"] = "1"
    code = ("import fmuia_lib, model; print('FMUIA', fmuia_lib.__file__); "
            f"raise SystemExit(model.main(['--input', {str(data)!r}, '--output', {str(tmp_path / 'docker')!r}, "
            "'--device', 'cpu', '--workers', '0']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=exported, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    used = next(line for line in done.stdout.splitlines() if line.startswith("FMUIA")).split(" ", 1)[1]
    assert Path(used).resolve().is_relative_to(exported.resolve())

    assert fmuia(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out",
                  str(tmp_path / "fmuia"), "--device", "cpu"]) == 0
    reports = {}
    for name in ("docker", "fmuia"):
        assert fmuia(["evaluate", "--data", str(val), "--pred", str(tmp_path / name), "--json",
                      str(tmp_path / f"{name}.json")]) == 0
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    capsys.readouterr()
    assert reports["docker"]["complete"] and reports["docker"]["per_task"] == reports["fmuia"]["per_task"]
    assert reports["docker"]["summary"] == reports["fmuia"]["summary"]
    assert len(reports["docker"]["per_task"]) == 4


def test_a_checkpoint_without_versions_pins_this_environment_with_a_warning(tiny_run, tmp_path, capsys):
    _, checkpoint = tiny_run
    state = torch.load(checkpoint, weights_only=True)
    del state["versions"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert fmuia(["export", "--checkpoint", str(old), "--out", str(tmp_path / "docker"),
                  "--base-image", "python:3.11-slim"]) == 0  # an image without torch: requirements pin it
    assert "records no library versions" in capsys.readouterr().err
    pins = (tmp_path / "docker" / "requirements.txt").read_text()
    assert f"torch=={torch.__version__.split('+')[0]}" in pins


def test_export_refuses_a_non_empty_folder_and_a_bad_checkpoint(tiny_run, tmp_path, capsys):
    _, checkpoint = tiny_run
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert fmuia(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "busy")]) == 2
    assert "is not empty" in capsys.readouterr().err and (tmp_path / "busy" / "notes.txt").exists()
    assert fmuia(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "d")]) == 2
    assert "none.pt" in capsys.readouterr().err


def _run_container(export_dir: Path, data: Path, out: Path, extra_env: dict[str, str] | None = None):
    """``python model.py`` as the Dockerfile runs it: a process of its own, cwd the export
    folder, only its own files on the path (no PYTHONPATH to this checkout), the default
    device and workers."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FMUIA_EXPECT_CUDA",
                                                             "NVIDIA_VISIBLE_DEVICES")}
    env.update(OMP_NUM_THREADS="1", **(extra_env or {}))
    return subprocess.run([sys.executable, "-I", "model.py", "--input", str(data), "--output", str(out)],
                          cwd=export_dir, env=env, capture_output=True, text=True, timeout=600)


def test_the_container_finishes_a_test_set_with_a_damaged_and_a_bmp_image(exported, tiny_run, tmp_path, capsys):
    """One image cut short, one stored as BMP bytes under its .png name, the input read-only:
    the container writes a complete submission, lists the unreadable image on stderr and
    predicts every readable one exactly as ``fmuia predict --unreadable fallback``."""
    from test_predict import _damage

    val, checkpoint = tiny_run
    data = label_free_copy(val, tmp_path / "test_set", keep_mask_path=True)
    broken, bmp = _damage(data)
    for path in sorted(data.rglob("*"), reverse=True):  # read-only input, as mounted with :ro
        path.chmod(0o555 if path.is_dir() else 0o444)
    data.chmod(0o555)
    try:
        done = _run_container(exported, data, tmp_path / "docker", {"FMUIA_EXPECT_CUDA": "1"})
        assert done.returncode == 0, done.stderr
        assert "device: cpu" in done.stdout
        if not torch.cuda.is_available():  # the image expects a GPU and there is none: said loudly
            assert "WARNING: a GPU was expected here" in done.stderr
        assert "1 image(s) could not be read" in done.stderr and broken.name in done.stderr
        assert bmp.name not in done.stderr
        assert fmuia(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out",
                      str(tmp_path / "fmuia"), "--device", "cpu", "--unreadable", "fallback"]) == 0
    finally:
        for path in [data, *data.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    reports = {}
    for name in ("docker", "fmuia"):
        assert fmuia(["evaluate", "--data", str(val), "--pred", str(tmp_path / name), "--json",
                      str(tmp_path / f"{name}.json")]) == 0
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    capsys.readouterr()
    assert reports["docker"]["complete"] and reports["docker"] == reports["fmuia"]
    for name in ("classification", "detection", "regression"):  # the JSON files byte for byte
        file = f"{name}_predictions.json"
        assert (tmp_path / "docker" / file).read_bytes() == (tmp_path / "fmuia" / file).read_bytes()


def test_the_container_without_a_gpu_stays_quiet_when_none_was_expected(exported, tiny_run, tmp_path):
    val, _ = tiny_run
    data = label_free_copy(val, tmp_path / "test_set", keep_mask_path=True)
    done = _run_container(exported, data, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "device: cpu" in done.stdout and "WARNING" not in done.stderr
