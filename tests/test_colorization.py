"""The colorization plugin: L input, rebalanced soft-encoded cross-entropy, resume,
decoding, regression option and registration."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
import pytest
import torch
from click.testing import CliRunner
from torch import Tensor

from sslzoo import color
from sslzoo import config as cfg
from sslzoo.method import DataInfo
from sslzoo_plugins import colorization
from sslzoo_plugins.colorization import Colorization
from tests.tiny import Identity, TinyBackbone

SIZE = 16






def make(seed: int = 0, **overrides: Any) -> Colorization:
    torch.manual_seed(seed)
    config = cfg.build(Colorization.Config, {k: str(v) for k, v in overrides.items()})
    backbone = TinyBackbone(relu_out=True, in_chans=Colorization.backbone_in_chans(config))
    return Colorization(backbone, config, Identity(), DataInfo(64, SIZE))


def images(n: int = 6, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g)
    return (x + torch.rand(n, 3, 1, 1, generator=g)).clamp(0, 1)   # a colour cast per image


def uint8(x: Tensor) -> Tensor:
    return (x * 255).round().to(torch.uint8)


def test_registers_through_the_plugin_loader() -> None:
    from sslzoo.plugins import load_plugins

    methods = load_plugins().methods
    assert "colorization" in methods
    entry = methods.get("colorization")
    assert entry.plugin == "sslzoo" and entry.obj is Colorization


def test_defaults_follow_the_paper() -> None:
    c = Colorization.Config()
    assert (c.optimizer, c.lr, c.momentum, c.beta2, c.weight_decay) == (
        "adam", 3e-5, 0.9, 0.99, 1e-3)
    assert (c.grid_size, c.neighbours, c.sigma, c.rebalance_lambda, c.temperature) == (
        10, 5, 5.0, 0.5, 0.38)
    assert Colorization.backbone_in_chans(c) == 1


def test_preprocess_feeds_the_normalised_lightness() -> None:
    m = make()
    x = images(2)
    l_in = m.preprocess(x)
    assert l_in.shape == (2, 1, SIZE, SIZE)
    assert torch.allclose(l_in, (color.rgb_to_lab(x)[:, :1] - 50) / 100)
    assert m.embed(x).shape == (2, 16)                              # evaluation sees L


def test_gradients_reach_the_backbone_through_the_one_channel_stem() -> None:
    m = make()
    out = m(images(4), torch.arange(4))
    assert set(out) == {"loss", "acc"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    stem = m.backbone.net[0].weight
    assert stem.shape[1] == 1 and stem.grad is not None and stem.grad.abs().sum() > 0


def test_a_backbone_whose_map_is_narrower_than_its_pooled_features_works() -> None:
    # timm's MobileNetV3 pools through its own hidden layer (num_features 1024) while the
    # map that colorization classifies per pixel has feature_channels (288) channels
    from sslzoo.backbones import create_backbone

    config = cfg.build(Colorization.Config, {})
    backbone = create_backbone("mobilenetv3_small_050", in_chans=1)
    assert backbone.feature_channels != backbone.num_features
    m = Colorization(backbone, config, Identity(), DataInfo(64, 32))
    x = torch.rand(2, 3, 32, 32)
    m(x, torch.arange(2))["loss"].backward()
    assert m.embed(x).shape == (2, backbone.num_features)


def _reference_loss(m: Colorization, x: Tensor) -> float:
    """Eq. 2 with v(Z) = w_{argmax Z} written out per pixel and bin."""
    lab = color.rgb_to_lab(x)
    ab = lab[:, 1:, 2::4, 2::4]                                     # stride-4 subsample
    with torch.no_grad():
        logits = m.predict((lab[:, :1] - 50) / 100, ab.shape[-2:])
    bins, w = m.bins, m.class_weights
    total, count = 0.0, 0
    for b in range(ab.shape[0]):
        for i in range(ab.shape[2]):
            for j in range(ab.shape[3]):
                a_, b_ = ab[b, 0, i, j].item(), ab[b, 1, i, j].item()
                d = [math.hypot(a_ - bins[q, 0].item(), b_ - bins[q, 1].item())
                     for q in range(len(bins))]
                near = sorted(range(len(bins)), key=lambda q: d[q])[:5]
                k = [math.exp(-d[q] ** 2 / 50) for q in near]
                z = {q: kq / sum(k) for q, kq in zip(near, k)}
                lse = math.log(sum(math.exp(v) for v in logits[b, :, i, j].tolist()))
                ce = -sum(zq * (logits[b, q, i, j].item() - lse) for q, zq in z.items())
                total += w[near[0]].item() * ce
                count += 1
    return total / count


def test_loss_matches_a_slow_reference_with_rebalancing() -> None:
    m = make()
    m.prepare(uint8(images(12, seed=7)))
    assert not torch.allclose(m.class_weights, torch.ones_like(m.class_weights))
    x = images(2, seed=8)
    loss = m.losses(x)["loss"].item()
    assert loss == pytest.approx(_reference_loss(m, x), rel=1e-4)


def test_prepare_stores_the_smoothed_prior_and_its_weights() -> None:
    m = make()
    sample = uint8(images(20, seed=3))
    m.prepare(sample)
    ab = color.downsample(color.rgb_to_lab(sample.float() / 255)[:, 1:], 4)
    p = color.smooth_distribution(color.bin_distribution(ab, m.bins), m.bins, 5.0)
    assert torch.allclose(m.prior, p, atol=1e-6)
    assert (m.prior * m.class_weights).sum().item() == pytest.approx(1.0, abs=1e-5)
    assert m.class_weights[m.prior.argmin()] > m.class_weights[m.prior.argmax()]


def test_resume_restores_the_rebalancing_and_weights_exactly() -> None:
    m = make()
    m.prepare(uint8(images(10, seed=5)))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    x = images(4)
    for _ in range(2):
        opt.zero_grad()
        m(x, torch.arange(4))["loss"].backward()
        opt.step()
    fresh = make(seed=9)
    fresh.load_state_dict(m.state_dict())                          # strict
    assert torch.equal(fresh.class_weights, m.class_weights) and torch.equal(fresh.bins, m.bins)
    m.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(m.losses(x)["loss"], fresh.losses(x)["loss"])
        assert torch.equal(m.colorize(x), fresh.colorize(x))


def test_training_lowers_the_loss() -> None:
    m = make()
    m.prepare(uint8(images(12, seed=2)))
    x = images(8)
    opt = torch.optim.Adam(m.parameters(), lr=3e-2)
    first = m(x, torch.arange(8))["loss"].item()
    for _ in range(8):
        opt.zero_grad()
        m(x, torch.arange(8))["loss"].backward()
        opt.step()
    assert m(x, torch.arange(8))["loss"].item() < 0.8 * first


def test_colorize_keeps_the_lightness_and_uses_the_annealed_mean(
        monkeypatch: pytest.MonkeyPatch) -> None:
    m = make()
    x = images(2)
    q = int((m.bins - torch.tensor([30.0, -20.0])).norm(dim=1).argmin())
    logits = torch.full((2, len(m.bins), 4, 4), -30.0)
    logits[:, q] = 30.0                                              # certain of one bin
    monkeypatch.setattr(m, "predict", lambda l_in, size: logits)
    out = m.colorize(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    lightness = color.rgb_to_lab(x)[:, :1]                         # (2, 1, S, S)
    ab = m.bins[q].view(1, 2, 1, 1).expand(2, 2, SIZE, SIZE)
    expected = color.lab_to_rgb(torch.cat([lightness, ab], dim=1))  # L of x, ab of bin q
    assert torch.allclose(out, expected, atol=1e-4)


def test_regression_option_trains_l2_on_ab() -> None:
    m = make(loss="regression")
    assert m.head.out_channels == 2
    x = images(3)
    out = m.losses(x)
    lab = color.rgb_to_lab(x)
    ab = lab[:, 1:, 2::4, 2::4] / 110
    pred = m.predict((lab[:, :1] - 50) / 100, (4, 4))
    assert out["loss"].item() == pytest.approx(0.5 * (pred - ab).square().sum(1).mean().item(),
                                               rel=1e-5)
    out["loss"].backward()
    assert m.backbone.net[0].weight.grad.abs().sum() > 0
    assert m.colorize(x).shape == x.shape


def test_colorize_command_writes_a_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = make()
    monkeypatch.setattr("sslzoo.runs.load_run_and_test_images",
                        lambda run_dir, num, device, method: (m, images(num)))

    @click.group()
    def cli() -> None:
        pass

    colorization.register_commands(cli=cli)
    out = tmp_path / "c.png"
    result = CliRunner().invoke(cli, ["colorize", str(tmp_path), "--out", str(out), "--num", "3"])
    assert result.exit_code == 0, result.output
    from PIL import Image

    with Image.open(out) as img:                                   # 3 rows x 3 columns
        assert img.size == (3 * (SIZE + 2) + 2, 3 * (SIZE + 2) + 2)
    assert m.training


# ------------------------------------------------------------- the official assets from files

def _bins_and_prior(tmp_path: Path, q: int = 313) -> tuple[str, str, Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    cells = np.stack(np.meshgrid(np.arange(-11, 12), np.arange(-11, 12)), -1).reshape(-1, 2)
    bins = (cells[rng.choice(len(cells), q, replace=False)] * 10).astype(np.float64)
    prior = rng.random(q)
    prior /= prior.sum()
    np.save(tmp_path / "pts_in_hull.npy", bins)
    np.save(tmp_path / "prior_probs.npy", prior)
    return str(tmp_path / "pts_in_hull.npy"), str(tmp_path / "prior_probs.npy"), bins, prior


def test_bins_file_sets_the_classes_and_the_head(tmp_path: Path) -> None:
    bins_file, _, bins, _ = _bins_and_prior(tmp_path)
    m = make(bins_file=bins_file)
    assert torch.equal(m.bins, torch.from_numpy(bins).float())
    assert m.head.out_channels == 313 and m.class_weights.shape == (313,)
    assert torch.isfinite(m.losses(images(2))["loss"])


def test_prior_file_gives_the_official_rebalancing_without_smoothing(tmp_path: Path) -> None:
    bins_file, prior_file, _, prior = _bins_and_prior(tmp_path)
    m = make(bins_file=bins_file, prior_file=prior_file)
    m.prepare(uint8(images(4)))
    p = torch.from_numpy(prior).float()
    assert torch.allclose(m.prior, p)
    assert torch.allclose(m.class_weights, color.rebalance_weights(p, 0.5))


def test_bad_asset_files_are_rejected_with_the_fix(tmp_path: Path) -> None:
    import numpy as np

    from sslzoo.errors import ConfigError

    bins_file, _, bins, prior = _bins_and_prior(tmp_path)
    np.save(tmp_path / "wide.npy", np.zeros((313, 3)))
    with pytest.raises(ConfigError, match=r"\(Q, 2\)"):
        make(bins_file=str(tmp_path / "wide.npy"))
    np.save(tmp_path / "short.npy", prior[:100])
    with pytest.raises(ConfigError, match="313"):
        make(bins_file=bins_file, prior_file=str(tmp_path / "short.npy"))
    np.save(tmp_path / "negative.npy", -prior)
    with pytest.raises(ConfigError, match="negative"):
        make(bins_file=bins_file, prior_file=str(tmp_path / "negative.npy"))
    gone = make(bins_file=str(tmp_path / "gone.npy"))       # a rebuilt run needs no file
    with pytest.raises(ConfigError, match="gone.npy"):
        gone.prepare(uint8(images(2)))


def test_checkpoint_carries_the_file_bins_and_prior(tmp_path: Path) -> None:
    bins_file, prior_file, bins, prior = _bins_and_prior(tmp_path)
    trained = make(bins_file=bins_file, prior_file=prior_file)
    trained.prepare(uint8(images(4)))
    state = trained.state_dict()
    Path(bins_file).unlink()
    Path(prior_file).unlink()
    rebuilt = make(bins_file=bins_file, prior_file=prior_file)
    rebuilt.load_state_dict(state, strict=True)
    assert torch.equal(rebuilt.bins, trained.bins) and rebuilt.head.out_channels == 313
    assert torch.equal(rebuilt.class_weights, trained.class_weights)
    x = images(2)
    assert torch.allclose(rebuilt.losses(x)["loss"], trained.losses(x)["loss"])
