"""Where fmuia is published: the one setting behind every Colab install, badge and download.

:data:`REPOSITORY` is set by whoever publishes the project (README, *Publishing*), and only
there. Everything that names an address is generated from it: each notebook's Colab badge and
setup cell (``python -m fmuia_lib.publishing`` rewrites them; ``--check`` says whether they
match), the address ``fmuia_lib.runner.suite`` downloads a notebook from on Colab, and the course's
student setup (``fmuia_lib.course``). Unset, nothing points at any account: a notebook has
no badge (it is uploaded to Colab), and its setup cell installs fmuia from a wheel or the
project's folder put beside it, or on Google Drive.

On Colab the setup cell takes, in this order: a wheel ``fmuia-*.whl`` or a project folder
``fmuia/`` in the working folder; in notebooks that mount Google Drive, the same in
``MyDrive/fmuia``; then the published repository. ``tests/test_colab.py`` installs the wheel
it builds through that cell.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path

#: ``"OWNER/NAME"`` or ``"OWNER/NAME@REF"`` of the GitHub repository that holds this project,
#: set by whoever publishes it (REF: a branch or tag, default ``main``). Empty: not published.
REPOSITORY = ""

#: Notebooks that keep files for the others on Google Drive (``run_dir``): 01 and 02 do not.
DRIVE_NOTEBOOKS = ("03", "04", "05", "06")
#: Notebooks that train, and so want a GPU.
TRAINING_NOTEBOOKS = ("03", "06")
#: Where a notebook looks on Google Drive for fmuia (a wheel or the project folder) and where
#: the series keeps its files (``fmuia_lib.runner.run_folder.COLAB_RUN_DIR`` is under it).
DRIVE_FOLDER = "/content/drive/MyDrive/fmuia"
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}(@[A-Za-z0-9._/-]+)?$")
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
#: The title cell's badge line starts with one of these (the generator finds it by them).
BADGE_PREFIXES = ("[![Open In Colab]", "**On Colab**")


def repository(setting: str | None = None) -> tuple[str, str] | None:
    """``(OWNER/NAME, REF)`` of the setting, None when unset; a malformed one is refused."""
    setting = REPOSITORY if setting is None else setting
    if not setting:
        return None
    if not _SLUG.match(setting):
        raise ValueError(f"fmuia_lib/publishing.py: REPOSITORY {setting!r} is not 'OWNER/NAME' or 'OWNER/NAME@REF'")
    slug, _, ref = setting.partition("@")
    return slug, ref or "main"


def install_url(setting: str | None = None) -> str:
    """What pip installs on Colab when no wheel or folder is found (``""``: nothing)."""
    repo = repository(setting)
    return f"git+https://github.com/{repo[0]}@{repo[1]}" if repo else ""


def notebooks_url(setting: str | None = None) -> str | None:
    """Raw address of the published ``notebooks/`` folder (None when unpublished)."""
    repo = repository(setting)
    return f"https://raw.githubusercontent.com/{repo[0]}/{repo[1]}/notebooks/" if repo else None


def badge_line(notebook: str, setting: str | None = None) -> str:
    """The title cell's Colab line for ``notebook`` (a file name such as ``03_....ipynb``)."""
    repo = repository(setting)
    if repo:
        url = f"https://colab.research.google.com/github/{repo[0]}/blob/{repo[1]}/notebooks/{notebook}"
        return f"[![Open In Colab]({BADGE_IMAGE})]({url})"
    return ("**On Colab**: upload this notebook (*File > Upload notebook* at "
            "[colab.research.google.com](https://colab.research.google.com)); the series is not published "
            "at an address Colab could open (README, *Publishing*).")


def setup_cell(notebook: str, extras: str = "", setting: str | None = None) -> str:
    """The setup cell of ``notebook`` (its stem or file name); ``extras`` such as
    ``"[course]"`` for the student version of a course."""
    number = Path(notebook).name[:2]
    drive = number in DRIVE_NOTEBOOKS
    trains = number in TRAINING_NOTEBOOKS
    published = install_url(setting)
    on_drive = f" or in {DRIVE_FOLDER.removeprefix('/content/drive/')} on Google Drive"
    where = "the working folder" + (on_drive if drive else "")
    comment = ("Setup. On Google Colab this installs fmuia with its core dependencies only: Colab's torch, "
               "Jupyter and widgets stay as they are (a constraints file pins them to the installed "
               f"versions). fmuia comes from a wheel (fmuia-*.whl) or the project folder (fmuia/) in {where}, "
               "else from where the project is published ("
               + (published if published else "nowhere yet") + ": fmuia_lib/publishing.py). "
               "It turns on Colab's widget manager"
               + (" and mounts Google Drive, where the series keeps its files (`run_dir`), so that "
                  "notebooks running on separate machines share them." if drive else ".")
               + (" On a CPU runtime it says that training wants a GPU." if trains else ""))
    lines = [*textwrap.wrap(comment, 92, initial_indent="# ", subsequent_indent="# "),
             "# Elsewhere, install the repository once with `make install` or `pip install -e \".[lab]\"`.",
        "import sys",
        "",
        'if "google.colab" in sys.modules:',
        "    import importlib.metadata",
        "    import pathlib",
        "    import subprocess",
        "",
        "    from google.colab import " + ("drive, output" if drive else "output"),
        "",
    ]
    if drive:
        lines += ['    drive.mount("/content/drive")']
    lines += [
        f'    PUBLISHED, EXTRAS = "{published}", "{extras}"  # written by `python -m fmuia_lib.publishing`',
        "    folders = [pathlib.Path.cwd()" + (f', pathlib.Path("{DRIVE_FOLDER}")]' if drive else "]"),
        '    found = [p for f in folders for p in [*sorted(f.glob("fmuia-*.whl"))[-1:], f / "fmuia"]',
        '             if p.suffix == ".whl" or (p / "pyproject.toml").is_file()]',
        "    if not found and not PUBLISHED:",
        '        raise RuntimeError("fmuia is not published: put its wheel (`pip wheel --no-deps .` in a "',
        '                           "checkout) or the project folder fmuia/ in "',
        f'                           "{where}, then run this cell again")',
        '    source = found[0].resolve().as_uri() if found else PUBLISHED',
        '    installed = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}',
        '    keep = pathlib.Path("/tmp/keep-colab-packages.txt")',
        '    keep.write_text("".join(f"{name}=={installed[name]}\\n" for name in',
        '                            ("torch", "torchvision", "ipywidgets", "ipykernel") if name in installed))',
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", str(keep), f"fmuia{EXTRAS} @ {source}"],',
        "                   check=True)",
        "    output.enable_custom_widget_manager()",
    ]
    if trains:
        lines += [
            "    import torch",
            "",
            "    if not torch.cuda.is_available():",
            '        print("This notebook trains and wants a GPU: Runtime > Change runtime type > Hardware accelerator > "',
            '              "GPU, then run it again from the top.")',
        ]
    lines += [
        "",
        "%matplotlib inline",
        "import matplotlib.pyplot as plt",
        "import numpy as np",
        "import pandas as pd",
        "from IPython.display import display",
        "",
        "from fmuia_lib import env_info, profiles",
        "from fmuia_lib.notebook import viz",
        "from fmuia_lib.runner import run_folder",
        "",
        'plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 10})',
        'pd.set_option("display.precision", 4)',
        'pd.set_option("display.width", 160)',
        'pd.set_option("display.max_columns", 40)',
    ]
    return "\n".join(lines)


def with_badge(title: str, notebook: str, setting: str | None = None, line: str | None = None) -> str:
    """``title`` (a title cell's source) with its Colab line replaced by ``line`` (default:
    :func:`badge_line`); a title without one is refused."""
    lines = title.split("\n")
    hits = [i for i, text in enumerate(lines) if text.startswith(BADGE_PREFIXES)]
    if len(hits) != 1:
        raise ValueError(f"{notebook}: the title cell has {len(hits)} Colab lines, expected one")
    lines[hits[0]] = badge_line(notebook, setting) if line is None else line
    return "\n".join(lines)


def _assignment_config(source: str) -> str:
    """An otter ``# ASSIGNMENT CONFIG`` cell's source without an install of fmuia in its
    requirements (the exercises and their tests need numpy, scipy, pandas and torch only)."""
    return re.sub(r"^requirements: .*$", "requirements: [numpy, scipy, pandas, torch]", source, flags=re.M)


def notebook_paths(root: Path) -> list[Path]:
    """The series' notebooks and the results notebooks that are runs of them."""
    pattern = "[0-9][0-9]_*.ipynb"
    return sorted((root / "notebooks").glob(pattern)) + sorted((root / "results").glob(pattern))


def sync(root: Path, check: bool = False, setting: str | None = None) -> list[Path]:
    """Rewrite every notebook's badge and setup cell (and its course requirements) from the
    setting; returns the notebooks that differed. ``check``: change nothing."""
    changed = []
    for path in notebook_paths(root):
        text = path.read_text(encoding="utf-8")
        nb = json.loads(text)
        # the results notebook is a run of notebooks/NN_*: it opens the same way
        name = next(p.name for p in (root / "notebooks").glob(f"{path.name[:2]}_*.ipynb"))
        cells = nb["cells"]
        new = {0: with_badge("".join(cells[0]["source"]), name, setting), 1: setup_cell(name, setting=setting)}
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "raw" and "".join(cell["source"]).startswith("# ASSIGNMENT CONFIG"):
                new[i] = _assignment_config("".join(cell["source"]))
        for i, source in new.items():
            cells[i]["source"] = source.splitlines(keepends=True)
        out = json.dumps(nb, indent=1, ensure_ascii=False)
        if out != text:
            changed.append(path)
            if not check:
                path.write_text(out, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python -m fmuia_lib.publishing [--check]``: the notebooks' badges and setup cells from :data:`REPOSITORY`."""
    from fmuia_lib.profiles import project_root

    parser = argparse.ArgumentParser(prog="python -m fmuia_lib.publishing", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a notebook differs")
    args = parser.parse_args(argv)
    try:
        changed = sync(project_root(), check=args.check)
    except ValueError as exc:
        print(f"fmuia publishing: error: {exc}", file=sys.stderr)
        return 2
    verb = "differ from" if args.check else "rewritten from"
    print(f"{len(changed)} notebook(s) {verb} REPOSITORY = {REPOSITORY!r}" + "".join(f"\n  {p}" for p in changed))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
