"""The jigsaw plugin: loss against a per-sample loop, head shapes, gradients, resume."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from sslzoo.augment import Augment
from sslzoo.backbone import Backbone
from sslzoo.config import build
from sslzoo.errors import ConfigError
from sslzoo.method import DataInfo
from sslzoo.pretext import min_hamming_distance, normalize_tiles, permutation_set
from sslzoo_plugins.jigsaw import Jigsaw


class TinyBackbone(Backbone):
    """Two convs without batch norm, so every tile's features depend on that tile alone."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())

    def forward_features(self, x: Tensor) -> Tensor:
        return self.net(x)


class Identity(Augment):
    def forward(self, x: Tensor) -> Tensor:
        return x


def make(image_size: int = 24, **overrides: object) -> Jigsaw:
    values = {"num_permutations": 20, "hidden_dim": 16, **overrides}
    config = build(Jigsaw.Config, values)
    return Jigsaw(TinyBackbone(), config, Identity(), DataInfo(16, image_size))


def test_defaults_follow_the_official_code() -> None:
    c = Jigsaw.Config()
    assert (c.optimizer, c.lr, c.lr_batch, c.momentum, c.weight_decay) == (
        "sgd", 0.01, 256, 0.9, 5e-4)
    assert (c.grid, c.num_permutations, c.tile_ratio) == (3, 100, 64 / 75)
    assert Jigsaw.augment_name(c) == "crop-flip"


def test_loss_and_accuracy_match_a_per_sample_loop() -> None:
    m = make(tile_dim=6, dropout=0.0)
    x = torch.rand(3, 3, 24, 24)
    torch.manual_seed(5)
    out = m(x, torch.arange(3))
    torch.manual_seed(5)                     # the same offsets and permutations again
    puzzle = m.puzzle(x)
    losses, correct = [], 0
    for b in range(3):
        feats = [m.tile_fc(m.backbone(puzzle.tiles[b, i][None]))[0] for i in range(9)]
        logits = m.classifier(torch.cat(feats)[None])[0]   # tiles in their shuffled order
        label = int(puzzle.labels[b])
        losses.append(torch.logsumexp(logits, 0) - logits[label])
        correct += int(logits.argmax() == label)
    assert torch.allclose(out["loss"], torch.stack(losses).mean(), atol=1e-5)
    assert out["acc"].item() == pytest.approx(correct / 3)


def test_tiles_fed_to_the_backbone_are_normalised_and_shuffled_from_the_set() -> None:
    m = make()
    seen: list[Tensor] = []
    m.backbone.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    m(torch.rand(4, 3, 24, 24), torch.arange(4))
    tiles = seen[0]
    assert tiles.shape == (4 * 9, 3, 7, 7)   # cell 8, tile round(8 * 64 / 75) = 7
    flat = tiles.reshape(36, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(36), atol=1e-5)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(36), atol=1e-3)
    assert torch.equal(m.puzzle.permutations, permutation_set(20))


def test_classifier_outputs_one_logit_per_permutation() -> None:
    for overrides in ({}, {"hidden_dim": 0}, {"tile_dim": 5}):
        m = make(num_permutations=30, **overrides)
        shapes: list[torch.Size] = []
        m.classifier.register_forward_hook(lambda mod, inp, out: shapes.append(out.shape))
        m(torch.rand(2, 3, 24, 24), torch.arange(2))
        assert shapes == [torch.Size([2, 30])]


def test_gradients_reach_backbone_and_heads() -> None:
    m = make(tile_dim=6)
    m(torch.rand(4, 3, 24, 24), torch.arange(4))["loss"].backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_preprocess_standardises_whole_images_like_tiles() -> None:
    x = torch.rand(2, 3, 24, 24)
    assert torch.equal(make().preprocess(x), normalize_tiles(x))
    plain = make(normalize_tiles=False)
    assert torch.allclose(plain.preprocess(x), (x - plain.mean) / plain.std)


def test_resume_from_state_dict_continues_identically() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 3, 24, 24)
    a = make(permutation_seed=7)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9)
    for _ in range(1):
        opt_a.zero_grad()
        a(x, torch.arange(4))["loss"].backward()
        opt_a.step()
    state = {k: v.clone() for k, v in a.state_dict().items()}
    opt_state = copy.deepcopy(opt_a.state_dict())
    assert "puzzle.permutations" in state

    b = make(permutation_seed=7)
    b.load_state_dict(state, strict=True)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    opt_b.load_state_dict(opt_state)
    losses = []
    for model, opt in ((a, opt_a), (b, opt_b)):
        torch.manual_seed(1)
        run = []
        for _ in range(2):
            opt.zero_grad()
            loss = model(x, torch.arange(4))["loss"]
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    assert losses[0] == losses[1]


def test_checkpoint_carries_the_permutation_set() -> None:
    a, b = make(permutation_seed=1), make(permutation_seed=2)
    assert not torch.equal(a.puzzle.permutations, b.puzzle.permutations)
    b.load_state_dict(a.state_dict(), strict=True)
    assert torch.equal(a.puzzle.permutations, b.puzzle.permutations)


def test_min_hamming_distance_is_reported_and_beats_the_paper_rule() -> None:
    m = make(num_permutations=100)
    paper = make(num_permutations=100, permutation_criterion="mean")
    assert m.puzzle.min_hamming == min_hamming_distance(m.puzzle.permutations)
    assert paper.puzzle.min_hamming < m.puzzle.min_hamming


def test_works_on_other_grids_and_image_sizes() -> None:
    m = make(image_size=16, grid=2, num_permutations=24)
    out = m(torch.rand(2, 3, 16, 16), torch.arange(2))
    assert torch.isfinite(out["loss"])


def test_invalid_configs_are_rejected_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="num_permutations=24"):
        build(Jigsaw.Config, {"grid": "2", "num_permutations": "30"})
    with pytest.raises(ConfigError, match="tile_ratio"):
        build(Jigsaw.Config, {"tile_ratio": "1.5"})
    with pytest.raises(ConfigError, match="too small"):
        make(image_size=2)


def test_registers_through_the_plugin_loader() -> None:
    from sslzoo.plugins import load_plugins

    methods = load_plugins().methods
    assert "jigsaw" in methods
    entry = methods.get("jigsaw")
    assert entry.plugin == "sslzoo" and entry.obj is Jigsaw
