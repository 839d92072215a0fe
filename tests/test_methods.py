"""Every registered method (built-in or third-party) on a tiny backbone: it builds, takes a
training step with a finite loss, its gradients reach the backbone, and its state
round-trips through a checkpoint."""
from __future__ import annotations

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
