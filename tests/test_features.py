"""``--features``: pooled backbone stages and the method's embedding, for every method."""
from __future__ import annotations

import pytest
import torch

from sslzoo.backbones import create_backbone
from sslzoo.build import build_method, resolve
from sslzoo.errors import ConfigError
from sslzoo.evaluation import (EMBEDDING, eval_mode, extract_features, feature_names,
                               has_embedding)
from sslzoo.method import DataInfo
from sslzoo.plugins import load_plugins

PLUGINS = load_plugins()
METHODS = [e.name for e in PLUGINS.methods.entries()]
WITH_EMBEDDING = {"instdisc", "invaspread", "simclr", "moco"}


def tiny_method(name: str, backbone: str = "timm/test_resnet", image_size: int = 32):
    spec = resolve({"method": name, "backbone": backbone, "image_size": image_size}, {}, {}, PLUGINS)
    torch.manual_seed(0)
    return build_method(spec, DataInfo(16, image_size), PLUGINS)


@pytest.mark.parametrize("name", METHODS)
def test_every_feature_kind_of_every_method_gives_one_finite_row_per_image(name):
    method = tiny_method(name)
    images = (torch.rand(3, 3, 32, 32) * 255).to(torch.uint8)
    names = feature_names(method)
    assert names[0] == "final" and "stage2" in names
    assert (EMBEDDING in names) == (name in WITH_EMBEDDING)
    with torch.no_grad(), eval_mode(method):
        stage_maps = method.encoder.forward_stages(method.preprocess(images.float() / 255))
    for features in names:
        feats = extract_features(method, images, torch.device("cpu"), features=features)
        assert feats.shape[0] == 3 and torch.isfinite(feats).all(), features
        if features.startswith("stage"):   # the stage's map, average-pooled
            torch.testing.assert_close(feats, stage_maps[features].mean(dim=(-2, -1)))
        if features == EMBEDDING:          # InstDisc's protocol: unit-length embeddings
            torch.testing.assert_close(feats.norm(dim=1), torch.ones(3))


def test_unknown_features_name_the_valid_choices():
    method = tiny_method("rotation")
    with pytest.raises(ConfigError, match="stage2.*--features"):
        extract_features(method, torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
                         torch.device("cpu"), features="stage9")
    with pytest.raises(ConfigError, match="no features 'embedding'"):
        extract_features(method, torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
                         torch.device("cpu"), features=EMBEDDING)


@pytest.mark.parametrize("name, temperature", [("instdisc", 0.07), ("invaspread", 0.1),
                                               ("simclr", 0.1), ("moco", 0.2)])
def test_knn_temperature_of_the_embedding_is_the_methods_own(name, temperature):
    method = tiny_method(name)
    assert has_embedding(method) and method.knn_temperature == pytest.approx(temperature)


def test_small_resnet_stages_end_with_the_map_of_forward_features():
    backbone = create_backbone("small_resnet10").eval()
    x = torch.rand(2, 3, 16, 16)
    maps = backbone.forward_stages(x)
    assert list(maps) == list(backbone.stage_names) == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert [m.shape[1] for m in maps.values()] == [64, 64, 128, 256, 512]
    assert [m.shape[-1] for m in maps.values()] == [16, 16, 8, 4, 2]
    torch.testing.assert_close(maps["stage4"], backbone.forward_features(x))


def test_timm_stages_are_its_feature_info_and_end_with_forward_features():
    backbone = create_backbone("timm/test_resnet").eval()
    x = torch.rand(2, 3, 32, 32)
    maps = backbone.forward_stages(x)
    info = backbone.model.feature_info
    assert list(maps) == [f"stage{i}" for i in range(1, len(info) + 1)]
    assert [m.shape[1] for m in maps.values()] == [i["num_chs"] for i in info]
    torch.testing.assert_close(maps[backbone.stage_names[-1]], backbone.forward_features(x))
