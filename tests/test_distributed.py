"""Data-parallel training: two CPU processes (Gloo) launched by torchrun stay identical."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from test_train import TASKS, tiny_config

WORKER = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    from fmuia_lib.config import TrainConfig
    from fmuia_lib.training import train
    config = TrainConfig.from_yaml(sys.argv[1])
    result = train(config, progress=False)
    rank = int(os.environ["RANK"])
    torch.save({"model": result.model.state_dict(), "tasks": list(result.history["task_id"]),
                "world": int(os.environ["WORLD_SIZE"])}, f"{sys.argv[2]}/rank{rank}.pt")
""")


@pytest.mark.slow
def test_two_process_data_parallel_replicas_stay_identical(make_root, tmp_path):
    root = make_root(tmp_path, tasks=TASKS, n=6)
    config = tiny_config(root, tmp_path / "run", max_steps=4, eval_every=4, seed=5)
    config_path = config.to_yaml(tmp_path / "ddp.yaml")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(config_path), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    for name, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][name]), name
    # each rank trained on its own share of the batch stream
    assert len(ranks[0]["tasks"]) == 4 and ranks[0]["tasks"] != ranks[1]["tasks"]
    # rank 0 wrote the run's checkpoint, after 4 steps
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 4
    for name, value in last["model"].items():
        assert torch.equal(value, ranks[0]["model"][name]), name
