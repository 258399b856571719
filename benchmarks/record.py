"""The record a benchmark leaves under ``results/``: what it printed, the command, the machine.

Figures live where the run that measured them writes them; README and docs link the
record, never retype its numbers. A script wraps its run in :func:`recorded`::

    with recorded("bench_metrics", args.record):
        ...  # everything printed here goes to the terminal and into results/bench_metrics.md

The file is written only when the block ends without an error, so a failed run never
replaces a good record. Run the script again to renew it; do not edit it by hand.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages ("n/a" where the system has none): a busy machine's
    figures are slower."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"


def machine() -> dict[str, str]:
    """What the figures depend on: CPU, cores, load, GPU, versions, the checkout's commit."""
    info = {"CPU": cpu_model(), "CPU cores": str(os.cpu_count()),
            "threads": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"}
    info["load average at the end"] = load_average()
    info["Python"] = platform.python_version()
    with contextlib.suppress(ImportError):
        import torch

        info["torch"] = torch.__version__
        info["GPU"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        info["commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = "unknown (not a git checkout)"
    return info


def render(title: str, command: str, output: str, info: dict[str, str], when: datetime.datetime) -> str:
    lines = [f"# {title}", "",
             f"Written by `{command}` on {when:%Y-%m-%d %H:%M} UTC. Do not edit: run the command again "
             "to renew it.", "", "| machine | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in info.items()]
    lines += ["", "What the run printed:", "", "```", output.rstrip("\n"), "```", ""]
    return "\n".join(lines)


class _Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def recorded(name: str, record: str | Path | None = "", title: str | None = None,
             argv: list[str] | None = None) -> Iterator[None]:
    """Print to the terminal and, when the block succeeds, write ``record`` (``""``: the
    default ``results/NAME.md``; ``None``: no record)."""
    if record is None:
        yield
        return
    path = Path(record) if record else RESULTS / f"{name}.md"
    argv = sys.argv if argv is None else argv
    script = Path(argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(REPO)
    command = " ".join(["python", shlex.quote(str(script)), *map(shlex.quote, argv[1:])])
    captured = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
        yield
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(title or name, command, captured.getvalue(), machine(),
                           datetime.datetime.now(datetime.timezone.utc)), encoding="utf-8")
    print(f"record: {path}")
