"""BYOL's augmentation asymmetry (Table 6): blur 1.0 / 0.1, solarization 0.0 / 0.2."""
from __future__ import annotations

import pytest
import torch

from sslzoo import ConfigError
from sslzoo_byol import BYOLAugment, BYOLAugmentConfig

N = 3000


def test_defaults_are_table_6():
    first, second = BYOLAugmentConfig().view_configs()
    for view in (first, second):
        assert view.crop == "resized" and view.crop_scale == (0.08, 1.0)
        assert view.hflip_prob == 0.5 and view.jitter_prob == 0.8 and view.grayscale_prob == 0.2
        assert (view.brightness, view.contrast, view.saturation, view.hue) == (0.4, 0.4, 0.2, 0.1)
        assert view.blur_sigma == (0.1, 2.0)
    assert (first.blur_prob, first.solarize_prob) == (1.0, 0.0)
    assert (second.blur_prob, second.solarize_prob) == (0.1, 0.2)


def test_two_views_of_the_same_images_differ():
    x = torch.rand(8, 3, 16, 16)
    v1, v2 = BYOLAugment(image_size=16)(x)
    assert v1.shape == v2.shape == (8, 3, 16, 16)
    assert 0 <= v1.min() and v1.max() <= 1
    assert all(not torch.equal(a, b) for a, b in zip(v1, v2))


def blurred_and_solarized(view: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
    """Fractions of images whose pixel spread shrank (blur) and whose mean flipped below
    0.5 (solarization: every input pixel is >= 0.55, so it becomes 1 - x)."""
    spread = view.flatten(1).std(1) / x.flatten(1).std(1)
    return (spread < 0.7).float().mean().item(), (view.flatten(1).mean(1) < 0.5).float().mean().item()


def test_each_view_blurs_and_solarizes_with_its_own_probability_per_image():
    # only blur and solarize left on, with a sigma large enough to see every blur
    config = BYOLAugmentConfig(crop="none", hflip_prob=0.0, jitter_prob=0.0,
                               grayscale_prob=0.0, blur_sigma=(1.5, 2.0))
    torch.manual_seed(0)
    x = 0.55 + 0.45 * torch.rand(N, 3, 8, 8)
    v1, v2 = BYOLAugment(config, image_size=8)(x)
    blur1, solar1 = blurred_and_solarized(v1, x)
    blur2, solar2 = blurred_and_solarized(v2, x)
    assert blur1 == 1.0 and solar1 == 0.0
    # binomial standard deviations at N = 3000: 0.005 and 0.007
    assert blur2 == pytest.approx(0.1, abs=0.03) and solar2 == pytest.approx(0.2, abs=0.035)


def test_view2_probabilities_are_set_with_their_own_keys():
    config = BYOLAugmentConfig(view2_blur_prob=0.0, view2_solarize_prob=1.0)
    _, second = config.view_configs()
    assert (second.blur_prob, second.solarize_prob) == (0.0, 1.0)
    with pytest.raises(ConfigError, match="view2_solarize_prob"):
        BYOLAugmentConfig(view2_solarize_prob=1.5)
