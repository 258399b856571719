"""Where fmuia reads and writes: the one rule for the paths of every command.

Reading
    A path a data root's CSV writes, or a mask a submission names, stays inside its folder,
    symbolic links resolved (:func:`contained_path`). Only regular files are opened
    (:func:`not_regular_problem`): a named pipe would block a reader forever, a device
    never end.
Writing
    Every command that writes (``train``, ``predict``, ``evaluate --json``, ``export``,
    ``data phantom``, ``data real``, ``suite``, ``course build``) checks its output with
    :func:`output_problem` before it writes anything, and writes

    * never into, around or over a data root (a folder holding ``csv_files/``): the output
      is not one, does not lie inside one and does not hold one;
    * never into, around or over its own inputs (a checkpoint, a submission being scored);
    * never through a symbolic link that leads out of the output folder;
    * never over a file or folder it did not make: replacing (``--overwrite``) removes only
      what a marker file it left there says it made (:func:`write_marker`, :func:`made_by`).

    A write that fails (disk full, read-only, no permission) is an :class:`OutputError`
    naming the path, and leaves no partial file (:func:`atomic_write`).
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

#: The folder that makes a folder a data root.
CSV_DIR = "csv_files"
#: The file a command leaves in a folder it made, so that ``--overwrite`` knows it may replace it.
MARKER = ".fmuia-made-by.json"


class OutputError(ValueError):
    """An output cannot be written where it was asked to go, or writing it failed; the message
    names the path and why."""


# -- reading --------------------------------------------------------------------------------------

def within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both absolute and resolved, so
    comparing the text is enough; ``os.path.commonpath`` costs ~10x more per row)."""
    return path == folder or path.startswith(folder if folder.endswith(os.sep) else folder + os.sep)


def lies_inside(path: Path | str, folder: Path | str) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it once symbolic links are resolved."""
    return within(os.path.realpath(path), os.path.realpath(folder))


def contained_path(relative: str, start: str = "", root: str | Path | None = None) -> str | None:
    """``relative`` joined to ``start`` and normalised (POSIX), or None when it leaves the folder.

    The one rule for paths that must stay inside a folder: the data root for the paths a
    CSV writes (``start="csv_files"``), the submission folder for predicted masks. None
    for an empty path, an absolute one (``/x``, ``C:/x``, ``\\x``) or one whose ``..``
    climb above the folder. Without ``root`` it is judged on the text alone. With
    ``root`` (the folder on disk) the file it names must also lie inside ``root`` once
    symbolic links are resolved: the file itself, or a folder on the way such as
    ``imgs/``, may link elsewhere inside the root but not outside it.
    """
    text = relative.replace("\\", "/")
    if not text or text.startswith("/") or ":" in text.split("/")[0]:
        return None
    joined = posixpath.normpath(posixpath.join(start, text) if start else text)
    if joined in (".", "..") or joined.startswith("../"):
        return None
    if root is not None and resolves_outside(os.path.realpath(root), Path(root), joined, {}) is not None:
        return None
    return joined


def resolves_outside(root_real: str, root: Path, joined: str, folders: dict[str, str]) -> str | None:
    """Where ``root/joined`` really is when that is outside ``root_real``, else None.

    ``folders`` caches the real path of each folder (a data root has many files per folder).
    """
    folder, name = posixpath.split(joined)
    real_folder = folders.get(folder)
    if real_folder is None:
        real_folder = folders[folder] = os.path.realpath(root / folder)
    real = os.path.join(real_folder, name)
    if os.path.islink(real):
        real = os.path.realpath(real)
    return None if within(real, root_real) else real


def not_regular_problem(path: Path | str) -> str | None:
    """Why ``path`` (which exists) is not read: it is no regular file (a named pipe, a
    socket, a device, a folder), None when it is one. Symbolic links are followed."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing: the caller's own message says so
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file")
    return f"is {kind}, not a regular file; only regular files are read"


# -- data roots beside an output ------------------------------------------------------------------

def data_root_around(path: Path | str) -> Path | None:
    """The nearest folder at or above ``path`` (symbolic links resolved) that is a data root."""
    folder = Path(os.path.realpath(path))
    for candidate in (folder, *folder.parents):
        if (candidate / CSV_DIR).is_dir():
            return candidate
    return None


def data_root_below(folder: Path | str) -> Path | None:
    """A data root inside the existing folder ``folder`` (itself excluded; links not followed)."""
    if not os.path.isdir(folder):
        return None
    for current, folders, _ in os.walk(folder):
        if current != str(folder) and CSV_DIR in folders and os.path.isdir(os.path.join(current, CSV_DIR)):
            return Path(current)
        folders[:] = [f for f in folders if f != CSV_DIR]
    return None


def output_folder_problem(out: Path | str, root: Path | str, name: str = "--out",
                          what: str = "the data root") -> str | None:
    """Why ``out`` cannot be an output folder next to ``root`` (None when it can): it is a
    file, or it is, lies inside or contains ``root``, symbolic links resolved. ``name`` is
    how the message calls ``out`` (a flag or config key), ``what`` the folder ``root``."""
    out, root = Path(out), Path(root)
    if out.exists() and not out.is_dir():
        return f"{name} {out} is a file; give a folder"
    out_real, root_real = os.path.realpath(out), os.path.realpath(root)
    if out_real == root_real:
        return f"{name} {out} is {what} {root}; write elsewhere"
    if within(out_real, root_real):
        return f"{name} {out} lies inside {what} {root}; write elsewhere"
    if within(root_real, out_real):
        return f"{name} {out} contains {what} {root}; write elsewhere"
    return None


def inside_data_root_problem(out: Path | str, what: str, name: str = "--out") -> str | None:
    """Why the output ``out`` (``name``: its flag) must not be used because it is or lies in a
    data root, the nearest folder at or above it (symbolic links resolved) that holds
    ``csv_files/``; None when it lies in none. ``what`` names what would be written there."""
    root = data_root_around(out)
    if root is None:
        return None
    return f"{name} {out} lies inside the data root {root} (it holds {CSV_DIR}/); write {what} elsewhere"


def linked_out_of(folder: Path | str) -> Path | None:
    """The first symbolic link under ``folder`` (an existing output folder) that leads outside
    it, or None: writing there would land elsewhere."""
    real = os.path.realpath(folder)
    for current, folders, files in os.walk(folder):
        for name in sorted(folders + files):
            path = os.path.join(current, name)
            if os.path.islink(path) and not within(os.path.realpath(path), real):
                return Path(path)
    return None


def output_problem(out: Path | str, *, name: str = "--out", what: str = "the output", file: bool = False,
                   inputs: Iterable[tuple[Path | str, str]] = ()) -> str | None:
    """Why a command may not write ``out`` (None when it may): the one rule of the module
    docstring. ``file``: ``out`` is one file (a report) rather than a folder. ``inputs``:
    ``(path, how the message calls it)`` of what the command reads, which ``out`` must
    neither be, lie in nor hold. Checks only paths: nothing is created."""
    out = Path(out)
    if file and out.is_dir():
        return f"{name} {out} is a folder; give a file name"
    if not file and out.exists() and not out.is_dir():
        return f"{name} {out} is a file; give a folder"
    root = data_root_around(out)
    if root is not None:
        where = "is" if os.path.realpath(out) == str(root) else "lies inside"
        return f"{name} {out} {where} the data root {root} (it holds {CSV_DIR}/); write {what} elsewhere"
    if not file:
        held = data_root_below(out)
        if held is not None:
            return f"{name} {out} contains the data root {held}; write {what} elsewhere"
    out_real = os.path.realpath(out)
    for path, label in inputs:
        if not os.path.exists(path):
            continue
        path_real = os.path.realpath(path)
        where = ("is" if out_real == path_real else "lies inside" if within(out_real, path_real)
                 else "contains" if not file and within(path_real, out_real) else None)
        if where:
            return f"{name} {out} {where} {label} {path}; write {what} elsewhere, never into or over an input"
    if not file and out.is_dir():
        leaving = linked_out_of(out)
        if leaving is not None:
            return (f"{name} {out}: {leaving} is a symbolic link to {os.path.realpath(leaving)}, outside "
                    f"the output folder; {what} is written only inside it")
    return None


def check_output(out: Path | str, **rule) -> None:
    """:func:`output_problem` as an :class:`OutputError`."""
    problem = output_problem(out, **rule)
    if problem:
        raise OutputError(problem)


# -- what a command made --------------------------------------------------------------------------

def write_marker(folder: Path | str, command: str) -> Path:
    """Leave the marker that says ``command`` (e.g. ``"fmuia course build"``) made ``folder``."""
    path = Path(folder) / MARKER
    atomic_write(path, json.dumps({"made_by": command}) + "\n")
    return path


def made_by(folder: Path | str, command: str) -> bool:
    """Whether ``folder`` holds the marker of ``command`` (a regular file, not a link)."""
    path = Path(folder) / MARKER
    if path.is_symlink() or not path.is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("made_by") == command
    except (OSError, ValueError, AttributeError):
        return False


def replace_problem(out: Path | str, command: str, name: str = "--out") -> str | None:
    """Why ``--overwrite`` may not remove ``out`` (None when it may: absent, an empty folder,
    or a folder ``command`` made, by its marker). Never a file, never a folder of unknown files."""
    out = Path(out)
    if out.is_symlink():
        return f"{name} {out} is a symbolic link; {command} replaces only a folder it made"
    if not out.exists():
        return None
    if not out.is_dir():
        return f"{name} {out} is a file; {command} replaces only a folder it made"
    if not any(out.iterdir()) or made_by(out, command):
        return None
    return (f"{name} {out} is not empty and was not made by {command} (no {MARKER}); "
            "refusing to delete it: choose a new folder")


# -- writing --------------------------------------------------------------------------------------

def write_failure(err: OSError | RuntimeError, path: Path | str) -> OutputError:
    """A failed write as one line naming ``path`` (disk full, read-only, no permission ...)."""
    reason = getattr(err, "strerror", None) or (str(err).splitlines()[0] if str(err) else type(err).__name__)
    return OutputError(f"cannot write {path}: {reason}")


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn an ``OSError`` of the block into an :class:`OutputError` naming ``path``."""
    try:
        yield
    except OSError as err:
        raise write_failure(err, getattr(err, "filename", None) or path) from None


def atomic_write(path: Path | str, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all: into a temporary file beside it, then
    renamed over it. A failure removes the temporary file and raises :class:`OutputError`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # what open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise write_failure(err, path) from None
    return path


def one_line(text: str) -> str:
    """``text`` on one line: a message that lists things on lines of their own (a YAML
    parser's, a subprocess's) keeps them, separated by "; " (after a colon, by a space)."""
    out = ""
    for line in (line.strip() for line in text.splitlines()):
        if line:
            out += line if not out else (" " if out.endswith(":") else "; ") + line
    return out
