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


# -- outside a notebook, with no terminal: whole lines in a log ---------------------------------
def _log_output(monkeypatch) -> io.StringIO:
    """stdout is a log (no terminal), no kernel."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    return out


def test_without_a_terminal_bars_print_a_line_at_every_tenth_flushed(monkeypatch):
    out = _log_output(monkeypatch)
    assert progress.logging_output()
    bar = progress.tqdm(total=50, desc="train", unit="step")
    assert isinstance(bar, progress._LogBar)
    flushed = []
    monkeypatch.setattr(out, "flush", lambda: flushed.append(out.getvalue().count("\n")))
    for step in range(50):
        bar.update(1)
        if step == 20:
            bar.set_postfix(loss="0.123", img_s="45.6", refresh=False)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(" [")[0] for line in lines] == [f"train: {10 * k:3d}% {5 * k}/50" for k in range(11)]
    assert "loss=0.123" in lines[-1] and "img_s=45.6" in lines[-1]
    assert "<" in lines[-1] and "step/s" in lines[-1]  # elapsed<time left, and the rate
    assert flushed and flushed[-1] == len(lines)  # each line reaches the log at once


def test_the_interval_of_log_lines_can_be_set(monkeypatch):
    _log_output(monkeypatch)
    assert progress.tqdm(total=3).mininterval == progress.LOG_INTERVAL_S
    monkeypatch.setenv("FMUIA_PROGRESS_SECONDS", "5")
    assert progress.tqdm(total=3).mininterval == 5
    monkeypatch.setenv("FMUIA_PROGRESS_SECONDS", "often")  # not a number: the default
    assert progress.tqdm(total=3).mininterval == progress.LOG_INTERVAL_S


def test_in_a_terminal_and_in_a_live_notebook_the_bar_is_tqdm_auto(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert not progress.logging_output()
    assert not isinstance(progress.tqdm(total=2, disable=True), progress._HeadlessBar)
    _kernel(monkeypatch, allow_stdin=True)  # a live notebook's stdout is no terminal, yet it is watched
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert not progress.logging_output()


def test_fmuia_train_and_predict_report_progress_in_a_log(tiny_run, tmp_path):
    """``fmuia train`` with stdout to a file, as nohup or CI runs it: lines with the step,
    loss, images/s and time left; ``fmuia predict`` likewise (images)."""
    import os
    import subprocess

    from conftest import TINY_MODEL

    val, checkpoint = tiny_run
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = [f"{k}={'null' if v is None else v}" for k, v in TINY_MODEL.items()]
    sets += [f"data_root={val.parent / 'train'}", f"val_root={val}", f"out_dir={tmp_path / 'run'}", "image_size=32",
             "batch_size=2", "epochs=null", "max_steps=10", "eval_every=10", "num_workers=0", "device=cpu"]
    log = tmp_path / "train.log"
    with log.open("w") as fh:
        done = subprocess.run([sys.executable, "-m", "fmuia_lib.cli", "train", *sum([["--set", s] for s in sets], [])],
                              stdout=fh, stderr=subprocess.PIPE, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [line for line in log.read_text().splitlines() if line.startswith("train:")]
    assert [line.split(" [")[0] for line in lines] == [f"train: {10 * k:3d}% {k}/10" for k in range(11)]
    assert all(f in lines[-1] for f in ("loss=", "img_s=", "step/s", "<")), lines[-1]
    with (tmp_path / "predict.log").open("w") as fh:
        done = subprocess.run([sys.executable, "-m", "fmuia_lib.cli", "predict", "--checkpoint", str(checkpoint),
                               "--data", str(val), "--out", str(tmp_path / "pred"), "--device", "cpu"],
                              stdout=fh, stderr=subprocess.PIPE, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "predict.log").read_text()
    assert "predict: 100% 16/16 [" in text and "img/s" in text


def test_the_suite_relays_a_notebooks_lines_into_its_log(monkeypatch, tmp_path):
    import papermill

    from fmuia_lib.runner import suite

    out = _log_output(monkeypatch)
    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **kw: seen.update(kw))
    nb = tmp_path / "03_train.ipynb"
    nb.write_text("{}")
    suite.run_notebook(nb, tmp_path / "out" / nb.name, {}, progress=True)
    assert isinstance(seen["progress_bar"], dict) and isinstance(seen["progress_bar"]["file"], progress._LogLines)
    relay = seen["stdout_file"]
    relay.write("train:  10% 30/300 [01:00<09:00, 0.5step/s, img_s=2.0, loss=1.234]\ntrain:  20")
    relay.flush()
    assert out.getvalue() == "      | train:  10% 30/300 [01:00<09:00, 0.5step/s, img_s=2.0, loss=1.234]\n"
    relay.write("% 60/300 [02:00<08:00]\n")
    assert out.getvalue().splitlines()[-1] == "      | train:  20% 60/300 [02:00<08:00]"
