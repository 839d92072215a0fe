"""The hooks a plugin implements (see docs/plugins.md).

Each hook is called once when sslzoo loads its plugins, and is handed a ``register``
callable instead of returning objects, so sslzoo can validate every registration,
refuse duplicate names and record which plugin supplied what.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from sslzoo.augment import Augment
    from sslzoo.method import Method

hookspec = pluggy.HookspecMarker("sslzoo")
hookimpl = pluggy.HookimplMarker("sslzoo")


@hookspec
def register_methods(register: Callable[[type[Method]], None]) -> None:
    """Register training methods.

    Called once at start-up. Call ``register(MyMethod)`` for each :class:`sslzoo.Method`
    subclass; its ``name`` class attribute is the name users type.
    """


@hookspec
def register_backbones(register: Callable[..., None]) -> None:
    """Register backbones.

    Call ``register(name, factory, summary="")`` where ``factory(in_chans=3,
    pretrained=False) -> sslzoo.Backbone``. Names not registered by any plugin fall back
    to timm, so every timm model name works without registering it.
    """


@hookspec
def register_augments(register: Callable[[type[Augment]], None]) -> None:
    """Register named augmentation pipelines.

    Call ``register(MyAugment)`` for each :class:`sslzoo.Augment` subclass with a
    ``name`` and a ``Config`` dataclass of its parameters.
    """


@hookspec
def register_datasets(register: Callable[..., None]) -> None:
    """Register data sets.

    Call ``register(name, factory, summary="")`` where ``factory(split, image_size,
    root, download) -> sslzoo.data.ImageData | torch.utils.data.Dataset``
    (see :mod:`sslzoo.data`).
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``sslzoo`` command line.

    Called when the CLI starts; use ``@cli.command()`` to add commands.
    """


HOOKS: tuple[str, ...] = (
    "register_methods",
    "register_backbones",
    "register_augments",
    "register_datasets",
    "register_commands",
)

__all__: list[Any] = ["hookimpl", "hookspec", *HOOKS]
