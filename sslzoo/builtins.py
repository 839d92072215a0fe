"""The core's own backbones, augment pipelines and data sets, registered through the
same hooks a third-party plugin implements."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sslzoo.hookspecs import hookimpl


@hookimpl
def register_backbones(register: Callable[..., None]) -> None:
    from sslzoo.backbones import BACKBONES

    for name, (factory, summary) in BACKBONES.items():
        register(name, factory, summary)


@hookimpl
def register_augments(register: Callable[[Any], None]) -> None:
    from sslzoo.augment import AUGMENTS

    for cls in AUGMENTS:
        register(cls)


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    from sslzoo.data import DATASETS

    for name, (factory, summary) in DATASETS.items():
        register(name, factory, summary)
