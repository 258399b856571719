"""Torch state files (training checkpoints, inference weights): written atomically, read checked.

Every file is a ``torch.save`` zip archive, and ``torch.save`` stores a CRC-32 checksum
of each record (the pickled structure and every tensor's bytes). ``torch.load`` does not
check them: a flipped byte inside a tensor loads silently as a different weight. So
:func:`load_state` first verifies every record against its checksum (the standard
library's ``zipfile.ZipFile.testzip``), then loads with ``weights_only=True`` (no pickled
code runs). An empty, truncated, corrupted or foreign file is a :class:`StateFileError`
naming the file and the problem, never a bare ``EOFError`` or ``UnpicklingError``.

:func:`save_state` writes to a temporary file in the target's folder and renames it
over the target, so a crash mid-write leaves the previous file intact. A temporary
left behind by a killed process (``.last.pt.XXXX.tmp``) is removed by the next save
into that folder (:func:`remove_stale_temporaries`).

Torch-free at import time: the exported inference package imports it through
``fmuia_lib.challenge.predict``.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"


class StateFileError(ValueError):
    """A state file cannot be used (missing, empty, truncated, corrupted, not a PyTorch file);
    the message names the file and the problem."""


def _temporary_pattern(name: str) -> str:
    return f".{name}.*{TEMP_SUFFIX}"


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries that :func:`save_state` left in ``folder`` when its process was
    killed mid-write (of target ``name``, or of any target); return what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for stale in folder.glob(_temporary_pattern(name or "*")):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def save_state(state: dict[str, Any], path: str | Path) -> Path:
    """``torch.save(state)`` to ``path`` atomically, with a CRC-32 checksum per record."""
    import torch

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise StateFileError(f"cannot write {path}: {err.strerror or err}") from None
    crc32 = torch.serialization.get_crc32_options()
    try:
        torch.serialization.set_crc32_options(True)  # the checksums load_state verifies
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # disk full, read-only: torch's writer raises RuntimeError
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(err, "strerror", None) or (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise StateFileError(f"cannot write {path}: {reason}; nothing was written there") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        torch.serialization.set_crc32_options(crc32)
    return path


def verify(path: str | Path, what: str = "checkpoint") -> None:
    """Raise :class:`StateFileError` unless ``path`` is a complete ``torch.save`` archive whose
    records all match their CRC-32 checksums."""
    path = Path(path)
    if not path.exists():
        raise StateFileError(f"{what} {path}: not found")
    if path.is_dir():
        raise StateFileError(f"{what} {path}: is a folder, not a file")
    from fmuia_lib.paths import not_regular_problem

    problem = not_regular_problem(path)
    if problem:  # a named pipe would block the reader
        raise StateFileError(f"{what} {path} {problem}")
    if path.stat().st_size == 0:
        raise StateFileError(f"{what} {path} cannot be read: the file is empty (0 bytes; an interrupted copy?)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise StateFileError(f"{what} {path} cannot be read (truncated, or not a PyTorch file): "
                             f"{str(err) or type(err).__name__}") from None
    if bad is not None:
        raise StateFileError(f"{what} {path} is corrupted: its record {bad!r} does not match its checksum "
                             "(CRC-32); the file changed after it was written")


def load_state(path: str | Path, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """The object in state file ``path``, its checksums verified (:func:`verify`), loaded with
    ``torch.load(weights_only=True)``. Every failure is a :class:`StateFileError`."""
    import torch

    verify(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - the unpickler fails in many ways on a foreign
        # file (UnpicklingError, RuntimeError, EOFError, IndexError ...): each means "not readable"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StateFileError(f"{what} {path} cannot be read (truncated, or not a PyTorch file): {reason}") from None
