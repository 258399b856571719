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


def test_a_redraw_of_the_same_count_replaces_its_line_whatever_the_bar_width():
    """The bar's drawing narrows when the rate text grows (ncols is fixed): the closing redraw
    of 4/4 must still replace the last line, and each new count must get a line of its own."""
    out = io.StringIO()
    lines = progress._Lines(out)
    for text in ("\rpredict:   0%|          | 0/4 [00:00<?, ?img/s]",
                 "\rpredict:  50%|#####     | 2/4 [00:00<00:00, 812.3img/s]",
                 "\rpredict: 100%|##########| 4/4 [00:00<00:00, 998.1img/s]",
                 "\rpredict: 100%|#########| 4/4 [00:00<00:00, 10423.7img/s]",
                 "\rpredict: 7it [00:01, 6.2it/s]", "\rpredict: 9it [00:01, 6.3it/s]", "\n"):
        lines.write(text)
    assert out.getvalue().splitlines() == [
        "predict:   0%|          | 0/4 [00:00<?, ?img/s]",
        "predict:  50%|#####     | 2/4 [00:00<00:00, 812.3img/s]",
        "predict: 100%|#########| 4/4 [00:00<00:00, 10423.7img/s]",
        "predict: 7it [00:01, 6.2it/s]", "predict: 9it [00:01, 6.3it/s]"]


@pytest.mark.parametrize("interval", [None, 0.5])
def test_headless_bars_refresh_rarely_unless_asked(monkeypatch, interval):
    _kernel(monkeypatch, allow_stdin=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    kwargs = {} if interval is None else {"mininterval": interval}
    bar = progress.tqdm(total=2, disable=False, **kwargs)
    assert bar.mininterval == (progress.HEADLESS_INTERVAL_S if interval is None else interval)
    bar.close()


def test_the_library_makes_its_bars_here():
    import fmuia_lib.challenge.predict as predict
    import fmuia_lib.training.loop as loop

    assert predict.tqdm is progress.tqdm and loop.tqdm is progress.tqdm
