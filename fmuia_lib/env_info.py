"""What ran, where, on which data: the record printed at the top of every notebook.

A result is only reproducible when three things are written next to it: the software
versions, the device, and the exact data. The data is named by a *fingerprint*: a hash
of the CSV files of a data root (file names and contents). Two roots with the same
fingerprint list the same images with the same labels; a changed label or an added
image changes it. Images themselves are not hashed (that would read every file), so the
fingerprint trusts the CSVs to name them.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

from fmuia_lib.data.layout import CSV_DIR

#: Packages whose versions change results.
PACKAGES = ("fmuia", "torch", "torchvision", "timm", "segmentation-models-pytorch",
            "numpy", "pandas", "scikit-learn", "scipy", "opencv-python-headless")

#: Files a data generator writes next to its train/ and val/ roots, and the source they name.
SOURCE_FILES = {"phantom.json": "phantom", "provenance.csv": "real"}

#: First line of the printed record; tests look for it in executed notebooks.
HEADER = "fmuia environment"


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each package (``"not installed"`` when absent)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_info() -> dict[str, Any]:
    """The compute device a notebook will use: CUDA when present, else CPU."""
    import torch

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["device"] = "cuda"
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    else:
        info["device"] = "cpu"
    return info


def data_fingerprint(root: str | Path) -> str:
    """A 16-hex-digit hash of ``ROOT/csv_files/*.csv`` (names and bytes, in name order)."""
    csv_dir = Path(root) / CSV_DIR
    files = sorted(csv_dir.glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"{csv_dir}: no CSV files, so {root} is not a data root")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def data_source(root: str | Path) -> str:
    """``phantom``, ``real`` or ``user``, from the generator's record next to the root."""
    root = Path(root)
    for folder in (root, root.parent):
        for name, source in SOURCE_FILES.items():
            if (folder / name).is_file():
                return source
    return "user"


def data_record(root: str | Path) -> dict[str, Any]:
    """Source, fingerprint and number of CSV rows of one data root."""
    root = Path(root)
    rows = sum(max(0, len(f.read_text(encoding="utf-8").splitlines()) - 1)
               for f in sorted((root / CSV_DIR).glob("*.csv")))
    return {"root": str(root), "source": data_source(root),
            "fingerprint": data_fingerprint(root), "csv_rows": rows}


def environment_record(data_roots: dict[str, str | Path] | None = None) -> dict[str, Any]:
    """Versions, device and the fingerprint of each named data root (e.g. train, val)."""
    record: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": device_info(),
        "in_colab": in_colab(),
    }
    if data_roots:
        record["data"] = {name: data_record(root) for name, root in data_roots.items()}
    return record


def format_record(record: dict[str, Any]) -> str:
    """The record as short aligned text (what notebooks print)."""
    lines = [HEADER, f"  python        {record['python']}  ({record['platform']})"]
    for name, version in record["packages"].items():
        lines.append(f"  {name:<13} {version}" if len(name) <= 13 else f"  {name}  {version}")
    dev = record["device"]
    where = f"cuda: {dev['gpu']} ({dev['gpu_memory_gib']} GiB)" if dev["cuda_available"] else "cpu"
    lines.append(f"  device        {where}; {dev['cpu_count']} CPU cores, torch threads {dev['torch_threads']}")
    lines.append(f"  colab         {record['in_colab']}")
    for name, data in (record.get("data") or {}).items():
        lines.append(f"  data[{name}]  {data['source']}  fingerprint {data['fingerprint']}  "
                     f"{data['csv_rows']} rows  {data['root']}")
    return "\n".join(lines)


def print_environment(data_roots: dict[str, str | Path] | None = None) -> dict[str, Any]:
    """Print the environment record; return it."""
    record = environment_record(data_roots)
    print(format_record(record))
    return record


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ
