"""Exported encoders load into fresh timm and torchvision models and give sslzoo's features."""
from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import nn

import sslzoo
from sslzoo.build import resolve
from sslzoo.cli import cli
from sslzoo.engine import train


def _run(tmp_path_factory, backbone: str, image_size: int) -> str:
    out = tmp_path_factory.mktemp(backbone) / "run"
    spec = resolve({"method": "simclr", "data": "synthetic", "backbone": backbone,
                    "image_size": image_size, "batch_size": 8, "max_steps": 1, "device": "cpu",
                    "out": str(out)}, {"proj_hidden_dim": 16, "proj_dim": 8})
    return str(train(spec, quiet=True))


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory):
    return _run(tmp_path_factory, "resnet10t", 32)


@pytest.fixture(scope="module")
def tv_run(tmp_path_factory):
    return _run(tmp_path_factory, "tv_resnet18", 32)


def _export(run: str, out, *extra: str):
    result = CliRunner().invoke(cli, ["export", run, "--out", str(out), *extra])
    return result


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_timm_backbone_exports_safetensors_that_timm_loads_as_pretrained(timm_run, tmp_path):
    path = tmp_path / "encoder.safetensors"
    result = _export(timm_run, path)
    assert result.exit_code == 0, result.output
    assert "timm key names" in result.output and "pretrained_cfg_overlay" in result.output
    model = timm.create_model("resnet10t", num_classes=0, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path)))
    fresh = timm.create_model("resnet10t", num_classes=0)
    missing, unexpected = fresh.load_state_dict(load_file(path), strict=False)
    assert not missing and not unexpected
    x = torch.rand(4, 3, 32, 32)
    ours = _features(sslzoo.load(timm_run).encoder, x)
    assert torch.allclose(_features(model, x), ours, atol=1e-5)
    assert torch.allclose(_features(fresh, x), ours, atol=1e-5)
    assert not torch.allclose(_features(timm.create_model("resnet10t", num_classes=0), x), ours)


def test_torchvision_backbone_exports_torchvision_names_without_fc(tv_run, tmp_path):
    path = tmp_path / "encoder.safetensors"
    assert _export(tv_run, path).exit_code == 0
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    model.load_state_dict(load_file(path))          # strict: no missing or unexpected keys
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(_features(model, x), _features(sslzoo.load(tv_run).encoder, x),
                          atol=1e-5)
    timm_path = tmp_path / "timm.safetensors"       # the same layers under timm's resnet18
    assert _export(tv_run, timm_path, "--format", "timm").exit_code == 0
    timm_model = timm.create_model("resnet18", num_classes=0, pretrained=True,
                                   pretrained_cfg_overlay=dict(file=str(timm_path)))
    assert torch.allclose(_features(timm_model, x), _features(model, x), atol=1e-5)


def test_pth_suffix_writes_a_torch_file_and_a_format_that_does_not_apply_exits_2(timm_run, tmp_path):
    path = tmp_path / "encoder.pth"
    assert _export(timm_run, path).exit_code == 0
    state = torch.load(path, weights_only=True)
    timm.create_model("resnet10t", num_classes=0).load_state_dict(state)
    result = _export(timm_run, tmp_path / "x.safetensors", "--format", "torchvision")
    assert result.exit_code == 2
    assert "--format torchvision does not apply to backbone 'resnet10t'" in result.output


def test_small_image_backbone_exports_its_own_names_and_says_how_to_load_them(tmp_path):
    out = tmp_path / "run"
    spec = resolve({"method": "simclr", "data": "synthetic", "backbone": "small_resnet10",
                    "image_size": 16, "batch_size": 8, "max_steps": 1, "device": "cpu",
                    "out": str(out)}, {"proj_hidden_dim": 16, "proj_dim": 8})
    train(spec, quiet=True)
    path = tmp_path / "encoder.safetensors"
    result = _export(str(out), path)
    assert result.exit_code == 0 and "sslzoo.load" in result.output
    from sslzoo.backbones import create_backbone

    backbone = create_backbone("small_resnet10")
    backbone.load_state_dict(load_file(path))
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(_features(backbone, x), _features(sslzoo.load(out).encoder, x),
                          atol=1e-5)
    assert _export(str(out), tmp_path / "t.safetensors", "--format", "timm").exit_code == 2


def test_load_returns_the_trained_method_in_eval_mode(timm_run):
    method = sslzoo.load(timm_run)
    assert isinstance(method, sslzoo.Method) and not method.training
    assert method.encoder.num_features == 512
