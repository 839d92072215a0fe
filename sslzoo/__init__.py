"""sslzoo: self-supervised pretext and contrastive methods for images, as plugins."""
from __future__ import annotations

from sslzoo.augment import Augment, ViewAugment, ViewConfig
from sslzoo.backbone import Backbone
from sslzoo.config import hp
from sslzoo.errors import (CheckpointError, ConfigError, DataError, PluginError,
                           SslzooError, UnknownNameError)
from sslzoo.heads import ProjectionHead
from sslzoo.hookspecs import hookimpl
from sslzoo.method import DataInfo, Method, OptimConfig
from sslzoo.momentum import momentum_update

__version__ = "0.1.0"

__all__ = [
    "Augment", "Backbone", "CheckpointError", "ConfigError", "DataError", "DataInfo",
    "Method", "OptimConfig", "PluginError", "ProjectionHead", "SslzooError",
    "UnknownNameError", "ViewAugment", "ViewConfig", "__version__", "hookimpl", "hp",
    "momentum_update",
]
