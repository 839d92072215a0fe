"""A training subprocess killed with SIGKILL at seeded random moments (one inside a
checkpoint write) resumes to exactly the weights and optimiser state of an uninterrupted
run, for SimCLR, MoCo (queue and pointer) and InstDisc (memory bank and Z)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sslzoo import checkpoint
from sslzoo.cli import cli

STEPS, EVERY, KEEP = 12, 3, 2           # 8 steps per epoch: the run crosses an epoch end
BASE = ["--data", "synthetic", "--backbone", "test_efficientnet", "--image-size", "16",
        "--batch-size", "32", "--max-steps", str(STEPS), "--checkpoint-every", str(EVERY),
        "--keep", str(KEEP), "--log-every", "1", "--device", "cpu", "--seed", "3"]
METHODS = {
    "simclr": ["--set", "proj_hidden_dim=32", "--set", "proj_dim=16"],
    "moco": ["--set", "dim=16", "--set", "mlp_hidden_dim=32", "--set", "queue_size=64"],
    "instdisc": ["--set", "proj_dim=16", "--set", "nce_k=32"],
}
TIMEOUT = 300


def _command(method: str, out: Path, resume: bool = False) -> list[str]:
    options = ["--resume", "--device", "cpu"] if resume else [*BASE, *METHODS[method]]
    return [sys.executable, "-m", "sslzoo", "train", method, *options, "--out", str(out)]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}
    env.pop(checkpoint.PAUSE_ENV, None)
    env.update(extra)
    return env


def _logged_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return len(lines)


def _temporaries(out: Path) -> list[Path]:
    folder = out / "checkpoints"
    return list(folder.glob(".*.tmp")) if folder.is_dir() else []


def _kill_when(proc: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before it could be killed: "
                        f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run did not reach the moment to kill it in time")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == STEPS
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for name in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][name]), torch.as_tensor(sb[i][name])), (i, name)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_run_killed_at_random_moments_resumes_to_identical_weights(tmp_path, method):
    rng = random.Random(f"kill-{method}")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(_command(method, straight), _env())

    # 1: SIGKILL at a seeded random step, somewhere inside training
    first = rng.randint(EVERY + 1, STEPS // 2)
    proc = subprocess.Popen(_command(method, killed), env=_env(), stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: _logged_step(killed) >= first)
    saved = checkpoint.load(killed / "checkpoints" / "last.pt")["step"]
    assert 0 < saved < STEPS

    # 2: resumed, then SIGKILL inside its first checkpoint write (the writer pauses there)
    proc = subprocess.Popen(_command(method, killed, resume=True),
                            env=_env(**{checkpoint.PAUSE_ENV: "60"}), stderr=subprocess.PIPE,
                            text=True)
    _kill_when(proc, lambda: bool(_temporaries(killed)))
    assert _temporaries(killed)                          # the write was cut short ...
    survivor = checkpoint.load(killed / "checkpoints" / "last.pt")   # ... the old file is whole
    assert survivor["step"] >= saved
    for path in checkpoint.step_checkpoints(killed / "checkpoints"):
        checkpoint.load(path)                            # every complete step file still loads

    # 3: resumed to the end: temporaries cleaned, same weights, same rotation
    _run(_command(method, killed, resume=True), _env())
    assert not _temporaries(killed)
    _assert_same_state(checkpoint.load(straight / "checkpoints" / "last.pt"),
                       checkpoint.load(killed / "checkpoints" / "last.pt"))
    expected = [checkpoint.step_name(s) for s in range(EVERY, STEPS + 1, EVERY)][-KEEP:]
    assert [p.name for p in checkpoint.step_checkpoints(killed / "checkpoints")] == expected
    assert [p.name for p in checkpoint.step_checkpoints(straight / "checkpoints")] == expected
    oldest = checkpoint.step_checkpoints(killed / "checkpoints")[0]   # export takes any of them
    exported = CliRunner().invoke(cli, ["export", str(oldest), "--out", str(tmp_path / "b.pth")])
    assert exported.exit_code == 0, exported.output
    assert torch.load(tmp_path / "b.pth", weights_only=True)
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))
