from __future__ import annotations

import time

import pytest
import torch

from sslzoo.backbone import Backbone
from sslzoo.backbones import BACKBONES, TimmBackbone, TorchvisionResNet, create_backbone
from sslzoo.errors import ConfigError, UnknownNameError
from sslzoo.registry import Entry, Registry

EXPECTED_WIDTH = {"tv_resnet18": 512, "tv_resnet34": 512, "tv_resnet50": 2048,
                  "small_resnet10": 512, "small_resnet18": 512, "small_resnet34": 512,
                  "small_resnet50": 2048}


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry("backbone")
    for name, (factory, summary) in BACKBONES.items():
        reg.add(Entry("backbone", name, factory, "sslzoo", "", factory.__module__, summary))
    return reg


def test_every_expected_backbone_is_registered() -> None:
    assert set(BACKBONES) == set(EXPECTED_WIDTH)
    assert all(summary for _, summary in BACKBONES.values())


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_registered_backbone_shapes(name: str, registry: Registry) -> None:
    torch.manual_seed(0)
    backbone = create_backbone(name, registry=registry)
    assert isinstance(backbone, TorchvisionResNet)
    assert backbone.num_features == EXPECTED_WIDTH[name]
    assert backbone.in_chans == 3
    size = 32 if name.startswith("small_") else 64
    x = torch.rand(2, 3, size, size)
    features = backbone.forward_features(x)
    pooled = backbone(x)
    # small stem keeps 32 -> 4 (stride 8); the ImageNet stem gives 64 -> 2 (stride 32)
    assert features.shape == (2, backbone.num_features, 4 if name.startswith("small_") else 2,
                              4 if name.startswith("small_") else 2)
    assert pooled.shape == (2, backbone.num_features)
    assert torch.allclose(pooled, features.mean(dim=(-2, -1)), atol=1e-5)


@pytest.mark.parametrize("name", ["small_resnet10", "tv_resnet18"])
def test_one_input_channel(name: str, registry: Registry) -> None:
    backbone = create_backbone(name, in_chans=1, registry=registry)
    assert backbone.in_chans == 1
    assert backbone.conv1.in_channels == 1
    assert backbone(torch.rand(2, 1, 32, 32)).shape == (2, backbone.num_features)


def test_small_resnet_stem_follows_simclr_cifar_variant() -> None:
    backbone = BACKBONES["small_resnet18"][0]()
    assert backbone.conv1.kernel_size == (3, 3) and backbone.conv1.stride == (1, 1)
    assert isinstance(backbone.maxpool, torch.nn.Identity)


def test_small_resnet10_has_one_block_per_stage() -> None:
    backbone = BACKBONES["small_resnet10"][0]()
    assert [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]


def test_small_resnet10_refuses_pretrained() -> None:
    with pytest.raises(ConfigError, match="no pretrained weights"):
        BACKBONES["small_resnet10"][0](pretrained=True)


def test_state_dict_uses_torchvision_names() -> None:
    keys = BACKBONES["small_resnet10"][0]().state_dict().keys()
    assert "conv1.weight" in keys and "layer4.0.conv2.weight" in keys
    assert not any(k.startswith("fc.") for k in keys)


def test_gradients_reach_the_stem(registry: Registry) -> None:
    backbone = create_backbone("small_resnet10", registry=registry)
    backbone(torch.rand(2, 3, 16, 16)).sum().backward()
    assert backbone.conv1.weight.grad is not None
    assert backbone.conv1.weight.grad.abs().sum() > 0


def test_timm_cnn_by_name(registry: Registry) -> None:
    backbone = create_backbone("resnet10t", registry=registry)
    assert isinstance(backbone, TimmBackbone) and isinstance(backbone, Backbone)
    x = torch.rand(2, 3, 64, 64)
    assert backbone(x).shape == (2, backbone.num_features) == (2, 512)
    assert backbone.forward_features(x).shape == (2, 512, 2, 2)


def test_timm_prefix_and_one_channel(registry: Registry) -> None:
    backbone = create_backbone("timm/resnet10t", in_chans=1, registry=registry)
    assert backbone.in_chans == 1
    assert backbone(torch.rand(2, 1, 32, 32)).shape == (2, 512)


def test_timm_vit_tokens_become_a_spatial_map(registry: Registry) -> None:
    backbone = create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, registry=registry)
    x = torch.rand(2, 3, 32, 32)
    features = backbone.forward_features(x)
    assert features.shape == (2, 192, 4, 4)  # class token dropped, 16 patches on a 4x4 grid
    assert backbone(x).shape == (2, backbone.num_features) == (2, 192)
    backbone(x).sum().backward()
    assert backbone.model.patch_embed.proj.weight.grad is not None


def test_timm_head_width_differs_from_map_channels(registry: Registry) -> None:
    # MobileNetV3's head has its own hidden layer: pooled 1024, spatial map 288 channels.
    backbone = create_backbone("mobilenetv3_small_050", registry=registry)
    x = torch.rand(2, 3, 32, 32)
    assert backbone(x).shape == (2, backbone.num_features)
    assert backbone.forward_features(x).shape[1] == backbone.feature_channels
    assert backbone.num_features != backbone.feature_channels


def test_unknown_backbone_suggests_closest_name(registry: Registry) -> None:
    start = time.perf_counter()
    with pytest.raises(UnknownNameError) as info:
        create_backbone("small_resnt18", registry=registry)
    assert "small_resnet18" in str(info.value)
    with pytest.raises(UnknownNameError) as info:
        create_backbone("resnet1", registry=registry)
    assert "resnet18" in str(info.value) and "timm" in str(info.value)
    assert time.perf_counter() - start < 1.0


def test_registered_backbone_rejects_timm_options(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="img_size"):
        create_backbone("small_resnet10", img_size=32, registry=registry)


def test_default_registry_knows_the_builtins() -> None:
    backbone = create_backbone("small_resnet10")
    assert backbone.num_features == 512
