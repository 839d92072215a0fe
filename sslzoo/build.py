"""From names and overrides to a fully resolved run configuration, and to a Method.

A run is described by three dataclasses: :class:`TrainConfig` (engine options, the
``sslzoo train`` flags), the method's ``Config`` and the augment's ``Config``. They
come from defaults, then a TOML file, then command-line flags and ``--set``, and are
written to ``config.json`` so a run can be rebuilt exactly.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sslzoo import config as cfg
from sslzoo.errors import ConfigError
from sslzoo.method import DataInfo, Method
from sslzoo.plugins import Plugins, default_plugins

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

AUGMENT_PREFIXES = ("aug.", "augment.")


@dataclass
class TrainConfig:
    """Engine options: everything ``sslzoo train`` takes besides hyper-parameters."""

    method: str = cfg.hp("simclr", "method to train")
    recipe: str | None = cfg.hp(None, "a named recipe of the method: its paper's settings for a "
                                      "data-set family (sslzoo info METHOD lists them)")
    data: str = cfg.hp("digits", "data set name or image folder")
    data_root: str | None = cfg.hp(None, "where data sets are stored (default ~/.cache/sslzoo/data)")
    download: bool = cfg.hp(False, "download torchvision data sets if missing")
    backbone: str = cfg.hp("small_resnet18", "backbone name (registered or any timm model)")
    pretrained: bool = cfg.hp(False, "start from the backbone's pretrained weights")
    image_size: int = cfg.hp(32, "images are resized to this square size once", ge=8)
    epochs: int = cfg.hp(100, "training epochs", ge=1)
    max_steps: int | None = cfg.hp(None, "stop after this many optimiser steps", ge=1)
    batch_size: int = cfg.hp(256, "images per step (per process under torchrun)", ge=1)
    lr: float | None = cfg.hp(None, "peak learning rate; default: the method's lr scaled to the "
                                    "batch (lr_scaling)", gt=0)
    clip_grad: float = cfg.hp(0.0, "clip the gradient norm to this value (0: off)", ge=0)
    device: Literal["auto", "cpu", "cuda"] = cfg.hp("auto", "training device")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = cfg.hp(
        "auto", "auto: bf16 autocast on CUDA, fp32 on CPU")
    compile: bool = cfg.hp(False, "torch.compile the method")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = cfg.hp(
        "default", "torch.compile mode with --compile (max-autotune: CUDA graphs + autotuning)")
    channels_last: Literal["auto", "on", "off"] = cfg.hp(
        "auto", "channels_last memory format for images and model; "
                "auto: on (CUDA and CPU); off: the default format")
    cpu_tuning: bool = cfg.hp(
        True, "on the CPU, keep freed memory in the process (glibc: no mmap, no trim)")
    sync_bn: bool | None = cfg.hp(None, "SyncBatchNorm across processes under torchrun; default: "
                                        "the method's (SimCLR: on, its 'Global BN')")
    seed: int = cfg.hp(0, "random seed")
    out: str | None = cfg.hp(None, "run directory (default runs/<method>-<timestamp>)")
    augment: str | None = cfg.hp(None, "augment pipeline (default: the method's)")
    eval_every: int = cfg.hp(0, "kNN monitor every N epochs (0: off)", ge=0)
    checkpoint_every: int = cfg.hp(0, "also checkpoint every N steps (0: at epoch ends)", ge=0)
    keep: int = cfg.hp(0, "keep the K most recent step-NNNNNN.pt checkpoints (0: last.pt only)", ge=0)
    skip_nonfinite: int = cfg.hp(0, "skip up to N steps whose loss or gradients are not finite (0: stop)", ge=0)
    strict_data: bool = cfg.hp(False, "stop at the first image file that cannot be read")
    log_every: int = cfg.hp(10, "write metrics every N steps", ge=1)
    num_workers: int = cfg.hp(2, "DataLoader workers for streamed image folders", ge=0)
    logger: Literal["jsonl", "tensorboard"] = cfg.hp(
        "jsonl", "metrics.jsonl always; tensorboard: also event files in RUN/tensorboard "
        "(pip install 'sslzoo[tensorboard]')")
    decoded_cache: bool = cfg.hp(
        True, "decode folders too large for memory once into a memory-mapped cache "
        "($SSLZOO_CACHE or ~/.cache/sslzoo/decoded) instead of every epoch")


@dataclass
class RunSpec:
    """A fully resolved run: engine options, method and augment with their configs."""

    train: TrainConfig
    method_cls: type[Method]
    method_config: Any
    augment_cls: type
    augment_config: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": cfg.to_dict(self.train),
            "method": {"name": self.method_cls.name, **cfg.to_dict(self.method_config)},
            "augment": {"name": self.augment_cls.name, **cfg.to_dict(self.augment_config)},
        }


def read_toml(path: str | Path) -> dict[str, Any]:
    """A config file: tables ``[train]``, ``[method]`` and ``[augment]``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"train", "method", "augment"}
    if unknown:
        raise ConfigError(f"config file {path}: unknown table(s) {sorted(unknown)}; "
                          "use [train], [method] and [augment]")
    return data


def resolve(train: dict[str, Any], method: dict[str, Any] | None = None,
            augment: dict[str, Any] | None = None, plugins: Plugins | None = None) -> RunSpec:
    """Build a :class:`RunSpec` from plain values (strings allowed, as from ``--set``).

    ``augment`` may hold ``name`` to pick a pipeline other than the method's default.
    With ``train["recipe"]`` set, the recipe's values (:mod:`sslzoo.recipes`) come
    first and every value given here overrides them.
    """
    from sslzoo.recipes import get_recipe, layered

    plugins = plugins or default_plugins()
    train_cfg = cfg.build(TrainConfig, train, where="--")
    method_cls = plugins.methods.get(train_cfg.method).obj
    recipe = get_recipe(method_cls, train_cfg.recipe) if train_cfg.recipe else None
    if recipe is not None:  # the recipe's engine options, under the given ones
        train_cfg = cfg.build(TrainConfig, layered(recipe, "train", train), where="--")
    method_values = layered(recipe, "method", method or {})
    method_values.pop("name", None)
    method_config = cfg.build(method_cls.Config, method_values)
    augment_values = dict(augment or {})
    recipe_aug = dict(recipe.augment) if recipe is not None else {}
    intended = recipe_aug.pop("name", None) or method_cls.augment_name(method_config)
    aug_name = augment_values.pop("name", None) or train_cfg.augment or intended
    if aug_name == intended:  # a recipe's augment values belong to its own pipeline
        augment_values = {**recipe_aug, **augment_values}
    train_cfg.augment = aug_name
    augment_cls = plugins.augments.get(aug_name).obj
    augment_config = cfg.build(augment_cls.Config, augment_values, where="--set aug.")
    return RunSpec(train_cfg, method_cls, method_config, augment_cls, augment_config)


def split_overrides(assignments: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Separate ``--set`` keys into method and ``aug.``-prefixed augment keys."""
    method, augment = {}, {}
    for key, value in assignments.items():
        for prefix in AUGMENT_PREFIXES:
            if key.startswith(prefix):
                augment[key[len(prefix):]] = value
                break
        else:
            method[key] = value
    return method, augment


def from_dict(d: dict[str, Any], plugins: Plugins | None = None) -> RunSpec:
    """The inverse of :meth:`RunSpec.to_dict` (``config.json``)."""
    return resolve(d["train"], d.get("method"), d.get("augment"), plugins)


def build_method(spec: RunSpec, data: DataInfo, plugins: Plugins | None = None) -> Method:
    """Construct the backbone, the augment and the method of ``spec``."""
    from sslzoo.backbones import create_backbone

    plugins = plugins or default_plugins()
    t = spec.train
    backbone = create_backbone(t.backbone, in_chans=spec.method_cls.backbone_in_chans(spec.method_config),
                               pretrained=t.pretrained, registry=plugins.backbones)
    augment = spec.augment_cls(spec.augment_config, image_size=t.image_size)
    return spec.method_cls(backbone, spec.method_config, augment, data)
