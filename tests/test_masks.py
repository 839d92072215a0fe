"""Region masks, erosion, overlap weighting and the masked L2 of Context Encoders."""
from __future__ import annotations

import pytest
import torch

from sslzoo.masks import (center_box, center_mask, erode, masked_l2, overlap_pixels,
                          overlap_weights, random_block_mask, random_region_mask)


@pytest.mark.parametrize("size", [16, 32, 128])
def test_center_mask_is_the_central_quarter(size: int) -> None:
    mask = center_mask(3, size)
    assert mask.shape == (3, 1, size, size) and mask.dtype == torch.bool
    assert mask.float().mean().item() == pytest.approx(0.25)
    assert torch.equal(mask, mask.flip(-1)) and torch.equal(mask, mask.flip(-2))  # centred
    assert torch.equal(mask[0], mask[2])
    start, side = center_box(size)
    assert side == size // 2 and start == size // 4
    assert mask[0, 0, start:start + side, start:start + side].all()


def test_random_block_masks_differ_per_sample_and_cover_at_most_a_quarter() -> None:
    g = torch.Generator().manual_seed(0)
    mask = random_block_mask(16, 32, generator=g)
    assert mask.shape == (16, 1, 32, 32) and mask.dtype == torch.bool
    cover = mask.float().mean(dim=(1, 2, 3))
    assert (cover > 0).all() and (cover <= 0.25).all()
    flat = mask.flatten(1)
    assert len({tuple(row.nonzero().flatten().tolist()) for row in flat}) == 16
    again = random_block_mask(16, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def test_random_block_masks_are_unions_of_rectangles_of_the_requested_sides() -> None:
    mask = random_block_mask(8, 32, num_blocks=1, generator=torch.Generator().manual_seed(1))
    for m in mask[:, 0]:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert m.sum().item() == h * w                    # a single filled rectangle
        assert 4 <= h <= 8 and 4 <= w <= 8                # sides in [S/8, S/4]


def test_random_region_masks_have_the_drawn_coverage_and_differ() -> None:
    mask = random_region_mask(12, 32, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (12, 1, 32, 32)
    cover = mask.float().mean(dim=(1, 2, 3))
    assert (cover >= 0.2 - 1 / 1024).all() and (cover <= 0.3 + 1 / 1024).all()
    assert len({tuple(row.nonzero().flatten().tolist()) for row in mask.flatten(1)}) == 12


def test_erode_shrinks_a_square_and_keeps_image_borders() -> None:
    m = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    m[..., 1:5, 1:5] = True
    e = erode(m, 1)
    expected = torch.zeros_like(m)
    expected[..., 2:4, 2:4] = True
    assert torch.equal(e, expected)
    full = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    assert torch.equal(erode(full, 1), full)                # no context outside the image
    assert torch.equal(erode(m, 0), m)


def test_overlap_weights_on_a_hand_checked_example() -> None:
    # 6x6 image, predicted region = the central 4x4; a 1-px band is visible context
    mask = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    mask[..., 1:5, 1:5] = True
    w = overlap_weights(mask, overlap=1, weight=10.0)
    expected = torch.tensor([[0, 0, 0, 0, 0, 0],
                             [0, 10, 10, 10, 10, 0],
                             [0, 10, 1, 1, 10, 0],
                             [0, 10, 1, 1, 10, 0],
                             [0, 10, 10, 10, 10, 0],
                             [0, 0, 0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(w[0, 0], expected)
    # the loss: error 1 everywhere -> (4 * 1 + 12 * 10) / 16 masked pixels = 7.75
    pred, target = torch.zeros(1, 1, 6, 6), torch.ones(1, 1, 6, 6)
    assert masked_l2(pred, target, w).item() == pytest.approx(7.75)
    # a single error of 2 on a band pixel: 10 * 4 / 16 = 2.5; on the interior: 4 / 16
    t = torch.zeros(1, 1, 6, 6)
    t[0, 0, 1, 2] = 2.0
    assert masked_l2(pred, t, w).item() == pytest.approx(2.5)
    t = torch.zeros(1, 1, 6, 6)
    t[0, 0, 2, 3] = 2.0
    assert masked_l2(pred, t, w).item() == pytest.approx(0.25)


def test_official_overlap_at_128_px() -> None:
    # official train.lua: 64x64 central prediction, overlapPred = 4, 10x weight on the band
    w = center_box(128)
    mask = center_mask(1, 128)
    weights = overlap_weights(mask, overlap_pixels(128, 4 / 128))
    patch = weights[0, 0, w[0]:w[0] + w[1], w[0]:w[0] + w[1]]
    assert patch.shape == (64, 64)
    assert (patch[4:60, 4:60] == 1).all()
    band = torch.ones(64, 64, dtype=torch.bool)
    band[4:60, 4:60] = False
    assert (patch[band] == 10).all()
    assert weights.sum().item() == pytest.approx(56 * 56 + 10 * (64 * 64 - 56 * 56))


def test_masked_l2_ignores_unmasked_pixels_and_matches_a_slow_loop() -> None:
    g = torch.Generator().manual_seed(0)
    mask = random_block_mask(4, 16, generator=g)
    w = overlap_weights(mask, 1)
    pred, target = torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 3, 16, 16, generator=g)
    loss = masked_l2(pred, target, w)
    total, count = 0.0, 0
    for b in range(4):
        for y in range(16):
            for x in range(16):
                if w[b, 0, y, x] > 0:
                    count += 3
                    for c in range(3):
                        err = (pred[b, c, y, x] - target[b, c, y, x]).item()
                        total += w[b, 0, y, x].item() * err ** 2
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    changed = torch.where(mask, pred, pred + 5.0)           # unmasked pixels only
    assert masked_l2(changed, target, w).item() == pytest.approx(loss.item(), rel=1e-6)
    changed = torch.where(mask, pred + 0.5, pred)           # masked pixels
    assert masked_l2(changed, target, w).item() != pytest.approx(loss.item(), rel=1e-3)


def test_masked_l2_gradient_is_zero_outside_the_mask() -> None:
    mask = center_mask(2, 8)
    w = overlap_weights(mask, 1)
    pred = torch.randn(2, 3, 8, 8, requires_grad=True)
    masked_l2(pred, torch.zeros(2, 3, 8, 8), w).backward()
    assert (pred.grad.abs().sum(1, keepdim=True)[~mask] == 0).all()
    assert (pred.grad.abs().sum(1, keepdim=True)[mask] > 0).all()


def test_overlap_pixels_scale_with_the_image() -> None:
    assert overlap_pixels(128, 4 / 128) == 4
    assert overlap_pixels(64, 4 / 128) == 2
    assert overlap_pixels(32, 4 / 128) == 1
    assert overlap_pixels(16, 4 / 128) == 1
    assert overlap_pixels(32, 0.0) == 0
