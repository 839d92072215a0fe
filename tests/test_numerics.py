"""Non-finite losses: counted on the device, never saved, the step named; skipped steps
leave weights, buffers and optimiser state untouched; the step itself never syncs."""
from __future__ import annotations

import json

import pytest
import torch

from sslzoo import checkpoint
from sslzoo.build import resolve
from sslzoo.engine import Trainer, TrainingError, train
from sslzoo.numerics import NonFiniteGuard

TINY = {"data": "synthetic", "backbone": "test_efficientnet", "image_size": 16, "batch_size": 16,
        "max_steps": 6, "log_every": 100, "device": "cpu", "seed": 0}
SIMCLR = {"proj_hidden_dim": 16, "proj_dim": 8}
MOCO = {"dim": 8, "mlp_hidden_dim": 16, "queue_size": 32}


def _patch_loss(monkeypatch, target: str, steps: set[int], change) -> None:
    """Replace the loss function ``target`` by ``change(out, *args)`` on the given
    (1-based) calls."""
    import importlib

    module, name = target.rsplit(".", 1)
    real = getattr(importlib.import_module(module), name)
    calls = [0]

    def loss(*args, **kwargs):
        calls[0] += 1
        out = real(*args, **kwargs)
        return change(out, *args) if calls[0] in steps else out
    monkeypatch.setattr(target, loss)


def nan_at(monkeypatch, target: str, steps: set[int]) -> None:
    """Make the loss function ``target`` return NaN on the given calls."""
    _patch_loss(monkeypatch, target, steps, lambda out, *args: out * float("nan"))


def nan_grad_at(monkeypatch, target: str, steps: set[int]) -> None:
    """Make the loss function ``target`` keep its value but get a NaN gradient on the
    given calls (``0 * sqrt(0)``: value 0, gradient 0 * inf)."""
    _patch_loss(monkeypatch, target, steps, lambda out, first, *rest:
                out + 0 * (first - first.detach()).flatten()[0].abs().sqrt())


def test_guard_flags_a_non_finite_gradient_under_a_finite_loss():
    guard = NonFiniteGuard(limit=0, device=torch.device("cpu"))
    good, bad = torch.ones(3), torch.tensor([1.0, float("nan")])
    assert bool(guard.observe(torch.tensor(1.0), [good]))
    assert not bool(guard.observe(torch.tensor(1.0), [good, bad]))
    assert guard.check() == ([], 2)


def test_a_nan_gradient_with_a_finite_loss_stops_the_run_before_any_checkpoint_holds_it(
        tmp_path, monkeypatch):
    nan_grad_at(monkeypatch, "sslzoo_plugins.simclr.nt_xent", {3})
    spec = resolve({**TINY, "method": "simclr", "out": str(tmp_path / "run"),
                    "checkpoint_every": 2}, SIMCLR)
    with pytest.raises(TrainingError, match="gradient is not finite at step 3;"):
        Trainer(spec, quiet=True).fit()
    saved = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_guard_counts_non_finite_steps_and_names_the_one_beyond_the_limit():
    guard = NonFiniteGuard(limit=1, device=torch.device("cpu"))
    for value in (1.0, float("nan"), 2.0, float("inf"), float("nan")):
        guard.observe(torch.tensor(value))
    assert guard.check() == ([2], 4)
    stop = NonFiniteGuard(limit=0, device=torch.device("cpu"), step=10)
    stop.observe(torch.tensor(1.0))
    assert stop.check() == ([], None)
    stop.observe(torch.tensor(float("-inf")))
    assert stop.check() == ([], 12)


def test_a_protected_non_finite_step_leaves_weights_and_momentum_untouched():
    layer = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    guard = NonFiniteGuard(limit=5, device=torch.device("cpu"))
    x = torch.randn(4, 3)

    def step(scale: float) -> None:
        with guard.protect(list(layer.parameters()), opt):
            loss = layer(x).sum() * scale
            guard.observe(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()

    step(float("nan"))                         # first step: its lazily made state is dropped
    assert not opt.state
    step(1.0)
    before = [p.detach().clone() for p in layer.parameters()]
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in layer.parameters()]
    step(float("inf"))
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    assert all(torch.equal(m, opt.state[p]["momentum_buffer"])
               for m, p in zip(momentum, layer.parameters()))
    assert guard.check() == ([1, 3], None)


def test_nan_after_a_checkpoint_stops_naming_the_step_and_leaves_it_byte_identical(
        tmp_path, monkeypatch):
    nan_at(monkeypatch, "sslzoo_plugins.simclr.nt_xent", {5})
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    seen = {}

    def remember(state):
        if state.step == 5:            # last.pt is step 4's; step 5's loss was NaN
            seen["bytes"] = last.read_bytes()
    spec = resolve({**TINY, "method": "simclr", "out": str(tmp_path / "run"),
                    "checkpoint_every": 2, "keep": 5}, SIMCLR)
    with pytest.raises(TrainingError, match="not finite at step 5;.*lower the learning rate"):
        Trainer(spec, callbacks=[remember], quiet=True).fit()   # caught at step 6's checkpoint
    assert last.read_bytes() == seen["bytes"]
    assert checkpoint.load(last)["step"] == 4
    assert [p.name for p in checkpoint.step_checkpoints(last.parent)] == [
        "step-000002.pt", "step-000004.pt"]


def test_skipped_non_finite_steps_leave_no_trace_and_the_limit_holds(tmp_path, monkeypatch):
    nan_at(monkeypatch, "sslzoo_plugins.moco.info_nce", {3})
    snapshots = {}

    def snapshot(state):
        if state.step in (2, 3):
            t = trainer
            snapshots[state.step] = (
                {k: v.clone() for k, v in t.method.state_dict().items()},
                {i: {k: v.clone() for k, v in s.items()}
                 for i, s in t.optimizer.state_dict()["state"].items()})
    spec = resolve({**TINY, "method": "moco", "out": str(tmp_path / "run"), "max_steps": 4,
                    "log_every": 1, "skip_nonfinite": 1}, MOCO)
    trainer = Trainer(spec, callbacks=[snapshot], quiet=True)
    run = trainer.fit()
    (model2, opt2), (model3, opt3) = snapshots[2], snapshots[3]
    assert all(torch.equal(model2[k], model3[k]) for k in model2)   # queue, ptr, BN, weights
    assert all(torch.equal(opt2[i][k], opt3[i][k]) for i in opt2 for k in opt2[i])
    assert checkpoint.load(run / "checkpoints" / "last.pt")["nonfinite_steps"] == [3]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 3, "skipped_nonfinite": 1} in rows
    nan_at(monkeypatch, "sslzoo_plugins.moco.info_nce", {2, 3})
    with pytest.raises(TrainingError, match=r"step 3 \(more than --skip-nonfinite 1\)"):
        train(resolve({**spec.train.__dict__, "out": str(tmp_path / "two")}, MOCO), quiet=True)


def test_the_engine_never_waits_for_the_device_inside_a_step(tmp_path, monkeypatch):
    """Host reads of a tensor (item, tolist, bool, int, float) made by the engine's own step
    code (the loop, the guard, the loss and optimiser calls) are recorded and must be none."""
    import sys

    spec = resolve({**TINY, "method": "moco", "out": str(tmp_path / "run"), "max_steps": 2,
                    "skip_nonfinite": 2}, MOCO)
    trainer = Trainer(spec, quiet=True)
    real_step, syncs = Trainer._step, []
    ours = ("sslzoo/engine.py", "sslzoo/numerics.py")

    def spy(name, real):
        def read(*args):
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            if caller.endswith(ours):
                syncs.append((name, caller))
            return real(*args)
        return read

    def step(self, images, index):
        with monkeypatch.context() as m:
            for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
                m.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
            return real_step(self, images, index)
    monkeypatch.setattr(Trainer, "_step", step)
    trainer.fit()
    assert trainer.state.step == 2
    # the first step creates the optimiser's state lazily: its one check is the only read
    assert syncs == [("__bool__", syncs[0][1])] and syncs[0][1].endswith("numerics.py")
