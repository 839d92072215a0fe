"""BYOL end to end: discovered through its entry point, trained and evaluated like the
built-ins, and resumed mid-run without restarting the target decay schedule."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from sslzoo import checkpoint
from sslzoo.build import resolve
from sslzoo.cli import cli
from sslzoo.engine import Trainer, train
from byol_testing import run_two_processes
from sslzoo_byol import target_decay

SMALL = ["--set", "proj_hidden_dim=32", "--set", "proj_dim=16", "--set", "pred_hidden_dim=32"]
TINY = ["--data", "synthetic", "--backbone", "small_resnet10", "--image-size", "8",
        "--batch-size", "32", "--device", "cpu", *SMALL]


def test_installed_package_registers_byol_from_its_distribution():
    out = subprocess.run([sys.executable, "-m", "sslzoo", "list", "byol", "--json"],
                         capture_output=True, text=True, check=True).stdout
    rows = {r["kind"]: r for r in json.loads(out)}
    assert rows["method"]["plugin"] == "sslzoo-byol" and rows["method"]["module"] == "sslzoo_byol.method"
    assert rows["augment"]["plugin"] == "sslzoo-byol"


def test_cli_trains_and_evaluates_byol_on_tiny_data(tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(cli, ["train", "byol", *TINY, "--max-steps", "2", "--log-every", "1",
                                 "--out", str(run)])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["method_plugin"] == "sslzoo-byol" and config["augment"]["name"] == "byol"
    assert config["versions"]["plugins"]["sslzoo-byol"] == "0.1.0"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(0 <= r["loss"] <= 8 for r in rows)
    result = runner.invoke(cli, ["eval", str(run), "--protocol", "knn", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.output)["knn_top1"] <= 1


def test_bad_augment_setting_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["train", "byol", *TINY, "--out", str(tmp_path / "r"),
                                      "--set", "aug.view2_blur_prob=2"])
    assert result.exit_code == 2 and "view2_blur_prob" in result.output
    assert "Traceback" not in result.output


def tiny_spec(out):
    return resolve({"method": "byol", "data": "synthetic", "backbone": "small_resnet10",
                    "image_size": 8, "batch_size": 32, "epochs": 1, "max_steps": 4,
                    "log_every": 1, "device": "cpu", "seed": 0, "out": str(out)},
                   {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32,
                    "tau_base": 0.9})


def stop_at(step):
    def callback(state):
        state.stop = state.stop or state.step == step
    return callback


def test_resumed_run_continues_the_tau_schedule_and_matches_an_uninterrupted_run(tmp_path):
    straight = train(tiny_spec(tmp_path / "straight"), quiet=True)
    trainer = Trainer(tiny_spec(tmp_path / "split"), callbacks=[stop_at(2)], quiet=True)
    split = trainer.fit()
    assert trainer.state.interrupted
    assert int(checkpoint.load(split / "checkpoints" / "last.pt")["model"]["target_step"]) == 2
    train(tiny_spec(tmp_path / "split"), resume=True, quiet=True)
    rows = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    # the engine tells the method K = 4 planned steps; step k+1 logs tau_k
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["tau"] for r in rows] == pytest.approx(
        [float(target_decay(k, 4, 0.9)) for k in range(4)], abs=1e-6)
    a = checkpoint.load(straight / "checkpoints" / "last.pt")["model"]
    b = checkpoint.load(split / "checkpoints" / "last.pt")["model"]
    assert int(a["target_step"]) == int(b["target_step"]) == 4
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _train_distributed(rank, out):
    trainer = Trainer(tiny_spec(out), quiet=True)
    trainer.fit()
    m = trainer.method
    return {"step": int(m.target_step),
            "target": {k: v.detach().clone() for k, v in m.target_backbone.state_dict().items()},
            "online": {k: v.detach().clone() for k, v in m.backbone.state_dict().items()}}


def test_under_ddp_both_processes_keep_identical_online_and_target_networks(tmp_path):
    ranks = run_two_processes(_train_distributed, str(tmp_path / "ddp"))
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    for part in ("online", "target"):
        for key, value in ranks[0][part].items():
            if "running" in key or "num_batches" in key:
                continue                 # batch-norm statistics are each process's own
            assert torch.equal(value, ranks[1][part][key]), (part, key)
