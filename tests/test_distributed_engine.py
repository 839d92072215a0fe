"""Training under torch.distributed: two gloo CPU processes, as torchrun starts them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslzoo import checkpoint
from sslzoo.build import resolve
from sslzoo.engine import Trainer
from tests.dist_helpers import run_distributed

TINY = {"method": "simclr", "data": "synthetic", "backbone": "small_resnet10", "image_size": 16,
        "batch_size": 32, "epochs": 2, "max_steps": 6, "log_every": 1, "device": "cpu"}
HEAD = {"proj_hidden_dim": 32, "proj_dim": 16}


def _stop_rank0_at_3(state):
    if state.step == 3 and int(os.environ["RANK"]) == 0:
        state.stop = True           # what SIGINT/SIGTERM does on one process


def _fit(rank: int, world_size: int, out: str, stop: bool, resume: bool) -> dict:
    trainer = Trainer(resolve({**TINY, "out": out}, HEAD), resume=resume, quiet=True,
                      callbacks=[_stop_rank0_at_3] if stop else [])
    trainer.fit()
    return {"step": trainer.state.step,
            "params": {k: v.detach().clone() for k, v in trainer.method.named_parameters()}}


def test_two_processes_write_one_run_and_resume_to_the_same_weights(tmp_path):
    straight = run_distributed(_fit, str(tmp_path / "straight"), False, False)
    for key, value in straight[0]["params"].items():
        assert torch.equal(value, straight[1]["params"][key]), key   # DDP keeps replicas equal
    split = run_distributed(_fit, str(tmp_path / "split"), True, False)
    assert [r["step"] for r in split] == [3, 3]   # rank 1 stopped with rank 0
    run_distributed(_fit, str(tmp_path / "split"), False, True)
    a = checkpoint.load(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = checkpoint.load(tmp_path / "split" / "checkpoints" / "last.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    files = sorted(p.relative_to(tmp_path / "split").as_posix()
                   for p in (tmp_path / "split").rglob("*") if p.is_file())
    assert files == ["checkpoints/last.pt", "config.json", "metrics.jsonl"]
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((tmp_path / "split" / "config.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_torchrun_command_from_the_docs(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sslzoo", "train", "simclr", "--data", "synthetic", "--device", "cpu",
           "--max-steps", "5", "--backbone", "small_resnet10", "--image-size", "16",
           "--batch-size", "32", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(out)     # printed by rank 0 only
    assert checkpoint.load(out / "checkpoints" / "last.pt")["step"] == 5
    assert Path(out / "metrics.jsonl").read_text().count('"step": 5') == 1
