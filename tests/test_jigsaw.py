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
    assert Jigsaw.augment_name(c) == "none"      # no padded crop: the window lies inside
    assert (c.window, c.per_channel_norm, c.colour_drop, c.colour_drop_prob) == (
        225 / 256, True, "grayscale", 0.3)


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
    assert tiles.shape == (4 * 9, 3, 6, 6)   # window 21 of 24, cell 7, tile round(7 * 64 / 75)
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


# ------------------------------------------------------------ shortcuts the puzzle must not leave

def _default_jigsaw(image_size: int, **sets: object) -> Jigsaw:
    from sslzoo.build import build_method, resolve

    spec = resolve({"method": "jigsaw", "image_size": image_size, "backbone": "small_resnet10"},
                   {k: str(v) for k, v in sets.items()})
    return build_method(spec, DataInfo(8, image_size))


@pytest.mark.parametrize("size", [32, 48, 96])
def test_default_pipeline_tiles_hold_no_constant_padding(size: int) -> None:
    torch.manual_seed(0)
    m = _default_jigsaw(size)
    m.puzzle.normalize = False
    x = 0.2 + 0.8 * torch.rand(64, 3, size, size)          # no pixel is dark
    tiles = m.puzzle(m.augment(x)).tiles                   # (B, 9, C, t, t)
    assert tiles.min() >= 0.2 - 1e-6                       # no zero padding anywhere


def test_puzzle_window_is_a_random_crop_inside_the_image() -> None:
    torch.manual_seed(0)
    m = _default_jigsaw(96)
    puzzle = m.puzzle(torch.rand(32, 3, 96, 96))
    first = puzzle.positions[:, 0]                          # top-left tile of each puzzle
    last = puzzle.positions[:, 8] + puzzle.tiles.shape[-1]  # bottom-right corner
    assert first.min() >= 0 and last.max() <= 96
    assert len({tuple(p) for p in first.tolist()}) > 16     # the window moves per sample


def test_tiles_fed_to_the_backbone_are_normalised_per_channel() -> None:
    m = make()
    seen: list[Tensor] = []
    m.backbone.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    cast = torch.tensor([0.5, 0.0, -0.3]).view(1, 3, 1, 1)   # a colour cast per image
    m((torch.rand(4, 3, 24, 24) + cast).clamp(0, 1), torch.arange(4))
    per_channel = seen[0].flatten(2)                          # (B*T, C, t*t)
    assert torch.allclose(per_channel.mean(-1), torch.zeros(36, 3), atol=1e-5)
    assert torch.allclose(per_channel.std(-1, unbiased=False), torch.ones(36, 3), atol=1e-3)


def test_grayscale_share_of_puzzles_has_equal_channels() -> None:
    torch.manual_seed(0)
    m = make(colour_drop="grayscale", colour_drop_prob=1.0, normalize_tiles=False)
    tiles = m.puzzle(torch.rand(4, 3, 24, 24)).tiles
    assert torch.allclose(tiles[:, :, 0], tiles[:, :, 1]) and torch.allclose(tiles[:, :, 1],
                                                                            tiles[:, :, 2])
    kept = make(colour_drop_prob=0.0, normalize_tiles=False).puzzle(torch.rand(4, 3, 24, 24))
    assert not torch.allclose(kept.tiles[:, :, 0], kept.tiles[:, :, 1])


def test_colour_projection_removes_the_green_magenta_axis() -> None:
    torch.manual_seed(0)
    m = make(colour_drop="projection", colour_drop_prob=1.0, normalize_tiles=False)
    tiles = m.puzzle(torch.rand(4, 3, 24, 24)).tiles
    axis = torch.tensor([-1.0, 2.0, -1.0])
    along = torch.einsum("btchw,c->bthw", tiles, axis)
    assert along.abs().max() < 1e-5
    assert not torch.allclose(tiles[:, :, 0], tiles[:, :, 2])  # red and blue stay apart


def test_colour_drop_hits_about_its_share_of_puzzles() -> None:
    torch.manual_seed(0)
    m = make(colour_drop="grayscale", colour_drop_prob=0.3, normalize_tiles=False)
    tiles = m.puzzle(torch.rand(400, 3, 24, 24)).tiles
    grey = (tiles[:, :, 0] - tiles[:, :, 1]).flatten(1).abs().amax(1) < 1e-6
    assert 0.2 < grey.float().mean() < 0.4


def test_channel_jitter_shifts_each_colour_channel_by_at_most_its_pixels() -> None:
    s = 48
    coords = torch.arange(s * s, dtype=torch.float64).view(1, 1, s, s).expand(2, 3, s, s)
    for jitter in (0, 2):
        torch.manual_seed(0)
        m = make(image_size=s, channel_jitter=jitter, normalize_tiles=False, colour_drop_prob=0.0)
        m.puzzle.double()
        corner = m.puzzle(coords.clone()).tiles[..., 0, 0]        # (B, T, C) flat index
        dy = (corner // s) - (corner[..., :1] // s)
        dx = (corner % s) - (corner[..., :1] % s)
        assert dy.abs().max() <= 2 * jitter and dx.abs().max() <= 2 * jitter
        assert (dy.abs().max() > 0) == (jitter > 0)


# ------------------------------------------------------------------- permutation files

def _write(tmp_path, name: str, array) -> str:  # type: ignore[no-untyped-def]
    import numpy as np

    path = tmp_path / name
    np.save(path, np.asarray(array))
    return str(path)


def test_permutation_file_is_read_zero_or_one_based(tmp_path) -> None:  # type: ignore[no-untyped-def]
    perms = permutation_set(20, seed=3).numpy()
    zero = make(permutations_file=_write(tmp_path, "p0.npy", perms))
    one = make(permutations_file=_write(tmp_path, "p1.npy", perms + 1))
    assert torch.equal(zero.puzzle.permutations, torch.from_numpy(perms))
    assert torch.equal(one.puzzle.permutations, torch.from_numpy(perms))


def test_bad_permutation_files_are_rejected_with_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    perms = permutation_set(20).numpy()
    with pytest.raises(ConfigError, match=r"\(N, 9\)"):
        make(permutations_file=_write(tmp_path, "flat.npy", perms.reshape(-1)))
    with pytest.raises(ConfigError, match="num_permutations=20"):
        make(num_permutations=10, permutations_file=_write(tmp_path, "p.npy", perms))
    bad = perms.copy()
    bad[0, 0] = bad[0, 1]
    with pytest.raises(ConfigError, match="permutation"):
        make(permutations_file=_write(tmp_path, "dup.npy", bad))
    text = tmp_path / "x.npy"
    text.write_text("hello")
    with pytest.raises(ConfigError, match="x.npy"):
        make(permutations_file=str(text))
    m = make(permutations_file=str(tmp_path / "missing.npy"))   # rebuilt runs need no file
    with pytest.raises(ConfigError, match="missing.npy"):
        m.prepare(torch.zeros(2, 3, 24, 24, dtype=torch.uint8))


def test_checkpoint_keeps_the_file_permutations_without_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    perms = permutation_set(20, seed=5).numpy()
    path = _write(tmp_path, "p.npy", perms)
    trained = make(permutations_file=path)
    state = trained.state_dict()
    (tmp_path / "p.npy").unlink()
    rebuilt = make(permutations_file=path)
    rebuilt.load_state_dict(state, strict=True)
    assert torch.equal(rebuilt.puzzle.permutations, torch.from_numpy(perms))


def test_cli_run_with_a_missing_permutation_file_exits_2_naming_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from sslzoo.cli import cli

    args = ["train", "jigsaw", "--data", "synthetic", "--backbone", "small_resnet10",
            "--image-size", "24", "--batch-size", "8", "--max-steps", "1",
            "--out", str(tmp_path / "run"), "--set", f"permutations_file={tmp_path}/nope.npy"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "nope.npy does not exist" in result.output and "Traceback" not in result.output
