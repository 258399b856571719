"""Progress bars that read well where they end up: a terminal, a live notebook, a saved notebook.

Every progress bar of the library is made by :func:`tqdm` (a drop-in for ``tqdm.auto.tqdm``):

* in a terminal, and in a notebook open in a live frontend (JupyterLab, VS Code, Colab),
  it is ``tqdm.auto``'s bar: the text bar, or the ipywidgets bar;
* in a notebook executed headless (papermill, ``fmuia suite``, nbclient, nbval) it is a
  text bar that prints whole lines to stdout, at most one every
  :data:`HEADLESS_INTERVAL_S` seconds plus the final one. A widget bar there would be
  saved as its first text, ``0%| 0/1000``, which is all GitHub and nbviewer can show of
  it; a plain text bar would be saved as every refresh joined by carriage returns,
  which many viewers print as a garbled run of bars.

* outside a notebook with no terminal to draw on (stdout or stderr not a terminal: a log
  file, ``nohup``, CI, a papermill log), it is a bar that prints whole lines to stdout,
  each as soon as drawn and flushed: the first, one every :data:`LOG_INTERVAL_S` seconds
  (``FMUIA_PROGRESS_SECONDS`` sets another interval) and at every tenth of the total, and
  the last. ``fmuia train`` puts the loss and images/s on its lines; tqdm adds the count,
  the elapsed time, the time left and the rate.

A notebook is *headless* when the kernel's current request does not allow input
(``input()``): live frontends allow it, the executors above never do. ipykernel keeps that
flag per request (``Kernel._allow_stdin``); it is the one signal a kernel has of what runs
it (papermill sets no variable of its own), and it is read defensively (absent: live).
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any, TextIO

from tqdm.std import tqdm as std_tqdm

__all__ = ["tqdm", "headless_kernel", "in_kernel", "logging_output", "HEADLESS_INTERVAL_S", "LOG_INTERVAL_S"]

#: Seconds between two lines of a headless bar (its first and last line are always printed).
HEADLESS_INTERVAL_S = 30.0
#: Seconds between two lines of a bar written to a log (stdout not a terminal), at the most.
LOG_INTERVAL_S = 30.0
#: A bar written to a log also prints a line at every this fraction of its total.
LOG_FRACTION = 0.1


def headless_kernel() -> bool:
    """True inside a Jupyter kernel whose current cell was sent by a headless executor."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    kernel = getattr(shell, "kernel", None)
    if kernel is None:  # a terminal, a plain IPython shell, a script
        return False
    return not bool(getattr(kernel, "_allow_stdin", True))


def in_kernel() -> bool:
    """True inside a Jupyter kernel (live or headless)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return getattr(shell, "kernel", None) is not None


def logging_output() -> bool:
    """True outside a notebook when stdout or stderr is no terminal (a log file, nohup, CI):
    a redrawn bar would be lost or garbled there, so bars print whole lines."""
    if in_kernel():
        return False
    return not all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))


def _log_interval() -> float:
    """:data:`LOG_INTERVAL_S`, or the seconds ``FMUIA_PROGRESS_SECONDS`` gives (a positive number)."""
    text = os.environ.get("FMUIA_PROGRESS_SECONDS", "").strip()
    try:
        value = float(text) if text else LOG_INTERVAL_S
    except ValueError:
        return LOG_INTERVAL_S
    return value if value > 0 and value == value else LOG_INTERVAL_S


class _LogLines:
    """The stream of a bar written to a log: each drawing becomes a line at once, except a
    redraw of the count last printed (the closing redraw). Flushed line by line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self._last: str | None = None

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if not line:
            return
        count = _Lines._count(line)
        if count == self._last:
            return
        self._last = count
        self.stream.write(line + "\n")
        self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()


class _Lines:
    """The stream a headless bar writes to: each bar state becomes one line of its own.

    tqdm's text bar redraws itself with ``"\\r" + bar``; here every redraw is a line. A
    line is held back until the next redraw shows another count (a redraw of the same
    count, such as the closing one, replaces it) or the bar ends (tqdm then writes a
    blank), so a count is printed once, with its latest timing.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self._pending: str | None = None

    @staticmethod
    def _count(line: str) -> str:
        """``"20/50"`` of ``"desc:  40%|####    | 20/50 [00:03<00:04, 6.1it/s]"`` (``"20it"``
        without a total). Not the bar's drawing: its width follows the length of the rate
        text, so the closing redraw of the same count can draw it one character shorter."""
        head = line.split(" [", 1)[0]
        return head.rsplit("|", 1)[-1].strip()

    def _emit(self) -> None:
        if self._pending is not None:
            self.stream.write(self._pending + "\n")
            self._pending = None

    def write(self, text: str) -> None:
        if not text:  # tqdm probes the stream with an empty write before closing
            return
        line = text.replace("\r", "").rstrip()
        if not line:  # the bar ends (or clears itself): its pending state is its last
            self._emit()
            return
        if self._pending is not None and self._count(self._pending) != self._count(line):
            self._emit()
        self._pending = line

    def flush(self) -> None:
        self.stream.flush()


class _HeadlessBar(std_tqdm):
    """tqdm's text bar without its monitor thread, whose forced refreshes would print a
    second line right after a regular one."""

    monitor_interval = 0


class _LogBar(_HeadlessBar):
    """A headless bar that also draws a line each time its count passes another tenth of
    its total (:data:`LOG_FRACTION`), however short the time since the last line."""

    #: a log line needs no drawn bar
    BAR_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        total = kwargs.get("total")
        if total is None and args and hasattr(args[0], "__len__"):
            total = len(args[0])
        if total:
            kwargs.setdefault("bar_format", self.BAR_FORMAT)
        super().__init__(*args, **kwargs)
        self._every = max(1, math.ceil(self.total * LOG_FRACTION)) if self.total else None
        self._next = self._every

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        if self._every and not self.disable and self.n >= self._next:
            while self._next <= self.n:
                self._next += self._every
            if self.last_print_n != self.n:
                self.refresh()
                self.last_print_n, self.last_print_t = self.n, self._time()
        return shown


def tqdm(*args: Any, **kwargs: Any) -> std_tqdm:
    """A progress bar, as ``tqdm.auto.tqdm(*args, **kwargs)`` would make it except in a
    headless notebook (see the module docstring), where it is a line-per-update text bar
    on stdout that stays after closing (``leave`` is ignored: a saved output is a log),
    and outside a notebook when stdout or stderr is no terminal (:func:`logging_output`),
    where it prints a line at most every :data:`LOG_INTERVAL_S` seconds and at every tenth
    of the total, each at once."""
    if logging_output():
        kwargs.update(file=_LogLines(sys.stdout), leave=True, dynamic_ncols=False)
        kwargs.setdefault("mininterval", _log_interval())
        kwargs.setdefault("miniters", 1)  # lines by time (and tenths), never tqdm's adaptive count
        kwargs.setdefault("ncols", 100)
        return _LogBar(*args, **kwargs)
    if not headless_kernel():
        from tqdm.auto import tqdm as auto_tqdm

        return auto_tqdm(*args, **kwargs)
    kwargs.update(file=_Lines(sys.stdout), leave=True, dynamic_ncols=False)
    kwargs.setdefault("mininterval", HEADLESS_INTERVAL_S)
    kwargs.setdefault("ncols", 100)
    return _HeadlessBar(*args, **kwargs)
