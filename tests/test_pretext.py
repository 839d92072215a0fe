"""Rotations, permutation sets, tile extraction and per-tile normalisation."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sslzoo.errors import ConfigError
from sslzoo.pretext import (JigsawPuzzle, Rotations, _permutation_set, accuracy, extract_tiles,
                            hamming_distances, jigsaw_sizes, min_hamming_distance,
                            normalize_tiles, permutation_set)


def asymmetric_images(b: int = 3, c: int = 3, s: int = 8) -> torch.Tensor:
    """Distinct images with no rotational symmetry: every pixel value is unique."""
    return torch.arange(b * c * s * s, dtype=torch.float32).reshape(b, c, s, s) / (b * c * s * s)


# ---------------------------------------------------------------------------- rotations

def test_rotation_labels_match_rotated_pixels() -> None:
    x = asymmetric_images()
    views, labels = Rotations()(x)
    assert views.shape == (4 * len(x), *x.shape[1:]) and labels.shape == (4 * len(x),)
    for view, label in zip(views, labels):
        matches = [torch.equal(view, torch.rot90(img, int(label), dims=(-2, -1))) for img in x]
        assert sum(matches) == 1
    # label 1 is one quarter turn counter-clockwise: the top row becomes the left column
    assert torch.equal(views[len(x)][0][:, 0], x[0][0][0].flip(0))


def test_every_image_appears_with_all_four_labels() -> None:
    x = asymmetric_images(b=5)
    views, labels = Rotations()(x)
    seen: dict[int, set[int]] = {i: set() for i in range(len(x))}
    for view, label in zip(views, labels):
        for i, img in enumerate(x):
            for k in range(4):
                if torch.equal(view, torch.rot90(img, k, dims=(-2, -1))):
                    assert k == int(label)
                    seen[i].add(k)
    assert all(s == {0, 1, 2, 3} for s in seen.values())


def test_rotations_reject_non_square_images() -> None:
    with pytest.raises(ValueError, match="square"):
        Rotations()(torch.rand(2, 3, 8, 6))


def test_accuracy_counts_correct_argmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [9.0, 0.0, 1.0]])
    target = torch.tensor([0, 1, 0, 2])  # right, right, wrong, wrong
    assert accuracy(logits, target).item() == 0.5


# ------------------------------------------------------------------- permutation sets

def slow_hamming(p: np.ndarray, q: np.ndarray) -> int:
    return sum(1 for a, b in zip(p, q) if a != b)


def slow_greedy(n: int, num_tiles: int, seed: int, criterion: str) -> list[tuple[int, ...]]:
    """Noroozi & Favaro, Algorithm 1, with plain loops (criterion "mean" is the paper's)."""
    cands = list(itertools.permutations(range(num_tiles)))
    j = int(np.random.default_rng(seed).integers(len(cands)))
    chosen = [cands[j]]
    while len(chosen) < n:
        best, best_key = None, None
        for c in cands:
            if c in chosen:
                continue
            d = [slow_hamming(np.array(c), np.array(p)) for p in chosen]
            key = (sum(d),) if criterion == "mean" else (min(d), sum(d))
            if best_key is None or key > best_key:   # first maximum in candidate order
                best, best_key = c, key
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("criterion", ["min", "mean"])
def test_permutation_set_matches_slow_greedy(criterion: str) -> None:
    got = permutation_set(12, num_tiles=5, seed=3, criterion=criterion)
    want = torch.tensor(slow_greedy(12, 5, 3, criterion))
    assert torch.equal(got, want)


def test_hamming_distances_match_loop() -> None:
    perms = permutation_set(20)
    d = hamming_distances(perms)
    for i, j in [(0, 1), (3, 17), (5, 5), (19, 2)]:
        assert d[i, j] == slow_hamming(perms[i].numpy(), perms[j].numpy())
    off = d + torch.eye(20, dtype=d.dtype) * 100
    assert min_hamming_distance(perms) == int(off.min())


def test_permutation_set_is_deterministic_distinct_and_valid() -> None:
    a = permutation_set(100)
    _permutation_set.cache_clear()
    b = permutation_set(100)
    assert torch.equal(a, b) and a.shape == (100, 9) and a.dtype == torch.long
    assert len({tuple(p) for p in a.tolist()}) == 100
    assert all(sorted(p) == list(range(9)) for p in a.tolist())
    a[0, 0] = 99  # callers get a copy; the cached set is untouched
    assert permutation_set(100)[0, 0] != 99
    assert not torch.equal(permutation_set(100, seed=1), b)


def test_maximal_set_is_farther_apart_than_a_random_set() -> None:
    rng = np.random.default_rng(0)
    random_set = np.stack([rng.permutation(9) for _ in range(100)])
    assert len({tuple(p) for p in random_set.tolist()}) == 100
    chosen = permutation_set(100)
    assert min_hamming_distance(chosen) >= min_hamming_distance(random_set)
    assert min_hamming_distance(chosen) > min_hamming_distance(permutation_set(100, criterion="mean"))
    mean = lambda p: hamming_distances(p).sum().item() / (100 * 99)  # noqa: E731
    assert mean(chosen) > mean(random_set)


def test_permutation_set_for_more_than_nine_tiles_samples_candidates() -> None:
    p = permutation_set(8, num_tiles=10)
    assert p.shape == (8, 10) and all(sorted(r) == list(range(10)) for r in p.tolist())
    assert min_hamming_distance(p) >= 2


def test_permutation_set_rejects_impossible_sizes() -> None:
    with pytest.raises(ConfigError, match="num_permutations"):
        permutation_set(25, num_tiles=4)
    with pytest.raises(ConfigError, match="criterion"):
        permutation_set(5, criterion="max")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ tiles

@pytest.mark.parametrize("size,cell,tile", [(32, 10, 9), (64, 21, 18), (96, 32, 27), (225, 75, 64)])
def test_tile_sizes_scale_with_the_image(size: int, cell: int, tile: int) -> None:
    assert jigsaw_sizes(size) == (cell, tile)
    puzzle = JigsawPuzzle(permutation_set(10))(torch.rand(1, 3, size, size))
    assert puzzle.tiles.shape == (1, 9, 3, tile, tile)


def test_tiny_images_are_rejected() -> None:
    with pytest.raises(ConfigError, match="too small"):
        jigsaw_sizes(2)


def test_tiles_without_gap_reassemble_the_centred_grid() -> None:
    x = asymmetric_images(b=2, s=11)                         # 11 = 3 * 3 + 2: grid offset 1
    tiles, positions = extract_tiles(x, grid=3, tile=3)
    rows = [torch.cat(tiles[:, 3 * r:3 * r + 3].unbind(1), dim=-1) for r in range(3)]
    assert torch.equal(torch.cat(rows, dim=-2), x[..., 1:10, 1:10])
    assert positions[0, :, 0].tolist() == [1, 1, 1, 4, 4, 4, 7, 7, 7]


def test_jittered_tiles_lie_inside_their_cells_at_returned_positions() -> None:
    torch.manual_seed(0)
    x = asymmetric_images(b=4, s=30)
    tiles, pos = extract_tiles(x, grid=3, tile=6)
    assert len({tuple(p) for p in pos.reshape(-1, 2).tolist()}) > 9  # offsets vary per sample
    for b, i in itertools.product(range(4), range(9)):
        y, xx = pos[b, i].tolist()
        assert 10 * (i // 3) <= y <= 10 * (i // 3) + 4 and 10 * (i % 3) <= xx <= 10 * (i % 3) + 4
        assert torch.equal(tiles[b, i], x[b, :, y:y + 6, xx:xx + 6])


def test_inverse_permutation_restores_the_original_tile_order() -> None:
    torch.manual_seed(1)
    perms = permutation_set(30)
    x = torch.rand(6, 3, 24, 24)
    jig = JigsawPuzzle(perms, normalize=False)
    puzzle = jig(x)
    assert puzzle.labels.shape == (6,) and puzzle.labels.max() < 30
    for b in range(6):
        inverse = torch.argsort(perms[puzzle.labels[b]])
        restored = puzzle.tiles[b, inverse]
        for i in range(9):
            y, xx = puzzle.positions[b, i].tolist()
            assert torch.equal(restored[i], x[b, :, y:y + 7, xx:xx + 7])


def test_puzzle_uses_given_labels() -> None:
    perms = permutation_set(10)
    labels = torch.tensor([0, 9])
    puzzle = JigsawPuzzle(perms, normalize=False)(torch.rand(2, 3, 12, 12), labels)
    assert torch.equal(puzzle.labels, labels)


def test_normalize_tiles_gives_zero_mean_unit_std_per_tile() -> None:
    tiles = torch.rand(4, 9, 3, 7, 7) * 5 + torch.arange(9.0).view(1, 9, 1, 1, 1)
    out = normalize_tiles(tiles)
    flat = out.reshape(4, 9, -1)
    assert torch.allclose(flat.mean(-1), torch.zeros(4, 9), atol=1e-5)
    assert torch.allclose(flat.std(-1, unbiased=False), torch.ones(4, 9), atol=1e-4)
    assert torch.equal(normalize_tiles(torch.ones(1, 3, 4, 4)), torch.zeros(1, 3, 4, 4))


def test_puzzle_normalises_tiles_and_reports_min_hamming() -> None:
    jig = JigsawPuzzle(permutation_set(100))
    tiles = jig(torch.rand(2, 3, 32, 32)).tiles.reshape(2, 9, -1)
    assert torch.allclose(tiles.mean(-1), torch.zeros(2, 9), atol=1e-5)
    assert jig.min_hamming == min_hamming_distance(permutation_set(100))
