"""sslzoo: self-supervised pretext and contrastive methods for images, as plugins."""
from __future__ import annotations

from pathlib import Path

import torch

from sslzoo.augment import Augment, ViewAugment, ViewConfig
from sslzoo.backbone import Backbone
from sslzoo.config import hp
from sslzoo.errors import (CheckpointError, ConfigError, DataError, PluginError,
                           SslzooError, UnknownNameError)
from sslzoo.heads import ProjectionHead
from sslzoo.hookspecs import hookimpl
from sslzoo.method import DataInfo, Method, OptimConfig
from sslzoo.momentum import momentum_update
from sslzoo.recipes import Recipe

__version__ = "0.1.0"


def load(path: str | Path, device: str | torch.device = "cpu") -> Method:
    """The trained method of a run directory or checkpoint file, in eval mode.

    ``sslzoo.load("runs/simclr-...").encoder`` is the pretrained backbone.
    See :func:`sslzoo.runs.load`.
    """
    from sslzoo.runs import load as load_method

    return load_method(path, device)


__all__ = [
    "Augment", "Backbone", "CheckpointError", "ConfigError", "DataError", "DataInfo",
    "Method", "OptimConfig", "PluginError", "ProjectionHead", "Recipe", "SslzooError",
    "UnknownNameError", "ViewAugment", "ViewConfig", "__version__", "hookimpl", "hp", "load",
    "momentum_update",
]
