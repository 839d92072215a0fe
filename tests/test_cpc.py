from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from sslzoo.augment import CropFlipAugment, NoAugment
from sslzoo.backbone import Backbone
from sslzoo.config import build
from sslzoo.errors import ConfigError
from sslzoo.losses import info_nce_candidates
from sslzoo.method import DataInfo
from sslzoo_plugins.cpc import CPC, ContextNetwork, batch_norm_to_group_norm
from tests.dist_helpers import run_distributed

G = 7  # the paper's grid


class TinyBackbone(Backbone):
    """Two 3x3 convolutions with batch norm, mean-pooled: fast on any patch size."""

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.num_features = width

    def forward_features(self, x: Tensor) -> Tensor:
        return self.net(x)


def make_cpc(size: int = 32, augment: str = "crop-flip", **sets: object) -> CPC:
    values = {"context_dim": 8, "context_layers": 2, **sets}
    config = build(CPC.Config, values)
    aug = (CropFlipAugment if augment == "crop-flip" else NoAugment)(image_size=size)
    return CPC(TinyBackbone(), config, aug, DataInfo(num_samples=64, image_size=size))


# --- the loss against the paper's formula ------------------------------------------

def test_info_nce_candidates_matches_a_loop_over_queries():
    torch.manual_seed(0)
    q, keys = torch.randn(6, 5), torch.randn(9, 5)
    pos = torch.tensor([0, 3, 3, 8, 1, 5])
    loss, acc = info_nce_candidates(q, keys, pos)
    terms, hits = [], 0
    for n in range(6):
        # L = -log exp(z+ . q) / sum_j exp(z_j . q), the positive among the candidates once
        scores = [math.exp(float(q[n] @ keys[m])) for m in range(9)]
        terms.append(-math.log(scores[pos[n]] / sum(scores)))
        hits += max(range(9), key=lambda m: scores[m]) == pos[n]
    assert loss.item() == pytest.approx(sum(terms) / 6, rel=1e-5)
    assert acc.item() == pytest.approx(hits / 6)


# Rotated position (r, s) -> original (i, j), and one step of the direction on the original grid.
def _origin(direction: str, r: int, s: int) -> tuple[int, int]:
    return {"top-down": (r, s), "bottom-up": (G - 1 - r, G - 1 - s),
            "left-right": (G - 1 - s, r), "right-left": (s, G - 1 - r)}[direction]


_STEP = {"top-down": (1, 0), "bottom-up": (-1, 0), "left-right": (0, 1), "right-left": (0, -1)}


def _slow_cpc_loss(method: CPC, z: Tensor) -> tuple[float, float]:
    """van den Oord et al. 2018, Eq. (4) for every direction d, step k and position:
    -log exp(z_{target}^T W_k c) / sum over all patches z' of the batch of exp(z'^T W_k c)."""
    b = z.shape[0]
    cfg = method.config
    # CPC v2: targets through the 1x1 projection, when there is one
    t_z = method.target_proj(z) if method.target_proj is not None else z
    f = t_z.shape[1]
    cands = [(bb, i, j) for bb in range(b) for i in range(G) for j in range(G)]
    cand_z = torch.stack([t_z[bb, :, i, j] for bb, i, j in cands])  # (B*G*G, D), any order
    step_losses, step_accs = [], []
    for d, direction in enumerate(method.directions):
        zr = torch.empty_like(z)
        for r in range(G):
            for s in range(G):
                zr[:, :, r, s] = z[:, :, _origin(direction, r, s)[0], _origin(direction, r, s)[1]]
        c = method.context[d](zr)
        w = method.predictors[d].weight[:, :, 0, 0]            # (K'*D, context_dim)
        for k in range(cfg.steps_to_ignore + 1, cfg.prediction_steps + 1):
            row = k - cfg.steps_to_ignore - 1
            w_k = w[row * f:(row + 1) * f] * cfg.pred_scale
            terms, hits = [], 0
            for bb in range(b):
                for r in range(G - k):
                    for s in range(G):
                        pred = w_k @ c[bb, :, r, s]
                        i, j = _origin(direction, r, s)
                        target = (bb, i + k * _STEP[direction][0], j + k * _STEP[direction][1])
                        scores = (cand_z @ pred).double()
                        t = cands.index(target)
                        terms.append(float(torch.logsumexp(scores, 0) - scores[t]))
                        hits += int(scores.argmax()) == t
            step_losses.append(sum(terms) / len(terms))
            step_accs.append(hits / len(terms))
    return sum(step_losses) / len(step_losses), sum(step_accs) / len(step_accs)


@pytest.mark.parametrize("directions", [1, 4])
def test_cpc_loss_matches_a_loop_over_directions_rows_and_steps(directions):
    torch.manual_seed(0)
    method = make_cpc(directions=directions, prediction_steps=3 if directions == 4 else 5)
    z = torch.randn(2, method.backbone.num_features, G, G) * 0.3
    with torch.no_grad():
        loss, acc = method.cpc_loss(z)
        ref_loss, ref_acc = _slow_cpc_loss(method, z)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-4)
    assert acc.item() == pytest.approx(ref_acc)


def test_cpc_v2_loss_projects_targets_scales_predictions_and_skips_near_steps():
    torch.manual_seed(0)
    method = make_cpc(directions=2, prediction_steps=4, steps_to_ignore=2, target_dim=5,
                      pred_scale=0.1)
    assert method.target_proj.out_channels == 5
    assert method.predictors[0].out_channels == 2 * 5  # steps 3 and 4 only
    z = torch.randn(2, method.backbone.num_features, G, G)
    with torch.no_grad():
        loss, acc = method.cpc_loss(z)
        ref_loss, ref_acc = _slow_cpc_loss(method, z)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-4)
    assert acc.item() == pytest.approx(ref_acc)


def test_v2_options_are_off_by_default_and_the_v2_recipe_turns_them_on():
    c = CPC.Config()
    assert (c.steps_to_ignore, c.target_dim, c.pred_scale, c.color_drop, c.patch_flip) == (
        0, 0, 1.0, False, False)
    from sslzoo.build import resolve

    v2 = resolve({"method": "cpc", "recipe": "v2"}).method_config
    assert (v2.target_dim, v2.pred_scale, v2.steps_to_ignore, v2.prediction_steps) == (
        64, 0.1, 2, 3)
    assert v2.color_drop and v2.patch_flip and not v2.grayscale
    assert (v2.patch_norm, v2.directions) == ("layer", 4)


def test_v2_patch_augmentation_drops_colours_and_flips_patches(monkeypatch):
    import sslzoo_plugins.cpc as cpc_module

    calls = []
    monkeypatch.setattr(cpc_module, "drop_colour_channels",
                        lambda p: calls.append("drop") or p[:, :1].expand_as(p))
    monkeypatch.setattr(cpc_module, "random_flip_patches",
                        lambda p: calls.append("flip") or p.flip(-1))
    method = make_cpc(color_drop=True, patch_flip=True, grayscale=False, patch_crop=1.0)
    x = torch.rand(2, 3, 32, 32)
    method.encode_patches(x, jitter=True)
    assert calls == ["drop", "flip"]
    calls.clear()
    method.encode_patches(x)  # evaluation: no patch augmentation
    assert calls == []


# --- the context network only looks up --------------------------------------------

def test_context_of_row_i_ignores_rows_below_and_depends_on_rows_above():
    torch.manual_seed(0)
    net = ContextNetwork(in_dim=4, dim=6, layers=3)
    z = torch.randn(2, 4, G, G)
    base = net(z)
    for i in range(G):
        future = z.clone()
        future[:, :, i + 1:] = torch.randn_like(future[:, :, i + 1:])
        assert torch.equal(net(future)[:, :, :i + 1], base[:, :, :i + 1])
        past = z.clone()
        past[:, :, i] += 1.0
        changed = net(past)
        assert torch.equal(changed[:, :, :i], base[:, :, :i])
        assert not torch.allclose(changed[:, :, i], base[:, :, i])
    # after three 3-row blocks the last row sees the first one
    top = z.clone()
    top[:, :, 0] += 1.0
    assert not torch.allclose(net(top)[:, :, G - 1], base[:, :, G - 1])


# --- the method ------------------------------------------------------------------

@pytest.mark.parametrize("size, patch", [(32, 8), (64, 16), (224, 56)])
def test_grid_at_common_image_sizes(size, patch, monkeypatch):
    method = make_cpc(size)
    seen = []
    forward = method.backbone.forward
    monkeypatch.setattr(method.backbone, "forward", lambda x: seen.append(x.shape) or forward(x))
    z = method.encode_patches(method.preprocess(torch.rand(1, 3, size, size)))
    assert z.shape == (1, method.backbone.num_features, G, G)
    assert seen == [(G * G, 3, patch, patch)]  # all patches in one backbone call


def test_training_step_gives_gradients_to_backbone_context_and_predictors():
    torch.manual_seed(0)
    method = make_cpc(directions=2)
    out = method(torch.rand(4, 3, 32, 32), torch.arange(4))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert 0 <= out["acc"].item() <= 1
    out["loss"].backward()
    for name, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_few_adam_steps_lower_the_loss():
    torch.manual_seed(0)
    method = make_cpc(16, augment="none", patch_crop=1.0, grid=3, prediction_steps=2)
    images = torch.rand(4, 3, 16, 16)
    opt = torch.optim.Adam(method.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = method(images, torch.arange(4))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.05


def test_resume_from_state_dict_gives_the_same_next_loss():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 16, 16)
    small = {"grid": 3, "prediction_steps": 2, "directions": 2}
    method = make_cpc(16, **small)
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        method(images, torch.arange(4))["loss"].backward()
        opt.step()
    state = {k: v.clone() for k, v in method.state_dict().items()}
    fresh = make_cpc(16, **small)
    fresh.load_state_dict(state, strict=True)
    torch.manual_seed(1)
    expected = method(images, torch.arange(4))
    torch.manual_seed(1)
    got = fresh(images, torch.arange(4))
    assert torch.equal(got["loss"], expected["loss"]) and torch.equal(got["acc"], expected["acc"])


def test_layer_norm_option_removes_batch_statistics_between_patches():
    torch.manual_seed(0)
    method = make_cpc(augment="none", patch_norm="layer")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in method.modules())
    norms = [m for m in method.backbone.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 2 and all(m.num_groups == 1 for m in norms)
    x = method.preprocess(torch.rand(2, 3, 32, 32))
    z = method.encode_patches(x)                       # train mode: batch statistics if any
    alone = method.encode_patches(x[:1])
    assert torch.allclose(z[:1], alone, atol=1e-5)     # no information from other images
    bn = make_cpc(augment="none")
    assert not torch.allclose(bn.encode_patches(x)[:1], bn.encode_patches(x[:1]), atol=1e-5)


def test_batch_norm_to_group_norm_keeps_timm_fused_activation():
    import timm

    bn = timm.layers.BatchNormAct2d(4, act_layer=nn.ReLU)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    new = batch_norm_to_group_norm(nn.Sequential(bn))[0]
    x = torch.randn(2, 4, 3, 3)
    ref = torch.relu(nn.functional.group_norm(x, 1, bn.weight, bn.bias, bn.eps))
    assert torch.allclose(new(x), ref, atol=1e-6)


def test_embed_averages_the_patch_grid_or_uses_the_whole_image():
    torch.manual_seed(0)
    method = make_cpc(embed="grid").eval()
    x = torch.rand(3, 3, 32, 32)
    grid = method.embed(x)
    assert torch.allclose(grid, method.encode_patches(method.preprocess(x)).mean(dim=(-2, -1)))
    method.config.embed = "image"
    assert torch.allclose(method.embed(x), method.backbone(method.preprocess(x)))
    assert grid.shape == (3, method.backbone.num_features)


def test_grayscale_option_feeds_identical_channels():
    x = torch.rand(2, 3, 8, 8)
    grey = make_cpc().preprocess(x) * make_cpc().std + make_cpc().mean
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-6)
    assert torch.allclose(grey[:, 1], grey[:, 2], atol=1e-6)
    colour = make_cpc(grayscale=False).preprocess(x)
    assert not torch.allclose(colour[:, 0], colour[:, 1])


def test_config_rejects_ignoring_every_step_and_colour_dropping_greyscale():
    with pytest.raises(ConfigError, match="steps_to_ignore"):
        build(CPC.Config, {"steps_to_ignore": "5"})
    with pytest.raises(ConfigError, match="grayscale=false"):
        build(CPC.Config, {"color_drop": "true"})


def test_config_rejects_prediction_steps_beyond_the_grid_and_odd_directions():
    with pytest.raises(ConfigError, match="prediction_steps"):
        build(CPC.Config, {"grid": "5", "prediction_steps": "5"})
    with pytest.raises(ConfigError, match="directions"):
        build(CPC.Config, {"directions": "3"})
    with pytest.raises(ConfigError, match="grid"):
        make_cpc(size=6)


def test_cpc_registers_through_the_plugin_loader():
    from sslzoo.plugins import load_plugins

    methods = load_plugins().methods
    assert "cpc" in methods
    assert methods.get("cpc").plugin == "sslzoo"
    assert methods.get("cpc").obj is CPC


# --- DDP: candidates from every process --------------------------------------------

def _rank_loss(rank: int, world_size: int, z: Tensor) -> dict:
    torch.manual_seed(0)
    method = make_cpc(directions=2, prediction_steps=2)
    local = z.chunk(world_size)[rank].clone().requires_grad_(True)
    loss, _ = method.cpc_loss(local)
    loss.backward()
    return {"loss": loss.detach(), "grad": local.grad}


def test_cpc_loss_under_ddp_equals_the_loss_on_the_global_batch():
    torch.manual_seed(0)
    z = torch.randn(4, 12, G, G)
    r0, r1 = run_distributed(_rank_loss, z)
    torch.manual_seed(0)
    method = make_cpc(directions=2, prediction_steps=2)
    full = z.clone().requires_grad_(True)
    loss, _ = method.cpc_loss(full)
    loss.backward()
    assert ((r0["loss"] + r1["loss"]) / 2).item() == pytest.approx(loss.item(), rel=1e-5)
    # DDP averages gradients; gather_with_grad sums every rank's share into the owner
    grads = torch.cat([r0["grad"], r1["grad"]]) / 2
    assert torch.allclose(grads, full.grad, atol=1e-6)
