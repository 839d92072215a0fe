"""BYOL's asymmetric pair of views.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020 (https://arxiv.org/abs/2006.07733), Appendix B and Table 6. Both views take
a random crop "with an area uniformly sampled between 8% and 100% of that of the original
image" (aspect ratio between 3/4 and 4/3), a horizontal flip (p = 0.5), colour jitter
(p = 0.8; brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1) and grayscale
conversion (p = 0.2). The views differ in two operations (Table 6): Gaussian blur with
probability 1.0 on the first view and 0.1 on the second, solarization with probability
0.0 and 0.2. The blur kernel is 10% of the image side and sigma is drawn from [0.1, 2.0],
as in the official code (google-deepmind/deepmind-research, ``byol/utils/augmentations.py``:
``blur_divider=10.``, ``sigma_min=0.1, sigma_max=2.0``).

Each view is one :class:`sslzoo.ViewAugment`, so every operation draws its parameters
per image and runs batched on the batch's device. Like the built-in pipelines it jitters
brightness by a factor (torchvision's convention) where the official code adds an
offset.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

import sslzoo
from sslzoo import ViewAugment, ViewConfig, hp

_VIEW_FIELDS = tuple(f.name for f in dataclasses.fields(ViewConfig))


@dataclass
class BYOLAugmentConfig(ViewConfig):
    """Parameters of :class:`BYOLAugment`: the shared ones, view 1's blur and
    solarization, and view 2's own probabilities of both (paper, Table 6)."""

    brightness: float = hp(0.4, "brightness jitter (BYOL: 0.4)", ge=0)
    contrast: float = hp(0.4, "contrast jitter (BYOL: 0.4)", ge=0)
    saturation: float = hp(0.2, "saturation jitter (BYOL: 0.2)", ge=0)
    hue: float = hp(0.1, "hue jitter in turns (BYOL: 0.1)", ge=0, le=0.5)
    blur_prob: float = hp(1.0, "view 1: probability of Gaussian blur (BYOL: 1.0)", ge=0, le=1)
    solarize_prob: float = hp(0.0, "view 1: probability of solarizing (BYOL: 0.0)", ge=0, le=1)
    view2_blur_prob: float = hp(0.1, "view 2: probability of Gaussian blur (BYOL: 0.1)",
                                ge=0, le=1)
    view2_solarize_prob: float = hp(0.2, "view 2: probability of solarizing (BYOL: 0.2)",
                                    ge=0, le=1)

    def view_configs(self) -> tuple[ViewConfig, ViewConfig]:
        """The plain :class:`sslzoo.ViewConfig` of each of the two views."""
        shared = {name: getattr(self, name) for name in _VIEW_FIELDS}
        second = {**shared, "blur_prob": self.view2_blur_prob,
                  "solarize_prob": self.view2_solarize_prob}
        return ViewConfig(**shared), ViewConfig(**second)


class BYOLAugment(sslzoo.Augment):
    """BYOL's two views: strong blur on the first, rare blur and solarization on the second.

    ``forward(images)`` returns the pair ``(view1, view2)``, each ``(B, C, image_size,
    image_size)`` float in ``[0, 1]``, drawn independently for every image.

    Args:
        config: a :class:`BYOLAugmentConfig`; the paper's defaults when ``None``.
        image_size: side of the square output.
    """

    name: ClassVar[str] = "byol"
    Config = BYOLAugmentConfig

    def __init__(self, config: Any = None, image_size: int = 32) -> None:
        super().__init__(config, image_size)
        first, second = self.config.view_configs()
        self.view1 = ViewAugment(first, image_size)
        self.view2 = ViewAugment(second, image_size)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # (B, C, H, W) -> 2 x (B, C, S, S)
        return self.view1(x), self.view2(x)
