"""The BYOL method: online/target networks, stop-gradient, EMA target, symmetric loss."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from byol_testing import SIZE, make_byol
from sslzoo_byol import BYOL, byol_loss, target_decay


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_defaults_are_the_papers():
    c = BYOL.Config()
    assert (c.optimizer, c.lr, c.lr_batch, c.weight_decay, c.warmup_epochs) == (
        "lars", 0.2, 256, 1.5e-6, 10.0)
    assert (c.proj_hidden_dim, c.proj_dim, c.pred_hidden_dim, c.tau_base) == (4096, 256, 4096, 0.996)
    assert BYOL.augment_name(c) == "byol"


def test_projector_and_predictor_are_linear_bn_relu_linear():
    method = make_byol(proj_hidden_dim=32, proj_dim=12, pred_hidden_dim=24)
    kinds = [type(m) for m in method.projector]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert [m.out_features for m in method.projector if isinstance(m, nn.Linear)] == [32, 12]
    assert [m.out_features for m in method.predictor if isinstance(m, nn.Linear)] == [24, 12]


def test_target_gets_no_gradient_and_the_online_network_does(images):
    method = make_byol()
    method(images, torch.arange(len(images)))["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in method.target_parameters())
    for part in (method.backbone, method.projector, method.predictor):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_optimiser_sees_online_parameters_without_decay_on_biases_and_norms():
    method = make_byol()
    decay, no_decay = method.parameter_groups()
    target = {id(p) for p in method.target_parameters()}
    optimised = decay["params"] + no_decay["params"]
    assert not target & {id(p) for p in optimised}
    online = [p for m in (method.backbone, method.projector, method.predictor) for p in m.parameters()]
    assert {id(p) for p in optimised} == {id(p) for p in online}
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])
    assert all(p.ndim > 1 for p in decay["params"])


def test_loss_regresses_each_views_prediction_on_the_other_views_target(images):
    method = make_byol()
    reference = copy.deepcopy(method)            # same weights, same batch-norm state
    out = method(images, torch.arange(len(images)))
    v1, v2 = (reference.preprocess(v) for v in (images, images.flip(-1)))
    q1 = reference.predictor(reference.projector(reference.backbone(v1)))
    q2 = reference.predictor(reference.projector(reference.backbone(v2)))
    z1 = reference.target_projector(reference.target_backbone(v1))
    z2 = reference.target_projector(reference.target_backbone(v2))
    expected = byol_loss(q1, z2) + byol_loss(q2, z1)
    assert torch.allclose(out["loss"], expected, atol=1e-6)
    assert not torch.allclose(out["loss"], byol_loss(q1, z1) + byol_loss(q2, z2), atol=1e-4)


def test_target_starts_as_the_online_network_and_moves_by_ema_after_each_step(images):
    method = make_byol(total_steps=4, tau_base=0.9)
    online = nn.ModuleList([method.backbone, method.projector])
    target = nn.ModuleList([method.target_backbone, method.target_projector])
    assert torch.equal(flat(online), flat(target))
    optimiser = torch.optim.SGD(method.parameter_groups(), lr=0.5)
    for k in range(3):
        xi = flat(target)
        optimiser.zero_grad()
        method(images, torch.arange(len(images)))["loss"].backward()
        optimiser.step()
        theta = flat(online)                     # the online weights after the step
        assert not torch.equal(theta, xi)
        method.on_step_end()
        tau = float(target_decay(k, 4, 0.9))
        assert torch.allclose(flat(target), tau * xi + (1 - tau) * theta, atol=1e-6)
        assert int(method.target_step) == k + 1


def test_target_batch_norm_runs_in_training_mode_and_is_not_averaged(images):
    method = make_byol()
    bn = method.target_backbone.net[1]
    assert torch.equal(bn.running_mean, torch.zeros(8))
    method(images, torch.arange(len(images)))
    updated = bn.running_mean.clone()
    assert not torch.equal(updated, torch.zeros(8))  # batch statistics, as the official code
    method.on_step_end()
    assert torch.equal(bn.running_mean, updated)      # the EMA moves parameters only


def test_logged_tau_is_the_decay_of_the_coming_update(images):
    method = make_byol(total_steps=10)
    for k in range(3):
        out = method(images, torch.arange(len(images)))
        assert out["tau"].item() == pytest.approx(float(target_decay(k, 10, 0.996)))
        method.on_step_end()


def test_a_single_view_augment_is_called_once_per_view(images):
    from sslzoo import ViewAugment, ViewConfig

    method = make_byol(augment=ViewAugment(ViewConfig(), SIZE))
    v1, v2 = method.views(images)
    assert v1.shape == v2.shape == images.shape and not torch.equal(v1, v2)


def test_step_counter_is_saved_in_the_state_dict(images):
    method = make_byol()
    for _ in range(3):
        method.on_step_end()
    fresh = make_byol()
    fresh.load_state_dict(method.state_dict())
    assert int(fresh.target_step) == 3 and float(fresh.tau()) == float(method.tau())
