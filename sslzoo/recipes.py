"""Named recipes: a paper's settings for one data-set family, applied by name.

A method lists its papers' recipes in ``Method.recipes`` (``{"cifar": Recipe(...)}``);
``sslzoo train METHOD --recipe cifar`` layers a recipe's values over the method's, the
augment's and the engine's defaults, below a config file and the command line's own
options, and ``config.json`` records which recipe ran (``train.recipe``).
``sslzoo info METHOD`` lists every recipe with each value that differs from the default
and where it comes from.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sslzoo import config as cfg
from sslzoo.errors import UnknownNameError


@dataclass(frozen=True)
class Recipe:
    """One paper's settings for one data-set family.

    Attributes:
        summary: one sentence saying what the recipe is for.
        source: where the values come from (paper section, official script).
        method: values of the method's ``Config`` fields.
        augment: values of the augment's ``Config`` fields; ``"name"`` picks another
            registered pipeline.
        train: engine options (``TrainConfig`` fields, e.g. ``image_size``, ``epochs``).
    """

    summary: str
    source: str
    method: Mapping[str, Any] = field(default_factory=dict)
    augment: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)


def get_recipe(method_cls: type, name: str) -> Recipe:
    """The recipe ``name`` of ``method_cls``; an unknown name suggests the closest."""
    recipes: Mapping[str, Recipe] = getattr(method_cls, "recipes", {}) or {}
    if name not in recipes:
        hint = (f"{method_cls.name}'s recipes: {', '.join(sorted(recipes))}" if recipes
                else f"{method_cls.name} has no recipes")
        raise UnknownNameError("recipe", name, sorted(recipes),
                               hint=hint + f" (`sslzoo info {method_cls.name}` lists them)")
    return recipes[name]


def describe_recipes(method_cls: type, augments: Any, train_cls: type) -> list[dict[str, Any]]:
    """Every recipe of ``method_cls`` with each value that differs from its default.

    Args:
        method_cls: a registered Method class.
        augments: the augment registry (to read the defaults of the recipe's pipeline).
        train_cls: the engine's options dataclass (``TrainConfig``).

    Returns:
        One dict per recipe: ``name``, ``summary``, ``source`` and ``changes``, a list of
        ``{"key", "default", "value"}`` with ``aug.``-prefixed augment keys.
    """
    rows = []
    method_defaults = _defaults(method_cls.Config)
    train_defaults = _defaults(train_cls)
    for name, r in sorted((getattr(method_cls, "recipes", {}) or {}).items()):
        changes = [_change(k, train_defaults.get(k), v) for k, v in r.train.items()]
        changes += [_change(k, method_defaults.get(k), v) for k, v in r.method.items()]
        aug_name = r.augment.get("name") or method_cls.augment_name(method_cls.Config())
        if "name" in r.augment:
            changes.append(_change("augment", method_cls.augment_name(method_cls.Config()),
                                   aug_name))
        aug_defaults = (_defaults(augments.get(aug_name).obj.Config)
                        if aug_name in augments else {})
        changes += [_change("aug." + k, aug_defaults.get(k), v)
                    for k, v in r.augment.items() if k != "name"]
        rows.append({"name": name, "summary": r.summary, "source": r.source,
                     "changes": [c for c in changes if c["value"] != c["default"]]})
    return rows


def _defaults(config_cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in cfg.describe(config_cls)}


def _change(key: str, default: Any, value: Any) -> dict[str, Any]:
    as_text = cfg.format_value
    return {"key": key, "default": as_text(default) if default is not None else "None",
            "value": as_text(tuple(value) if isinstance(value, list) else value)}


def layered(recipe: Recipe | None, part: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` over the recipe's values for ``part`` (``method``, ``augment``, ``train``)."""
    base = dict(getattr(recipe, part)) if recipe is not None else {}
    return {**base, **given}

