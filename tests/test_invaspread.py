from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslzoo import config as cfg
from sslzoo import distributed
from sslzoo.errors import ConfigError
from sslzoo.losses import invariance_spreading_loss
from sslzoo.method import DataInfo
from sslzoo_plugins.invaspread import InvaSpread
from tests.tiny import Identity, TinyBackbone
from tests.dist_helpers import run_distributed






def make(seed: int = 0, **overrides: object) -> InvaSpread:
    torch.manual_seed(seed)
    config = cfg.build(InvaSpread.Config, overrides)
    return InvaSpread(TinyBackbone(), config, Identity(), DataInfo(32, 16))


def reference_loss(z1: Tensor, z2: Tensor, t: float, detach_keys: bool) -> Tensor:
    """Ye et al. 2019, Eq. (5) as the official BatchCriterion computes it: every one of
    the 2N embeddings is a query against the other 2N - 1, one term at a time."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    keys = z.detach() if detach_keys else z
    n2, n = len(z), len(z1)
    total = z.new_zeros(())
    for r in range(n2):
        positive = (r + n) % n2
        others = [k for k in range(n2) if k != r]
        denominator = sum(torch.exp(keys[k] @ z[r] / t) for k in others)
        total = total + torch.log(torch.exp(keys[positive] @ z[r] / t) / denominator)
        for k in others:
            if k != positive:
                total = total + torch.log(1 - torch.exp(keys[k] @ z[r] / t) / denominator)
    return -total / n2


def test_hand_worked_example():
    # Two images with orthogonal embeddings e1, e2 whose copies are identical:
    # z = [e1, e2 | e1, e2]. For every query the other three dot products are
    # (1 with its copy, 0, 0), so with t = 1/ln 2 the exponentials are (2, 1, 1):
    # P(copy) = 2/4 = 1/2 and P(other) = 1/4 for each of the other two. Each query adds
    # -log(1/2) - 2 log(3/4); averaged over the four queries that is
    # log 2 + 2 log(4/3) = log(32/9).
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    z = torch.stack([e1, e2])
    loss = invariance_spreading_loss(z, z.clone(), temperature=1 / math.log(2))
    assert loss.item() == pytest.approx(math.log(32 / 9), rel=1e-6)


@pytest.mark.parametrize("detach_keys", [True, False])
@pytest.mark.parametrize("t", [0.1, 0.5])
def test_loss_and_gradients_match_the_slow_loop(detach_keys, t):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(5, 8, generator=g, requires_grad=True)
    z2 = torch.randn(5, 8, generator=g, requires_grad=True)
    loss = invariance_spreading_loss(z1, z2, t, detach_keys=detach_keys)
    grads = torch.autograd.grad(loss, (z1, z2))
    expected = reference_loss(z1.double(), z2.double(), t, detach_keys)
    expected_grads = torch.autograd.grad(expected, (z1, z2))
    assert torch.allclose(loss.double(), expected, rtol=1e-5)
    for got, want in zip(grads, expected_grads):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_detached_keys_change_the_gradient_not_the_value():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(4, 6, generator=g, requires_grad=True)
    z2 = torch.randn(4, 6, generator=g)
    a = invariance_spreading_loss(z1, z2, 0.1, detach_keys=True)
    b = invariance_spreading_loss(z1, z2, 0.1, detach_keys=False)
    assert torch.allclose(a, b)
    ga, = torch.autograd.grad(a, z1)
    gb, = torch.autograd.grad(b, z1)
    assert not torch.allclose(ga, gb)


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="z1 and z2"):
        invariance_spreading_loss(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ConfigError, match="temperature"):
        invariance_spreading_loss(torch.randn(3, 4), torch.randn(3, 4), temperature=0.0)


def test_training_step_gradient_reaches_the_backbone():
    method = make()
    out = method.training_step(torch.rand(6, 3, 16, 16), torch.arange(6))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and 0 <= out["acc"] <= 1
    for name, p in method.backbone.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_step_scores_the_two_views_of_each_image():
    method = make().eval()                                # batch norm fixed: views must agree
    images = torch.rand(6, 3, 16, 16)
    out = method.training_step(images, torch.arange(6))
    z = method.head(method.backbone(method.preprocess(images)))
    assert torch.allclose(out["loss"], invariance_spreading_loss(z, z, 0.1), rtol=1e-5)
    assert out["acc"] == 1.0


def test_a_few_steps_lower_the_loss():
    method = make(temperature=0.5)
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(8):
        loss = method.training_step(images, torch.arange(8))["loss"]
        loss.backward()
        with torch.no_grad():
            for p in method.parameters():
                p -= 0.5 * p.grad
                p.grad = None
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_official_code_defaults():
    c = InvaSpread.Config()
    assert (c.optimizer, c.lr, c.lr_batch, c.momentum, c.weight_decay) == (
        "sgd", 0.03, 128, 0.9, 5e-4)
    assert (c.temperature, c.proj_dim, c.detach_keys) == (0.1, 128, True)
    assert InvaSpread.augment_name(c) == "instdisc"


def test_registers_through_the_plugin_loader():
    from sslzoo.plugins import load_plugins

    methods = load_plugins().methods
    assert "invaspread" in methods
    assert methods.get("invaspread").plugin == "sslzoo"
    assert methods.get("invaspread").obj is InvaSpread


def _global_batch() -> tuple[Tensor, Tensor, nn.Linear]:
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    torch.manual_seed(0)
    return x1, x2, nn.Linear(5, 6)


def _rank_loss_and_grad(rank: int, world_size: int) -> dict:
    x1, x2, encoder = _global_batch()
    part = slice(4 * rank, 4 * rank + 4)                  # this rank's share of the batch
    out = {}
    for detach in (True, False):
        encoder.zero_grad()
        loss = invariance_spreading_loss(encoder(x1[part]), encoder(x2[part]), 0.1,
                                         detach_keys=detach)
        loss.backward()
        grad = distributed.all_reduce_mean(encoder.weight.grad)  # what DDP does
        out[detach] = (distributed.all_reduce_mean(loss.detach()), grad)
    return out


@pytest.mark.parametrize("detach", [True, False])
def test_distributed_loss_and_gradients_equal_the_global_batch(detach, _distributed_results):
    x1, x2, encoder = _global_batch()
    loss = invariance_spreading_loss(encoder(x1), encoder(x2), 0.1, detach_keys=detach)
    loss.backward()
    for result in _distributed_results:
        rank_loss, rank_grad = result[detach]
        assert torch.allclose(rank_loss, loss.detach(), rtol=1e-5)
        assert torch.allclose(rank_grad, encoder.weight.grad, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def _distributed_results() -> list[dict]:
    return run_distributed(_rank_loss_and_grad)


def test_recipes_are_the_official_scripts():
    from sslzoo.build import resolve

    cifar = resolve({"method": "invaspread", "recipe": "cifar"})
    assert not cifar.augment_config.grayscale_first
    assert (cifar.train.image_size, cifar.train.batch_size) == (32, 128)
    big = resolve({"method": "invaspread", "recipe": "imagenet"})
    c = big.method_config
    assert (c.lr, c.lr_batch, c.weight_decay, c.temperature) == (0.001, 64, 5e-4, 0.1)
    assert c.lr_milestones == pytest.approx((1 / 3, 2 / 3))
    assert big.augment_cls.name == "crop-flip" and big.augment_config.jitter_prob == 0
    assert big.train.pretrained and big.train.image_size == 224


def test_every_parameter_decays_as_in_the_official_code():
    m = make()
    groups = m.parameter_groups()
    assert len(groups) == 1 and "weight_decay" not in groups[0]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in m.parameters()}
