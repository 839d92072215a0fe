"""The Context Encoders plugin: masked reconstruction, mean fill, adversarial gradients,
resume, reconstruction grid and registration."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import torch
from click.testing import CliRunner
from torch import Tensor, nn

from sslzoo import config as cfg
from sslzoo.errors import ConfigError
from sslzoo.masks import center_mask, erode, random_block_mask
from sslzoo.method import DataInfo
from sslzoo_plugins import inpainting
from sslzoo_plugins.inpainting import ChannelWiseFC, ContextEncoder
from tests.tiny import Identity, TinyBackbone

SIZE = 16






def make(seed: int = 0, **overrides: Any) -> ContextEncoder:
    torch.manual_seed(seed)
    values = {"decoder_width": 16, "disc_width": 8, **overrides}
    config = cfg.build(ContextEncoder.Config, {k: str(v) for k, v in values.items()})
    return ContextEncoder(TinyBackbone(relu_out=True), config, Identity(), DataInfo(64, SIZE))


def images(n: int = 6, seed: int = 1) -> Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_registers_through_the_plugin_loader() -> None:
    from sslzoo.plugins import load_plugins

    methods = load_plugins().methods
    assert "inpainting" in methods
    entry = methods.get("inpainting")
    assert entry.plugin == "sslzoo" and entry.obj is ContextEncoder


def test_defaults_follow_the_paper_and_official_code() -> None:
    c = ContextEncoder.Config()
    assert (c.optimizer, c.momentum, c.lr, c.gen_lr_scale) == ("adam", 0.5, 2e-4, 10.0)
    assert (c.rec_weight, c.adv_weight, c.overlap_weight) == (0.999, 0.001, 10.0)
    assert c.mask == "center" and c.overlap * 128 == pytest.approx(4)


def test_center_mask_predicts_the_central_square() -> None:
    m = make()
    assert m.out_size == SIZE // 2 and m.overlap_px == 1
    assert m.generate(images(2)).shape == (2, 3, SIZE // 2, SIZE // 2)
    assert make(mask="block").generate(images(2)).shape == (2, 3, SIZE, SIZE)


def test_encoder_sees_the_hole_filled_with_the_data_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    m = make()
    sample = (images(20, seed=3) * 255).round().to(torch.uint8)
    m.prepare(sample)
    mean = sample.float().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(m.fill.flatten(), mean)
    seen: list[Tensor] = []
    original = m.generate
    monkeypatch.setattr(m, "generate", lambda ctx: seen.append(ctx) or original(ctx))
    x = images(4)
    m.losses(x)
    hole = erode(center_mask(4, SIZE), m.overlap_px).expand(-1, 3, -1, -1)
    ctx = seen[0]
    assert torch.allclose(ctx[hole], mean.view(1, 3, 1, 1).expand(4, -1, SIZE, SIZE)[hole])
    assert torch.equal(ctx[~hole], x[~hole])                 # the context, incl. the band


def test_loss_counts_only_masked_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    m = make(mask="block")
    x = images(4)
    mask = random_block_mask(4, SIZE, generator=torch.Generator().manual_seed(0))
    pred = torch.rand(4, 3, SIZE, SIZE) * 2 - 1
    monkeypatch.setattr(m, "generate", lambda ctx: pred)
    base = m.losses(x, mask)["rec"].item()
    monkeypatch.setattr(m, "generate", lambda ctx: torch.where(mask, pred, -pred))
    assert m.losses(x, mask)["rec"].item() == pytest.approx(base, rel=1e-6)
    monkeypatch.setattr(m, "generate", lambda ctx: torch.where(mask, -pred, pred))
    assert m.losses(x, mask)["rec"].item() != pytest.approx(base, rel=1e-3)


def test_center_loss_weights_the_band_ten_times(monkeypatch: pytest.MonkeyPatch) -> None:
    m = make()
    x = images(1)
    target = x[..., 4:12, 4:12] * 2 - 1                      # the central 8x8, in [-1, 1]
    for (r, c), w in (((0, 3), 10.0), ((3, 3), 1.0)):       # band pixel, hidden pixel
        pred = target.clone()
        pred[0, :, r, c] += 1.0                               # error 1 in all 3 channels
        monkeypatch.setattr(m, "generate", lambda ctx, p=pred: p)
        assert m.losses(x)["rec"].item() == pytest.approx(w * 3 / (3 * 64), rel=1e-5)


def test_gradients_reach_the_backbone_and_training_lowers_the_loss() -> None:
    m = make()
    x = images(8)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3, betas=(0.5, 0.999))  # tiny net: faster
    first = None
    for step in range(6):
        out = m(x, torch.arange(8))
        opt.zero_grad()
        out["loss"].backward()
        if step == 0:
            first = out["loss"].item()
            assert all(p.grad is not None and p.grad.abs().sum() > 0
                       for p in m.backbone.parameters())
        opt.step()
    assert m(x, torch.arange(8))["loss"].item() < 0.7 * first


def _grads(module: nn.Module) -> list[Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def test_adversarial_gradients_reach_only_their_own_player() -> None:
    m = make(adversarial=True)
    x = images(6)
    gen = nn.ModuleList([m.backbone, m.channel_fc, m.decoder])

    def backward(key: str | None) -> tuple[list, list]:
        m.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        out = m.losses(x)
        loss = out["loss"] if key is None else out[key]
        loss.backward()
        return _grads(gen), _grads(m.disc)

    g_total, d_total = backward(None)
    g_from_d, d_from_d = backward("disc")
    g_from_g, d_from_g = backward("gen")
    assert all(g is None for g in g_from_d)                 # D's loss never reaches G
    assert all(g is None for g in d_from_g)                 # G's loss never reaches D
    for a, b in zip(d_total, d_from_d):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(g_total, g_from_g):
        assert torch.allclose(a, b, atol=1e-6)
    # and the generator's adversarial term does contribute to its gradient
    m.zero_grad(set_to_none=True)
    m.losses(x)["rec"].mul(m.config.rec_weight).backward()
    assert any(not torch.allclose(a, b.grad, atol=1e-9)
               for a, b in zip(g_from_g, gen.parameters()))


def test_adversarial_parameter_groups_scale_the_generator_lr() -> None:
    m = make(adversarial=True)
    groups = m.parameter_groups()
    disc = {id(p) for p in m.disc.parameters()}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= disc or not ids & disc
        assert g.get("lr_scale") == (None if ids <= disc else 10.0)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    assert all("lr_scale" not in g for g in make().parameter_groups())


def test_resume_restores_fill_and_weights_exactly() -> None:
    m = make(adversarial=True)
    m.prepare((images(10, seed=5) * 255).to(torch.uint8))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    x = images(6)
    for _ in range(2):
        opt.zero_grad()
        m(x, torch.arange(6))["loss"].backward()
        opt.step()
    fresh = make(seed=9, adversarial=True)
    fresh.load_state_dict(m.state_dict())                    # strict
    assert torch.equal(fresh.fill, m.fill)
    m.eval(), fresh.eval()
    with torch.no_grad():
        a, b = m.losses(x), fresh.losses(x)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reconstruction_keeps_the_context_and_writes_a_grid(tmp_path: Path) -> None:
    m = make()
    x = images(4)
    full = m.reconstruct(x)
    outside = ~center_mask(4, SIZE).expand(-1, 3, -1, -1)
    assert full.shape == x.shape and torch.equal(full[outside], x[outside])
    from sslzoo.runs import render_rows, save_image_rows

    path = save_image_rows(render_rows(m, x, inpainting.inpainting_rows), tmp_path / "grid.png")
    from PIL import Image

    with Image.open(path) as img:                           # 3 rows x 4 columns, 2 px padding
        assert img.size == (4 * (SIZE + 2) + 2, 3 * (SIZE + 2) + 2)
    assert m.training                                        # mode restored


def test_inpaint_command_writes_a_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = make()
    monkeypatch.setattr("sslzoo.runs.load_run_and_test_images",
                        lambda run_dir, num, device, method: (m, images(num)))

    @click.group()
    def cli() -> None:
        pass

    inpainting.register_commands(cli=cli)
    out = tmp_path / "g.png"
    result = CliRunner().invoke(cli, ["inpaint", str(tmp_path), "--out", str(out), "--num", "3"])
    assert result.exit_code == 0, result.output
    assert out.exists() and str(out) in result.output


def test_overlap_that_hides_nothing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        make(overlap=0.25)


def test_channel_wise_fc_mixes_within_but_not_across_channels() -> None:
    fc = ChannelWiseFC(3, 2, 2)
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    fc(x)[0, 1, 0, 0].backward()
    assert x.grad[0, 1].abs().sum() > 0 and x.grad[0, [0, 2]].abs().sum() == 0
    assert sum(p.numel() for p in fc.parameters()) == 3 * 4 ** 2 + 3 * 4   # m n^4 + bias


# ----------------------------------------- random masks hide what they advertise (no overlap band)

def _seen_context(m: ContextEncoder, x: Tensor, mask: Tensor,
                  monkeypatch: pytest.MonkeyPatch) -> Tensor:
    seen: list[Tensor] = []
    original = m.generate
    monkeypatch.setattr(m, "generate", lambda ctx: seen.append(ctx) or original(ctx))
    m.losses(x, mask)
    return seen[0]


@pytest.mark.parametrize("kind", ["block", "region"])
def test_random_masks_hide_their_whole_coverage(kind: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    m = make(mask=kind)
    m.fill.fill_(2.0)                                        # a value no image pixel has
    x = images(8)
    torch.manual_seed(3)
    mask = m.draw_mask(8, SIZE, x.device)
    hidden = (_seen_context(m, x, mask, monkeypatch) == 2.0).all(dim=1, keepdim=True)
    assert torch.equal(hidden, mask)                         # hidden share == coverage
    assert m.overlap_px == 0


@pytest.mark.parametrize("kind", ["block", "region"])
def test_random_mask_loss_weighs_hidden_pixels_only(kind: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    m = make(mask=kind)
    x = images(4)
    torch.manual_seed(4)
    mask = m.draw_mask(4, SIZE, x.device)
    target = x * 2 - 1
    errors = []
    for where in (mask, ~mask):                               # an error of 1 inside / outside
        pred = target + where.float()
        monkeypatch.setattr(m, "generate", lambda ctx, p=pred: p)
        errors.append(m.losses(x, mask)["rec"].item())
    assert errors == [pytest.approx(1.0), pytest.approx(0.0)]  # visible pixels weigh nothing


def test_center_mask_keeps_the_overlap_band() -> None:
    assert make(mask="center").overlap_px == 1


def test_discriminator_judges_a_composite_for_random_masks() -> None:
    m = make(mask="region", adversarial=True)
    seen: list[Tensor] = []
    m.disc.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    x = images(4)
    torch.manual_seed(5)
    mask = m.draw_mask(4, SIZE, x.device)
    m.losses(x, mask)
    real, fake = seen[0], seen[1]
    assert torch.allclose(real, x * 2 - 1)
    outside = ~mask.expand_as(real)
    assert torch.equal(fake[outside], real[outside])         # the real image outside the hole
    assert not torch.allclose(fake[~outside], real[~outside])


def test_feature_learning_recipe_is_l2_only_with_random_regions() -> None:
    from sslzoo.build import resolve

    spec = resolve({"method": "inpainting", "recipe": "features"})
    c = spec.method_config
    assert (c.mask, c.adversarial) == ("region", False)
