"""Progress bars: tqdm.auto's bar where someone watches, whole text lines in a notebook run headless."""
from __future__ import annotations

import io
import sys
import types

import pytest
from tqdm.std import tqdm as std_tqdm

from fmuia_lib import progress


def _kernel(monkeypatch, allow_stdin: bool | None) -> None:
    """Pretend to run inside a kernel whose current request does (not) allow input."""
    kernel = types.SimpleNamespace() if allow_stdin is None else types.SimpleNamespace(_allow_stdin=allow_stdin)
    shell = types.SimpleNamespace(kernel=kernel)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_outside_a_kernel_and_in_a_live_frontend_the_bar_is_tqdm_auto(monkeypatch):
    assert not progress.headless_kernel()  # pytest: no kernel
    _kernel(monkeypatch, allow_stdin=True)  # JupyterLab, VS Code, Colab allow input()
    assert not progress.headless_kernel()
    _kernel(monkeypatch, allow_stdin=None)  # a kernel without the flag counts as live
    assert not progress.headless_kernel()


def test_a_headless_kernel_gets_a_text_bar_of_whole_lines(monkeypatch):
    _kernel(monkeypatch, allow_stdin=False)  # papermill, nbclient, nbval
    assert progress.headless_kernel()
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    bar = progress.tqdm(total=4, desc="predict", unit="img", mininterval=0, leave=False)
    assert isinstance(bar, std_tqdm) and bar.monitor_interval == 0  # no second line from the monitor thread
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("predict:   0%") and lines[-1].startswith("predict: 100%")
    assert sum(line.startswith("predict: 100%") for line in lines) == 1  # the closing redraw replaces it
    assert all("/4 [" in line for line in lines)  # leave=False is ignored: the log stays


@pytest.mark.parametrize("interval", [None, 0.5])
def test_headless_bars_refresh_rarely_unless_asked(monkeypatch, interval):
    _kernel(monkeypatch, allow_stdin=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    kwargs = {} if interval is None else {"mininterval": interval}
    bar = progress.tqdm(total=2, disable=False, **kwargs)
    assert bar.mininterval == (progress.HEADLESS_INTERVAL_S if interval is None else interval)
    bar.close()


def test_the_library_makes_its_bars_here():
    import fmuia_lib.predict as predict
    import fmuia_lib.training.loop as loop

    assert predict.tqdm is progress.tqdm and loop.tqdm is progress.tqdm
