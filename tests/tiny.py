"""Tiny stand-ins shared by the tests: a two-conv backbone, an identity augment, and view
configs with every operation off but the named ones."""
from __future__ import annotations

from torch import Tensor, nn

from sslzoo.augment import Augment, ViewConfig
from sslzoo.backbone import Backbone


class TinyBackbone(Backbone):
    """Two stride-2 convolutions: (B, C, 16, 16) -> (B, 16, 4, 4)."""

    def __init__(self, in_chans: int = 3, relu_out: bool = False) -> None:
        super().__init__()
        self.in_chans, self.num_features = in_chans, 16
        layers: list[nn.Module] = [nn.Conv2d(in_chans, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 16, 3, 2, 1)]
        self.net = nn.Sequential(*layers, *([nn.ReLU()] if relu_out else []))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.net(x)


class Identity(Augment):
    """No augmentation: tests see exactly the images they pass."""

    name = "test-identity"

    def forward(self, x: Tensor) -> Tensor:
        return x.clone()


OFF = dict(crop="none", hflip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
           solarize_prob=0.0)


def only(**changes: object) -> ViewConfig:
    """A view config with every operation off except ``changes``."""
    return ViewConfig(**{**OFF, **changes})  # type: ignore[arg-type]
