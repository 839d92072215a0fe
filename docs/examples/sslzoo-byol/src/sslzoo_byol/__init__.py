"""sslzoo-byol: BYOL (Grill et al., NeurIPS 2020) as a third-party sslzoo plugin.

Installing the distribution registers the method ``byol`` and its augment pipeline
``byol`` through the ``sslzoo`` entry-point group; ``sslzoo train byol`` then trains it
like any built-in method. Everything here uses sslzoo's public API only.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sslzoo
from sslzoo_byol.augment import BYOLAugment, BYOLAugmentConfig
from sslzoo_byol.method import BYOL, byol_loss, target_decay

__version__ = "0.1.0"

__all__ = ["BYOL", "BYOLAugment", "BYOLAugmentConfig", "byol_loss", "target_decay"]


@sslzoo.hookimpl
def register_methods(register: Callable[[Any], None]) -> None:
    register(BYOL)


@sslzoo.hookimpl
def register_augments(register: Callable[[Any], None]) -> None:
    register(BYOLAugment)
