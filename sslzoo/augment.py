"""The Augment interface: batched augmentation on the training device.

An augment draws independent random parameters for every sample of a batch and applies
them in one batched call on the batch's device (kornia.augmentation does exactly this),
so no image is augmented on the CPU one at a time. Named pipelines are registered like
methods; their parameters form a ``Config`` dataclass that users set with
``--set aug.NAME=VALUE`` or the ``[augment]`` table of a config file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


class Augment(nn.Module):
    """Base class of augmentation pipelines.

    ``forward`` takes float images in ``[0, 1]`` of shape ``(B, C, H, W)`` on any device
    and returns the augmented batch (or, for pretext tasks, whatever the method trains
    on, e.g. images and labels). Calls run without gradients and outside autocast.

    Attributes:
        name: the registered name (``sslzoo list --kind augments``).
        Config: dataclass of the pipeline's parameters, each made with
            :func:`sslzoo.config.hp`.
    """

    name: ClassVar[str] = ""

    @dataclass
    class Config:
        pass

    def __init__(self, config: Any = None, image_size: int = 32) -> None:
        super().__init__()
        self.config = config if config is not None else type(self).Config()
        self.image_size = image_size

    def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            return super().__call__(x, *args, **kwargs)
