"""SimCLR plugin: two independent views, the official projection head, defaults, recipes."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import sslzoo_plugins.simclr as simclr_module
from sslzoo import config as cfg
from sslzoo.augment import Augment
from sslzoo.build import resolve
from sslzoo.engine import build_optimizer, convert_sync_batch_norm, use_sync_bn
from sslzoo.heads import ScaleBatchNorm1d
from sslzoo.method import DataInfo
from sslzoo_plugins.simclr import SimCLR
from tests.tiny import Identity, TinyBackbone


class AddNoise(Augment):
    """A random augment: every call draws fresh noise."""

    name = "test-noise"

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.1 * torch.randn_like(x)


def make(augment: Augment | None = None, seed: int = 0, **overrides: object) -> SimCLR:
    torch.manual_seed(seed)
    config = cfg.build(SimCLR.Config, overrides)
    return SimCLR(TinyBackbone(), config, augment or Identity(), DataInfo(32, 16))


def test_the_loss_contrasts_two_independent_views(monkeypatch):
    seen = {}

    def spy(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
        seen["z"] = (z1.detach(), z2.detach())
        return (z1 - z2).pow(2).sum()

    monkeypatch.setattr(simclr_module, "nt_xent", spy)
    make(AddNoise()).training_step(torch.rand(6, 3, 16, 16), torch.arange(6))
    z1, z2 = seen["z"]
    assert z1.shape == z2.shape == (6, 128)
    assert not torch.allclose(z1, z2, atol=1e-4)


def test_identical_views_give_identical_projections(monkeypatch):
    # the counterpart of the test above: with no randomness the two halves agree, so the
    # difference seen there comes from two augment draws
    seen = {}
    monkeypatch.setattr(simclr_module, "nt_xent",
                        lambda z1, z2, t: seen.setdefault("z", (z1, z2))[0].sum())
    make().training_step(torch.rand(6, 3, 16, 16), torch.arange(6))
    torch.testing.assert_close(*seen["z"])


def _linears(m: SimCLR) -> list[nn.Linear]:
    return [layer for layer in m.projector if isinstance(layer, nn.Linear)]


@pytest.mark.parametrize("version, layers", [(1, 2), (2, 3)])
def test_head_depth_follows_the_version(version, layers):
    assert len(_linears(make(version=version))) == layers


@pytest.mark.parametrize("version", [1, 2])
def test_head_is_the_official_one(version):
    m = make(version=version)
    linears = _linears(m)
    assert all(layer.bias is None for layer in linears)
    # hidden layers as wide as the backbone's features (TinyBackbone: 16)
    assert [layer.out_features for layer in linears[:-1]] == [16] * (len(linears) - 1)
    assert linears[-1].out_features == 128
    norms = [layer for layer in m.projector if isinstance(layer, nn.BatchNorm1d)]
    assert len(norms) == len(linears)  # batch norm after every linear layer
    last = m.projector[-1]
    assert isinstance(last, ScaleBatchNorm1d) and last.weight is not None and last.bias is None


def test_an_explicit_hidden_width_is_used():
    assert [layer.out_features for layer in _linears(make(proj_hidden_dim=64))] == [64, 128]


def test_output_norm_learns_a_scale_and_no_shift():
    norm = ScaleBatchNorm1d(4).train()
    x = torch.randn(32, 4) * 3 + 5
    with torch.no_grad():
        norm.weight.fill_(2.0)
    y = norm(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0, unbiased=False), torch.full((4,), 2.0), atol=1e-3,
                               rtol=0)


def test_defaults_are_the_papers():
    v1, v2 = SimCLR.Config(), SimCLR.Config(version=2)
    assert (v1.optimizer, v1.lr, v1.lr_batch, v1.lr_scaling, v1.warmup_epochs) == (
        "lars", 0.3, 256, "linear", 10.0)
    assert (v1.weight_decay, v1.temperature, v1.proj_dim, v1.proj_hidden_dim) == (
        1e-6, 0.1, 128, 0)
    assert (v2.weight_decay, v2.temperature) == (1e-4, 0.1)
    assert v1.wd_exclude_bias_norm and SimCLR.global_bn


def test_biases_and_norm_weights_get_no_weight_decay():
    m = make()
    decay, no_decay = m.parameter_groups()
    assert no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in no_decay["params"]} == {1}
    assert {p.ndim for p in decay["params"]} >= {2}
    assert m.projector[-1].weight in set(no_decay["params"])
    opt = build_optimizer(m, 0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-6, 0.0]


def test_global_bn_is_on_unless_turned_off():
    m = make()
    assert use_sync_bn(m, None) and use_sync_bn(m, True) and not use_sync_bn(m, False)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert use_sync_bn(m, None, cuda) and not use_sync_bn(m, None, cpu)


def test_sync_bn_on_the_cpu_is_refused_naming_the_flag():
    from sslzoo.errors import ConfigError

    with pytest.raises(ConfigError, match="--sync-bn needs CUDA"):
        use_sync_bn(make(), True, torch.device("cpu"))


def test_sync_batch_norm_conversion_keeps_the_shift_free_output_norm():
    m = convert_sync_batch_norm(make())
    last = m.projector[-1]
    assert isinstance(last, nn.SyncBatchNorm) and last.bias is None and last.weight is not None


def test_cifar_recipe_is_the_official_cifar_command():
    spec = resolve({"method": "simclr", "recipe": "cifar"})
    c, a, t = spec.method_config, spec.augment_config, spec.train
    assert (c.temperature, c.lr, c.weight_decay) == (0.5, 1.0, 1e-4)
    assert (a.brightness, a.contrast, a.saturation, a.hue, a.blur_prob) == (
        0.4, 0.4, 0.4, 0.1, 0.0)
    assert (t.image_size, t.batch_size) == (32, 512)


def test_v2_recipe_uses_the_square_root_learning_rate():
    spec = resolve({"method": "simclr", "recipe": "v2"})
    from sslzoo.method import peak_learning_rate

    assert spec.method_config.version == 2
    assert peak_learning_rate(spec.method_config, 4096) == pytest.approx(6.4)


def test_training_from_the_cli_uses_the_square_root_learning_rate(tmp_path):
    import json

    from click.testing import CliRunner

    from sslzoo.cli import cli

    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "train", "simclr", "--data", "synthetic", "--backbone", "small_resnet10",
        "--image-size", "16", "--batch-size", "16", "--device", "cpu", "--max-steps", "1",
        "--out", str(out), "--set", "lr=0.075", "--set", "lr_batch=1",
        "--set", "lr_scaling=sqrt"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["peak_lr"] == pytest.approx(0.075 * 4)  # 0.075 x sqrt(16)
