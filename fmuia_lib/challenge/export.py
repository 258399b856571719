"""``fmuia export``: a checkpoint as a ready Docker build context in the challenge's form.

The challenge's final submission is a Docker image whose ``model.py`` holds ``class
Model`` with ``predict(data_root, output_dir, batch_size=8)`` and, run as ``python
model.py``, reads ``/input/`` and writes ``/output/``. :func:`export_submission` writes
that folder::

    DIR/model.py           class Model + __main__ (from export_templates/model.py.tmpl)
    DIR/weights.pt         weights only (predict.inference_state): no optimiser, no history
    DIR/fmuia_lib/...      the library modules prediction imports, and the task manifest
    DIR/requirements.txt   the libraries prediction imports, pinned to the checkpoint's versions
    DIR/Dockerfile         a PyTorch CUDA 12 runtime image (DEFAULT_BASE_IMAGE; --base-image)
    DIR/README.md          what it is and how to build, run and check it

Which fmuia modules and libraries prediction needs is measured, not listed by hand:
a fresh Python process imports the prediction modules and reports what got loaded.
Versions come from the checkpoint (``versions``, recorded by training since checkpoints
carry them); for an older checkpoint the running environment's versions are used, with
a printed warning.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import platform
import re
import shutil
import string
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import fmuia_lib
from fmuia_lib.paths import atomic_write, write_failure, writing

TEMPLATES = Path(__file__).with_name("export_templates")
WEIGHTS_NAME = "weights.pt"
#: The modules an exported ``Model`` runs (their imports are followed).
ENTRY_MODULES = ("fmuia_lib.challenge.predict", "fmuia_lib.model", "fmuia_lib.data.dataset", "fmuia_lib.data.transforms",
                 "fmuia_lib.data.layout", "fmuia_lib.data.images", "fmuia_lib.challenge.submission", "fmuia_lib.tasks")
#: Files the copied package needs besides its modules.
PACKAGE_DATA = ("data_manifest.csv",)


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why."""


@dataclass
class ExportResult:
    out_dir: Path
    files: list[str]
    base_image: str
    requirements: list[str]
    warnings: list[str] = field(default_factory=list)


def _import_report(modules: tuple[str, ...]) -> dict[str, Any]:
    """What a fresh interpreter loads when it imports ``modules`` from this fmuia_lib:
    ``{"fmuia": {module: file}, "external": [top-level names]}``."""
    package_parent = Path(fmuia_lib.__file__).resolve().parent.parent
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "fmuia = {n: m.__file__ for n, m in list(sys.modules.items())\n"
        "         if (n == 'fmuia_lib' or n.startswith('fmuia_lib.')) and getattr(m, '__file__', None)}\n"
        "external = sorted({n.split('.')[0] for n in list(sys.modules)} - set(sys.stdlib_module_names)\n"
        "                  - {'fmuia_lib', '__main__', '__mp_main__'})\n"
        "print(json.dumps({'fmuia': fmuia, 'external': external}))\n")
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=package_parent, timeout=600)
    if done.returncode != 0:
        raise ExportError(f"importing the prediction modules failed:\n{done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    here = Path(fmuia_lib.__file__).resolve().parent
    for name, file in report["fmuia"].items():
        if not Path(file).resolve().is_relative_to(here):
            raise ExportError(f"{name} was imported from {file}, not from {here}")
    return report


def _direct_imports(files: list[Path]) -> set[str]:
    """Top-level names of the non-standard modules that ``files`` import (anywhere in them)."""
    names: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"fmuia_lib", "__future__"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distributions(modules: set[str]) -> set[str]:
    """The installed distributions providing these top-level modules (canonical names)."""
    mapping = importlib.metadata.packages_distributions()
    return {_canonical(dist) for module in modules for dist in mapping.get(module, [])} - {"fmuia"}


def _release(version: str) -> str:
    """``2.2.2+cu121`` -> ``2.2.2`` (a local build tag is not on PyPI)."""
    return version.split("+", 1)[0]


def _cudnn_major(version: int) -> int:
    return version // 10000 if version >= 10000 else version // 1000


#: The default base image: a PyTorch runtime image on CUDA 12, which a host driver of the CUDA 12
#: series runs (CUDA's minor-version compatibility: any driver >= 525), as the organisers' hosts
#: run the official image (pytorch/pytorch:2.2.2-cuda12.1-cudnn8-runtime). Its torch, 2.8, is the
#: oldest the exported code supports (pyproject.toml: torch >= 2.8, torchvision >= 0.23 for
#: tv_tensors.KeyPoints); a newer torch is built for CUDA 12.8+ or 13, which older drivers refuse,
#: and then the model would run on the CPU. ``--base-image`` sets another one.
DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.8.0-cuda12.6-cudnn9-runtime"
#: Distributions a PyTorch image brings (pinned by the image, never reinstalled over it).
IMAGE_PROVIDED = ("torch", "torchvision")


def image_provides_torch(image: str) -> bool:
    """Whether ``image`` is one of PyTorch's own images, which bring torch and torchvision."""
    return image.split(":", 1)[0] in ("pytorch/pytorch", "docker.io/pytorch/pytorch")


def image_expects_cuda(image: str) -> bool:
    """Whether a container of ``image`` is meant to run on a GPU (a CUDA image)."""
    return "cuda" in image.split(":", 1)[-1].lower() or image.split(":", 1)[0].endswith("nvidia/cuda")


def base_image(versions: Mapping[str, Any]) -> tuple[str, str]:
    """``(image, why)``: the official PyTorch runtime image of the checkpoint's torch, CUDA
    and cuDNN when it was trained on a CUDA build; else a slim Python image of the same
    Python, where requirements.txt installs that torch from PyPI."""
    torch_version = _release(versions["packages"]["torch"])
    cuda, cudnn = versions.get("torch_cuda"), versions.get("cudnn")
    if cuda and cudnn:
        return (f"pytorch/pytorch:{torch_version}-cuda{cuda}-cudnn{_cudnn_major(int(cudnn))}-runtime",
                f"the PyTorch image of the training run (torch {torch_version}, CUDA {cuda}, "
                f"cuDNN {_cudnn_major(int(cudnn))})")
    python = ".".join(str(versions["python"]).split(".")[:2])
    return (f"python:{python}-slim",
            f"torch {torch_version} was a CPU-only build in training; Python {python}, torch from PyPI")


def _running_versions() -> dict[str, Any]:
    from fmuia_lib.checkpoint import library_versions

    return library_versions()


def pinned_requirements(needed: set[str], versions: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(requirement lines, distributions pinned from this environment)`` for the
    distributions in ``needed``: the checkpoint's version where it recorded one."""
    recorded = {_canonical(k): v for k, v in versions.get("packages", {}).items()}
    lines, fallback = [], []
    for dist in sorted(needed):
        version = recorded.get(dist)
        if version is None:
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                raise ExportError(f"prediction imports {dist}, which is not installed here") from None
            fallback.append(dist)
        lines.append(f"{dist}=={_release(version)}")
    return lines, fallback


#: The files that mark a folder as an earlier export (what ``--overwrite`` may replace).
EXPORT_MARKERS = ("model.py", WEIGHTS_NAME, "Dockerfile")


def check_export_folder(out_dir: Path, checkpoint: Path, overwrite: bool) -> bool:
    """Refuse an ``--out`` the export cannot use; return whether an earlier export there
    is to be replaced. Symbolic links are resolved: ``--out`` must be a folder (or not
    exist), must not hold the checkpoint nor lie in or hold the fmuia package it copies,
    must not lie in a data root, and may be non-empty only with ``overwrite`` and only when
    it holds an earlier export (``EXPORT_MARKERS``)."""
    from fmuia_lib.paths import output_folder_problem, output_problem

    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} is a file; give a folder")
    if checkpoint.exists():
        problem = output_folder_problem(out_dir, checkpoint.parent, name="--out",
                                        what="the checkpoint's folder")
        if problem and "lies inside" not in problem:
            raise ExportError(f"{problem} (--checkpoint {checkpoint})")
    package = Path(fmuia_lib.__file__).resolve().parent
    problem = output_folder_problem(out_dir, package, name="--out", what="the fmuia package")
    if problem:
        raise ExportError(problem)
    problem = output_problem(out_dir, name="--out", what="the export")  # no data root in, at or under it
    if problem:
        raise ExportError(problem)
    if not (out_dir.is_dir() and any(out_dir.iterdir())):
        return False
    if not overwrite:
        raise ExportError(f"--out {out_dir} exists and is not empty (use --overwrite to replace it)")
    if not all((out_dir / name).is_file() for name in EXPORT_MARKERS):
        raise ExportError(f"--out {out_dir} is not empty and holds no earlier export ({', '.join(EXPORT_MARKERS)}); "
                          "refusing to delete it")
    return True


def export_submission(checkpoint: str | Path, out_dir: str | Path, overwrite: bool = False,
                      base: str | None = None) -> ExportResult:
    """Write the Docker build context for ``checkpoint`` into ``out_dir`` (see the module docstring).

    ``base`` is the Dockerfile's base image: :data:`DEFAULT_BASE_IMAGE` when None,
    ``"checkpoint"`` for the PyTorch image of the training run's torch, CUDA and cuDNN
    (:func:`base_image`), or any image name. On a PyTorch image torch and torchvision are
    the image's (requirements.txt pins the other libraries to the checkpoint's versions);
    on any other image requirements.txt installs them too.

    Raises :class:`ExportError` for an ``out_dir`` it cannot use (see
    :func:`check_export_folder`) and :class:`~fmuia_lib.challenge.predict.ModelLoadError` for an
    unusable checkpoint; nothing is removed or written before both are checked.
    """
    from fmuia_lib.challenge.predict import load_model

    out_dir, checkpoint = Path(out_dir), Path(checkpoint)
    replace = check_export_folder(out_dir, checkpoint, overwrite)
    model, image_size, state = load_model(checkpoint, "cpu")  # before anything is removed
    warnings: list[str] = []
    versions = state.get("versions")
    if not versions:
        versions = _running_versions()
        warnings.append(f"{checkpoint} records no library versions (it predates them); requirements.txt and "
                        "the base image follow this environment instead")
    report = _import_report(ENTRY_MODULES)
    package_root = Path(fmuia_lib.__file__).resolve().parent
    module_files = sorted({Path(f).resolve() for f in report["fmuia"].values()})
    needed = (_distributions(_direct_imports(module_files))
              | (_distributions(set(report["external"]))
                 & {_canonical(k) for k in versions.get("packages", {})}))
    if base is None:
        image, why = DEFAULT_BASE_IMAGE, ("PyTorch's runtime image on CUDA 12, which runs on any CUDA 12 host "
                                          "driver, with the oldest torch fmuia supports (fmuia export --base-image "
                                          "sets another)")
    elif base == "checkpoint":
        image, why = base_image(versions)
    else:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", base):
            raise ExportError(f"--base-image {base!r} is not an image name")
        image, why = base, "given with fmuia export --base-image"
    if image_provides_torch(image):
        needed = needed - set(IMAGE_PROVIDED)
        why += "; torch and torchvision are the image's"
    requirements, fallback = pinned_requirements(needed, versions)
    if fallback and state.get("versions"):
        warnings.append(f"{checkpoint} records no version of {', '.join(fallback)}; pinned to this environment's")

    # Written into a temporary folder beside --out and moved there whole at the end: a disk
    # that fills up or a read-only mount leaves no half export, and an earlier export is
    # removed only once the new one is complete.
    with writing(out_dir.parent):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        made = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        written = _write_export(made, model, image_size, state, versions, checkpoint, module_files, package_root,
                                requirements, image, why)
        with writing(out_dir):
            if replace:
                shutil.rmtree(out_dir)
            elif out_dir.is_dir():
                out_dir.rmdir()  # empty
            os.replace(made, out_dir)
    except BaseException:
        shutil.rmtree(made, ignore_errors=True)
        raise
    return ExportResult(out_dir, sorted(written), image, requirements, warnings)


def _write_export(out_dir: Path, model, image_size: int, state: dict, versions: dict, checkpoint: Path,
                  module_files: list[Path], package_root: Path, requirements: list[str], image: str,
                  why: str) -> list[str]:
    """Write the export's files into ``out_dir``; return their relative paths."""
    from fmuia_lib.challenge.predict import inference_state
    from fmuia_lib.state_file import save_state

    written: list[str] = []
    copies = [(file, Path("fmuia_lib") / file.relative_to(package_root)) for file in module_files]
    copies += [(package_root / name, Path("fmuia_lib") / name) for name in PACKAGE_DATA]  # follows the repository's link
    for file, relative in copies:
        try:
            (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, out_dir / relative)
        except OSError as err:  # its filename may be the source's
            raise write_failure(err, out_dir / relative) from None
        written.append(relative.as_posix())
    save_state(inference_state(model, image_size, versions), out_dir / WEIGHTS_NAME)
    written.append(WEIGHTS_NAME)

    fields = {"checkpoint_name": checkpoint.name, "step": state.get("step", "?"), "encoder": model.encoder_name,
              "num_tasks": len(model.task_ids), "image_size": image_size, "weights_name": WEIGHTS_NAME,
              "base_image": image, "base_reason": why, "python": versions.get("python", platform.python_version()),
              "packages": ", ".join(requirements),
              "expect_cuda": ("# the model must find a GPU here: model.py warns loudly when it does not\n"
                              "ENV FMUIA_EXPECT_CUDA=1\n") if image_expects_cuda(image) else "",
              "fallback_note": (" (this checkpoint predates recorded versions: they are the exporting "
                                "environment's)") if not state.get("versions") else ""}
    for template, name in (("model.py.tmpl", "model.py"), ("Dockerfile.tmpl", "Dockerfile"),
                           ("README.md.tmpl", "README.md")):
        text = string.Template((TEMPLATES / template).read_text(encoding="utf-8")).substitute(fields)
        atomic_write(out_dir / name, text)
        written.append(name)
    atomic_write(out_dir / "requirements.txt",
                 f"# the versions {checkpoint.name} was trained with (written by fmuia export)\n"
                 + "\n".join(requirements) + "\n")
    written.append("requirements.txt")
    return written


def export_weights(checkpoint: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write only ``out_dir/weights.pt``: the checkpoint's weights in the weights-only inference
    format (``predict.inference_state``: no optimiser state, no history), for sharing a model;
    ``fmuia predict`` and an exported ``model.py`` read it. Returns its path."""
    from fmuia_lib.challenge.predict import inference_state, load_model
    from fmuia_lib.state_file import save_state

    from fmuia_lib.paths import output_problem

    out_dir, checkpoint = Path(out_dir), Path(checkpoint)
    problem = output_problem(out_dir, name="--out", what="the weights")  # no data root in, at or under it
    if problem:
        raise ExportError(problem)
    target = out_dir / WEIGHTS_NAME
    if os.path.realpath(target) == os.path.realpath(checkpoint):
        raise ExportError(f"--out {out_dir}: {target} is the checkpoint being exported; write elsewhere")
    if target.exists() and not overwrite:
        raise ExportError(f"{target} exists (use --overwrite to replace it)")
    model, image_size, state = load_model(checkpoint, "cpu")
    return save_state(inference_state(model, image_size, state.get("versions") or _running_versions()), target)


def export_main(args) -> int:
    """``fmuia export --checkpoint CKPT --out DIR [--overwrite] [--weights-only]`` (an ExportError
    or ModelLoadError is bad input: ``cli.main``)."""
    if getattr(args, "weights_only", False):
        written = export_weights(args.checkpoint, args.out, overwrite=args.overwrite)
        print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB): weights only, for fmuia predict")
        return 0
    result = export_submission(args.checkpoint, args.out, overwrite=args.overwrite,
                               base=getattr(args, "base_image", None))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote a Docker build context to {result.out_dir} ({len(result.files)} files)")
    print(f"  base image {result.base_image}")
    print(f"  requirements: {', '.join(result.requirements)}")
    print(f"  test it:  python {result.out_dir / 'model.py'} --input DATA_ROOT --output OUT_DIR")
    return 0
