"""The training loop on tiny synthetic data: metrics, checkpoints, exact resume."""
from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

from sslzoo import checkpoint
from sslzoo.build import resolve
from sslzoo.engine import Trainer, TrainingError, lr_lambda, train
from sslzoo.errors import CheckpointError, ConfigError

TINY = {"data": "synthetic", "backbone": "small_resnet10", "image_size": 16, "batch_size": 64,
        "epochs": 3, "max_steps": 6, "log_every": 1, "device": "cpu", "seed": 0}


def tiny_spec(out, **changes):
    return resolve({**TINY, "method": "simclr", "out": str(out), **changes},
                   {"proj_hidden_dim": 32, "proj_dim": 16})


def weights(run_dir):
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")["model"]


def interrupt_at(step):
    def callback(state):
        if state.step == step:
            os.kill(os.getpid(), signal.SIGINT)   # what Ctrl-C does
    return callback


def test_run_directory_holds_config_metrics_and_checkpoint(tmp_path):
    run = train(tiny_spec(tmp_path / "run", max_steps=3), quiet=True)
    config = json.loads((run / "config.json").read_text())
    assert config["method"]["name"] == "simclr" and config["method"]["temperature"] == 0.1
    assert config["augment"]["name"] == "simclr"
    assert config["versions"]["torch"] == str(torch.__version__)
    assert config["method_plugin"] == "sslzoo"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["images_per_s"] > 0 for r in rows)
    ckpt = checkpoint.load(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 3 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "config"}
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_interrupted_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path):
    straight = train(tiny_spec(tmp_path / "straight"), quiet=True)
    trainer = Trainer(tiny_spec(tmp_path / "split"), callbacks=[interrupt_at(3)], quiet=True)
    split = trainer.fit()
    assert trainer.state.interrupted and trainer.state.step == 3
    assert checkpoint.load(split / "checkpoints" / "last.pt")["step"] == 3
    # 4 steps per epoch: the resumed run finishes epoch 0 mid-way and crosses into epoch 1
    train(tiny_spec(tmp_path / "split"), resume=True, quiet=True)
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_without_a_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(tiny_spec(tmp_path / "none"), resume=True, quiet=True)


def test_starting_over_an_existing_run_is_refused(tmp_path):
    train(tiny_spec(tmp_path / "run", max_steps=1), quiet=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_spec(tmp_path / "run", max_steps=1), quiet=True)


def test_diverging_loss_stops_with_an_actionable_error(tmp_path, monkeypatch):
    from sslzoo import losses

    monkeypatch.setattr("sslzoo_plugins.simclr.nt_xent",
                        lambda *a, **k: losses.nt_xent(*a, **k) * float("nan"))
    with pytest.raises(TrainingError, match="lower the learning rate"):
        train(tiny_spec(tmp_path / "nan", max_steps=2), quiet=True)


def test_learning_rate_warms_up_linearly_then_follows_a_cosine():
    f = lr_lambda(total_steps=110, warmup_steps=10, schedule="cosine")
    assert [f(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)
    assert f(110) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule_drops_by_gamma_at_each_milestone_fraction():
    f = lr_lambda(total_steps=200, warmup_steps=0, schedule="step",
                  milestones=(0.6, 0.8), gamma=0.1)
    assert [f(s) for s in (0, 119, 120, 159, 160, 199)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    with pytest.raises(ConfigError, match="increasing"):
        lr_lambda(10, 0, "step", milestones=(0.8, 0.6))


def test_training_run_follows_the_step_schedule(tmp_path):
    spec = resolve({**TINY, "method": "simclr", "out": str(tmp_path / "run"), "max_steps": 4},
                   {"proj_hidden_dim": 32, "proj_dim": 16, "schedule": "step",
                    "lr_milestones": (0.5,), "lr_gamma": 0.2, "warmup_epochs": 0})
    run = train(spec, quiet=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    peak = 0.3 * 64 / 256
    assert [r["lr"] for r in rows] == pytest.approx([peak, peak, 0.2 * peak, 0.2 * peak])


def test_peak_learning_rate_follows_the_linear_scaling_rule(tmp_path):
    trainer = Trainer(tiny_spec(tmp_path / "run", max_steps=1), quiet=True)
    trainer.fit()
    assert trainer.peak_lr == pytest.approx(0.3 * 64 / 256)
    trainer = Trainer(tiny_spec(tmp_path / "run2", max_steps=1, lr=0.05), quiet=True)
    trainer.fit()
    assert trainer.peak_lr == 0.05


def test_training_lowers_the_loss_on_a_fixed_batch():
    from sslzoo.build import build_method
    from sslzoo.method import DataInfo

    torch.manual_seed(0)
    spec = tiny_spec("unused")
    method = build_method(spec, DataInfo(16, 16))
    # near-identical views: the output batch norm of the official head already spreads the
    # embeddings, so at T 0.5 the loss starts close to its floor (about 1.5 for 32 views);
    # at T 0.1 the floor is near 0 and the optimiser must take the loss most of the way there
    method.config.temperature = 0.1
    method.augment = torch.nn.Identity()   # a fixed input isolates the optimiser
    images = torch.rand(16, 3, 16, 16)
    opt = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    first = None
    for _ in range(15):
        loss = method(images + 0.05 * torch.randn_like(images), torch.arange(16))["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 4


def test_a_method_step_traces_under_torch_compile():
    from sslzoo.build import build_method
    from sslzoo.method import DataInfo

    method = build_method(tiny_spec("unused"), DataInfo(8, 16))
    compiled = torch.compile(method, backend="eager")   # augment runs outside the graph
    out = compiled(torch.rand(8, 3, 16, 16), torch.arange(8))
    out["loss"].backward()
    assert math.isfinite(out["loss"].item())


def test_parameter_groups_with_lr_scale_get_a_multiple_of_the_peak_rate():
    from sslzoo.engine import build_optimizer

    class Scaled(torch.nn.Module):
        config = resolve({**TINY, "method": "simclr"}).method_config

        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

        def parameter_groups(self):
            return [{"params": self.a.parameters()},
                    {"params": self.b.parameters(), "lr_scale": 10.0}]

    opt = build_optimizer(Scaled(), 0.01)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.1])


@pytest.mark.parametrize("max_steps, planned", [(6, 6), (100, 12)])
def test_method_is_told_the_planned_steps_of_the_run(tmp_path, max_steps, planned):
    # 256 synthetic images / 64 per batch = 4 steps per epoch, 3 epochs, capped by max_steps
    trainer = Trainer(tiny_spec(tmp_path / "run", max_steps=max_steps), quiet=True)
    trainer._setup()
    assert trainer.method.data.total_steps == planned == trainer.state.total_steps
