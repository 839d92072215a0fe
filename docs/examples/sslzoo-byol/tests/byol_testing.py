"""Tiny stand-ins for the BYOL tests, built from sslzoo's public API only."""
from __future__ import annotations

import torch
from torch import Tensor, nn

import sslzoo
from sslzoo_byol import BYOL

SIZE = 8


class TinyBackbone(sslzoo.Backbone):
    """Conv + BN + ReLU: (B, 3, 8, 8) -> (B, 8, 4, 4), pooled to 8 features."""

    def __init__(self) -> None:
        super().__init__()
        self.num_features = 8
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())

    def forward_features(self, x: Tensor) -> Tensor:
        return self.net(x)


class FixedViews(sslzoo.Augment):
    """Two fixed, different views: the image and its horizontal mirror."""

    name = "test-fixed-views"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.clone(), x.flip(-1)


def make_byol(total_steps: int = 10, augment: sslzoo.Augment | None = None, **config) -> BYOL:
    small = {"proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 16, **config}
    torch.manual_seed(0)
    return BYOL(TinyBackbone(), BYOL.Config(**small), augment or FixedViews(),
                sslzoo.DataInfo(64, SIZE, total_steps=total_steps))
