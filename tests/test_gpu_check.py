"""``benchmarks/gpu_check.py``, the script a lent GPU runs, run here at its tiny CPU size so that it cannot rot."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_check_runs_both_recipes_at_a_tiny_size_on_the_cpu(capsys):
    gpu_check = _load()
    assert gpu_check.main(["--tiny"]) == 0
    out = capsys.readouterr().out
    for profile in gpu_check.PROFILES:
        section = out.split(f"== {profile} on CPU", 1)[1].split("\n== ", 1)[0]
        rate = float(re.search(r"fmuia train step\s+([\d.]+) images/s", section).group(1))
        loader = float(re.search(r"loader, 0 workers\s+([\d.]+) images/s", section).group(1))
        assert rate > 0 and loader > 0
        assert re.search(r"bf16 vs fp32 loss, \w+\s+relative difference \d", section)  # on the batches the recipe draws
        # resuming on the CPU is exact: the same losses and weights as the run straight through
        assert "largest loss difference 0, largest weight difference 0 (0: exact)" in section, section
    assert "plain fwd+bwd+AdamW" in out  # gpu-full is also timed against a plain loop


def test_without_a_gpu_cuda_is_refused_and_nothing_asked_is_nothing_done(capsys):
    import pytest
    import torch

    gpu_check = _load()
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_check.main([]) == 0 and "--tiny" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(["--device", "cuda"])
    assert exit_.value.code == 2 and "no CUDA device" in capsys.readouterr().err
