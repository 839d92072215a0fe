"""CIE Lab conversion and the quantised ab space of Zhang et al. (ECCV 2016)."""
from __future__ import annotations

import math

import pytest
import torch

from sslzoo import color


def test_lab_round_trip_is_exact_to_1e_3() -> None:
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    lab = color.rgb_to_lab(x)
    assert lab.dtype == torch.float32
    assert lab[:, 0].min() >= 0 and lab[:, 0].max() <= 100
    assert (color.lab_to_rgb(lab) - x).abs().max() < 1e-3


def test_lab_of_known_colours() -> None:
    white = torch.ones(1, 3, 1, 1)
    grey = torch.full((1, 1, 1, 1), 0.5)                     # one channel = grey
    lab_white, lab_grey = color.rgb_to_lab(white), color.rgb_to_lab(grey)
    assert lab_white[0, 0].item() == pytest.approx(100, abs=0.01)
    assert lab_white[0, 1:].abs().max() < 0.01 and lab_grey[0, 1:].abs().max() < 0.01
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    lab = color.rgb_to_lab(red).flatten()                    # sRGB red: L 53.2, a 80.1, b 67.2
    assert torch.allclose(lab, torch.tensor([53.24, 80.09, 67.20]), atol=0.1)


def test_bins_are_deterministic_and_cover_the_srgb_gamut() -> None:
    bins = color.ab_bins()
    assert torch.equal(bins, color.ab_bins())
    assert bins.shape[1] == 2 and 230 <= len(bins) <= 330       # the paper has 313
    assert len(torch.unique(bins, dim=0)) == len(bins)
    assert (bins.remainder(10) == 0).all()
    # every sRGB colour falls in the cell of some bin (its nearest bin is within half a cell)
    rgb = torch.rand(1, 3, 200, 200, generator=torch.Generator().manual_seed(1))
    ab = color.rgb_to_lab(rgb)[:, 1:]
    pts = ab.movedim(1, -1).reshape(-1, 2)
    nearest = bins[color.nearest_bin(ab, bins).flatten()]
    assert ((pts - nearest).abs().max(dim=1).values <= 5 + 1e-3).all()


def test_every_bin_centre_is_in_gamut() -> None:
    """In gamut: some sRGB colour lies in the bin's 10x10 cell (the colours the paper's
    Fig. 3a marks). Checked with an independent sampling: the bin's cell holds a colour of
    a dense sRGB grid, found by brute force."""
    bins = color.ab_bins()
    v = torch.linspace(0, 1, 64)
    rgb = torch.stack(torch.meshgrid(v, v, v, indexing="ij")).reshape(1, 3, -1, 1)
    # the faces of the cube at full 8-bit resolution reach the cells at the gamut's rim
    u = torch.arange(256) / 255.0
    uu, ww = (t.reshape(-1) for t in torch.meshgrid(u, u, indexing="ij"))
    faces = []
    for k in range(3):
        for value in (0.0, 1.0):
            face = torch.empty(3, len(uu))
            face[k], face[(k + 1) % 3], face[(k + 2) % 3] = value, uu, ww
            faces.append(face)
    rgb = torch.cat([rgb.view(3, -1), *faces], dim=1).view(1, 3, -1, 1)
    ab = color.rgb_to_lab(rgb)[0, 1:, :, 0].T                    # (N, 2)
    for a in bins[:, 0].unique():                                 # one column of cells
        strip = ab[(ab[:, 0] - a).abs() <= 5 + 1e-4, 1]              # b of colours in it
        column = bins[bins[:, 0] == a, 1]
        held = ((strip[None, :] - column[:, None]).abs() <= 5 + 1e-4).any(dim=1)
        assert held.all(), f"bins {column[~held].tolist()} at a={a.item()} hold no sRGB colour"


def test_soft_encoding_sums_to_one_and_peaks_at_the_nearest_bin() -> None:
    bins = color.ab_bins()
    g = torch.Generator().manual_seed(2)
    ab = color.rgb_to_lab(torch.rand(2, 3, 6, 6, generator=g))[:, 1:]
    z = color.soft_encode(ab, bins)
    assert z.shape == (2, len(bins), 6, 6)
    assert torch.allclose(z.sum(1), torch.ones(2, 6, 6), atol=1e-5)
    assert ((z > 0).sum(1) == 5).all()
    assert torch.equal(z.argmax(1), color.nearest_bin(ab, bins))
    assert (z.max(1).values > 0.2).all()                         # > 1/5: the largest share


def test_soft_encoding_matches_a_slow_reference() -> None:
    bins = color.ab_bins()
    ab = torch.tensor([[3.0, -12.0], [47.0, 21.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 3)
    z = color.soft_encode(ab, bins, k=5, sigma=5.0)
    for i in range(3):
        a, b = ab[0, 0, 0, i].item(), ab[0, 1, 0, i].item()
        d = [math.hypot(a - bins[q, 0].item(), b - bins[q, 1].item()) for q in range(len(bins))]
        order = sorted(range(len(bins)), key=lambda q: d[q])[:5]
        w = [math.exp(-d[q] ** 2 / 50.0) for q in order]
        expected = torch.zeros(len(bins))
        for q, wq in zip(order, w):
            expected[q] = wq / sum(w)
        assert torch.allclose(z[0, :, 0, i], expected, atol=1e-6)


def test_an_exact_bin_colour_puts_most_mass_on_that_bin() -> None:
    bins = color.ab_bins()
    q = len(bins) // 2
    ab = bins[q].view(1, 2, 1, 1)
    z = color.soft_encode(ab, bins)[0, :, 0, 0]
    # neighbours at distance 10 get exp(-2) each: 1 / (1 + 4 e^-2) of the mass stays
    assert z[q].item() == pytest.approx(1 / (1 + 4 * math.exp(-2)), rel=1e-4)


def test_rebalancing_weights_have_unit_expectation_and_favour_rare_bins() -> None:
    bins = color.ab_bins()
    g = torch.Generator().manual_seed(3)
    # mostly desaturated colours, a few saturated ones
    rgb = 0.4 + 0.2 * torch.rand(8, 3, 16, 16, generator=g)
    rgb[:, :, :2, :2] = torch.rand(8, 3, 2, 2, generator=g)
    ab = color.rgb_to_lab(rgb)[:, 1:]
    p = color.bin_distribution(ab, bins)
    assert p.sum().item() == pytest.approx(1.0)
    p_smooth = color.smooth_distribution(p, bins)
    assert p_smooth.sum().item() == pytest.approx(1.0, abs=1e-5)
    w = color.rebalance_weights(p_smooth, 0.5)
    assert (p_smooth * w).sum().item() == pytest.approx(1.0, abs=1e-5)
    common, rare = p_smooth.argmax(), p_smooth.argmin()
    assert w[rare] > w[common]
    order = p_smooth.argsort()                                      # w decreases with p~
    assert (w[order][1:] <= w[order][:-1] + 1e-6).all()
    # lambda = 1: no rebalancing at all
    assert torch.allclose(color.rebalance_weights(p_smooth, 1.0), torch.ones(len(bins)))


def test_smoothing_matches_a_slow_gaussian_sum() -> None:
    bins = color.ab_bins()[:30]
    p = torch.rand(30, generator=torch.Generator().manual_seed(4))
    p /= p.sum()
    out = color.smooth_distribution(p, bins, sigma=5.0)
    ref = torch.zeros(30)
    for i in range(30):
        for j in range(30):
            d2 = ((bins[i] - bins[j]) ** 2).sum().item()
            ref[i] += p[j] * math.exp(-d2 / 50.0)
    assert torch.allclose(out, ref / ref.sum(), atol=1e-6)


def test_annealed_mean_of_one_hot_is_that_bin_and_interpolates_mean_and_mode() -> None:
    bins = color.ab_bins()
    q = 17
    onehot = torch.zeros(1, len(bins), 1, 1)
    onehot[0, q] = 1.0
    ab = color.annealed_mean(onehot.log(), bins, 0.38)
    assert torch.allclose(ab.flatten(), bins[q])
    logits = torch.randn(1, len(bins), 1, 1, generator=torch.Generator().manual_seed(5))
    p = logits.softmax(1)[0, :, 0, 0]
    mean = (p[:, None] * bins).sum(0)
    assert torch.allclose(color.annealed_mean(logits, bins, 1.0).flatten(), mean, atol=1e-4)
    mode = bins[p.argmax()]
    assert torch.allclose(color.annealed_mean(logits, bins, 1e-3).flatten(), mode, atol=1e-3)
    # T = 0.38 re-weights p^(1/T)
    f = p ** (1 / 0.38)
    f = f / f.sum()
    expected = (f[:, None] * bins).sum(0)
    assert torch.allclose(color.annealed_mean(logits, bins).flatten(), expected, atol=1e-3)
