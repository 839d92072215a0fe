"""Every registered method (built-in or third-party) on a tiny backbone: it builds, takes a
training step with a finite loss, its gradients reach the backbone, and its state
round-trips through a checkpoint."""
from __future__ import annotations

import contextlib
import math

import pytest
import torch

from sslzoo.build import build_method, resolve
from sslzoo.method import DataInfo
from sslzoo.plugins import default_plugins

N, SIZE, BATCH = 64, 32, 8
# sizes that fit a batch of 8 tiny images; everything else stays at the paper's default
TINY = {"moco": {"queue_size": 32, "shuffle_bn_groups": 4}, "instdisc": {"nce_k": 16}}


def methods():
    return default_plugins().methods.names()


def tiny_method(name: str):
    config = {k: v for k, v in TINY.get(name, {}).items()
              if k in default_plugins().methods.get(name).obj.Config.__dataclass_fields__}
    spec = resolve({"method": name, "backbone": "small_resnet10", "image_size": SIZE}, config)
    torch.manual_seed(0)
    method = build_method(spec, DataInfo(N, SIZE))
    method.prepare((torch.rand(N, 3, SIZE, SIZE) * 255).to(torch.uint8))
    return spec, method


@pytest.mark.parametrize("name", methods())
def test_method_takes_a_step_with_finite_loss_and_backbone_gradients(name):
    _, method = tiny_method(name)
    images, index = torch.rand(BATCH, 3, SIZE, SIZE), torch.arange(BATCH)
    out = method(images, index)
    assert out["loss"].ndim == 0 and math.isfinite(out["loss"].item())
    out["loss"].backward()
    grads = [p.grad for p in method.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    method.on_step_end()
    feats = method.embed(images)
    assert feats.shape == (BATCH, method.encoder.num_features)


@pytest.mark.parametrize("name", methods())
def test_method_state_round_trips_through_a_checkpoint(name, tmp_path):
    from sslzoo import checkpoint

    _, method = tiny_method(name)
    method(torch.rand(BATCH, 3, SIZE, SIZE), torch.arange(BATCH))["loss"].backward()
    method.on_step_end()
    checkpoint.save_atomic({"model": method.state_dict()}, tmp_path / "m.pt")
    _, fresh = tiny_method(name)
    fresh.load_state_dict(checkpoint.load(tmp_path / "m.pt")["model"])
    for (k, a), b in zip(method.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("name", methods())
def test_method_is_documented(name):
    entry = default_plugins().methods.get(name)
    cls = entry.obj
    assert entry.summary and cls.paper
    from sslzoo.config import describe

    assert all(f.help for f in describe(cls.Config)), f"{name}: every field needs help text"


@pytest.mark.parametrize("name", methods())
def test_method_step_traces_under_torch_compile(name):
    """``--compile``: dynamo traces the step (augments run outside the graph); the eager
    backend keeps the test fast while checking the same tracing."""
    torch._dynamo.reset()   # each method gets its own compile cache and recompile budget
    _, method = tiny_method(name)
    images, index = torch.rand(BATCH, 3, SIZE, SIZE), torch.arange(BATCH)
    out = torch.compile(method, backend="eager")(images, index)
    assert math.isfinite(out["loss"].item())
    out["loss"].backward()
    assert any(p.grad is not None for p in method.backbone.parameters())


# official code that decays every parameter (``SGD(model.parameters(), weight_decay=...)``)
# and SimCLR's, which leaves biases and batch norm out
DECAYS_EVERY_PARAMETER = {"rotation": True, "instdisc": True, "invaspread": True, "moco": True,
                          "colorization": True, "simclr": False}


@pytest.mark.parametrize("name", sorted(DECAYS_EVERY_PARAMETER))
def test_weight_decay_of_biases_and_norms_is_each_papers(name):
    config = default_plugins().methods.get(name).obj.Config()
    assert config.wd_exclude_bias_norm is not DECAYS_EVERY_PARAMETER[name]


@pytest.mark.parametrize("name, exclude", [("rotation", False), ("rotation", True),
                                           ("simclr", True), ("simclr", False)])
def test_optimizer_decays_biases_and_norms_only_when_the_config_says_so(name, exclude):
    from sslzoo.engine import build_optimizer

    spec = resolve({"method": name, "backbone": "small_resnet10", "image_size": SIZE},
                   {"wd_exclude_bias_norm": exclude})
    method = build_method(spec, DataInfo(N, SIZE))
    wd = spec.method_config.weight_decay
    decay_of = {id(p): g["weight_decay"] for g in build_optimizer(method, 0.1).param_groups
                for p in g["params"]}
    trainable = [p for p in method.parameters() if p.requires_grad]
    assert set(decay_of) == {id(p) for p in trainable}
    for p in trainable:
        assert decay_of[id(p)] == (0.0 if exclude and p.ndim <= 1 else wd)


@pytest.mark.parametrize("scaling, batch, expected", [
    ("linear", 512, 0.3 * 512 / 256), ("sqrt", 4096, 0.3 * math.sqrt(4096 / 256))])
def test_peak_learning_rate_follows_the_scaling_rule(scaling, batch, expected):
    from sslzoo.method import OptimConfig, peak_learning_rate

    config = OptimConfig(lr=0.3, lr_batch=256, lr_scaling=scaling)
    assert peak_learning_rate(config, batch) == pytest.approx(expected)
    assert peak_learning_rate(OptimConfig(lr=0.3, lr_batch=0, lr_scaling=scaling), batch) == 0.3


def test_simclr_square_root_rule_is_0075_sqrt_batch():
    # SimCLR Appendix B.1: "LearningRate = 0.075 x sqrt(BatchSize)"
    from sslzoo.method import OptimConfig, peak_learning_rate

    config = OptimConfig(lr=0.075, lr_batch=1, lr_scaling="sqrt")
    assert peak_learning_rate(config, 1024) == pytest.approx(0.075 * 32)


@pytest.mark.parametrize("name", methods())
def test_method_step_makes_no_host_read(name, monkeypatch):
    """The whole optimiser step of the engine (forward, backward, the non-finite guard,
    the optimiser, ``on_step_end``) runs on the meta device, where any read of a tensor's
    value on the host (``item``, ``tolist``, ``bool``, boolean indexing) raises: on a GPU
    the step queues its kernels without waiting for them."""
    from sslzoo.engine import build_optimizer
    from sslzoo.numerics import NonFiniteGuard

    autocast = torch.autocast   # autocast has no meta device type; there it does nothing
    monkeypatch.setattr(torch, "autocast", lambda device_type, *a, **k: (
        contextlib.nullcontext() if device_type == "meta" else autocast(device_type, *a, **k)))
    _, method = tiny_method(name)
    meta = torch.device("meta")
    _to_device_but_augments(method, meta)
    optimizer = build_optimizer(method, 0.1, meta)
    guard = NonFiniteGuard(0, meta)
    images, index = torch.empty(BATCH, 3, SIZE, SIZE, device=meta), torch.arange(BATCH, device=meta)
    for _ in range(2):   # the second step sees the optimiser's state, queues and banks filled
        out = method(images, index)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        guard.observe(out["loss"], [p.grad for p in method.parameters() if p.grad is not None])
        optimizer.step()
        method.on_step_end()
    assert out["loss"].device == meta


def _to_device_but_augments(module: torch.nn.Module, device: torch.device) -> None:
    """``module.to(device)`` except for augments: they hold no state the step changes and
    draw their parameters on the device of the images they get (kornia's samplers cannot
    be moved to the meta device)."""
    from sslzoo.augment import Augment

    module._apply(lambda t: t.to(device), recurse=False)
    for child in module.children():
        if not isinstance(child, Augment):
            _to_device_but_augments(child, device)
