"""The Method interface: backbone + heads + loss of one self-supervised method."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from sslzoo.augment import Augment
from sslzoo.backbone import Backbone
from sslzoo.config import hp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Learning-rate schedules of the engine (after the linear warm-up).
Schedule = Literal["cosine", "step", "constant"]


@dataclass
class OptimConfig:
    """Optimisation hyper-parameters every method has; methods override the defaults.

    The peak learning rate is ``lr * batch_size / lr_batch`` (the linear scaling rule of
    Goyal et al. 2017 that SimCLR and MoCo use) unless ``lr_batch`` is 0; ``--lr`` on the
    command line sets the peak rate directly. ``schedule = "step"`` multiplies the rate
    by ``lr_gamma`` at each of ``lr_milestones``, given as fractions of the whole run so
    that a paper's "drop 10x at epochs 120 and 160 of 200" is ``(0.6, 0.8)`` however long
    the run is.
    """

    optimizer: Literal["sgd", "lars", "adam", "adamw"] = hp("sgd", "optimizer")
    lr: float = hp(0.03, "base learning rate (per lr_batch images)", gt=0)
    lr_batch: int = hp(256, "batch size that lr refers to; 0 = use lr as is", ge=0)
    momentum: float = hp(0.9, "SGD/LARS momentum, or Adam beta1", ge=0, lt=1)
    weight_decay: float = hp(1e-4, "weight decay", ge=0)
    warmup_epochs: float = hp(0.0, "linear warm-up before the schedule, in epochs", ge=0)
    schedule: Schedule = hp("cosine", "learning-rate schedule after warm-up: cosine decay to "
                                      "0, step drops at lr_milestones, or constant")
    lr_milestones: tuple[float, ...] = hp(
        (0.6, 0.8), "with schedule=step: fractions of the run after which the lr is "
                    "multiplied by lr_gamma", gt=0, lt=1)
    lr_gamma: float = hp(0.1, "with schedule=step: factor applied at each milestone", gt=0, le=1)


@dataclass(frozen=True)
class DataInfo:
    """What a method may know about its training data: sizes, never labels.

    Attributes:
        num_samples: images in the training set (a memory bank needs one row each).
        image_size: side of the square training images.
        channels: image channels.
        total_steps: planned optimiser steps of the run; 0 when unknown (outside a
            training run). Schedules that follow the run, such as BYOL's target decay,
            read it.
    """

    num_samples: int
    image_size: int
    channels: int = 3
    total_steps: int = 0


class Method(nn.Module):
    """Base class of self-supervised methods.

    A subclass sets ``name``, ``paper`` and a ``Config`` dataclass (subclassing
    :class:`OptimConfig` with the paper's optimiser defaults), builds its heads in
    ``__init__`` and implements :meth:`training_step`. The engine calls
    ``method(images, index)`` (so DDP sees the forward pass), then :meth:`on_step_end`
    after each optimiser step.

    Attributes:
        name: the name users type (``sslzoo train NAME``).
        paper: citation of the paper the method follows.
        default_augment: registered augment pipeline used unless the user picks another.
        Config: the method's hyper-parameters.
        sync_bn_exclude: names of child modules whose batch norm must stay per process
            under ``--sync-bn``.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    default_augment: ClassVar[str] = "simclr"
    Config: ClassVar[type] = OptimConfig
    #: child modules that ``--sync-bn`` leaves alone (MoCo's shuffled key encoder)
    sync_bn_exclude: ClassVar[tuple[str, ...]] = ()

    def __init__(self, backbone: Backbone, config: Any, augment: Augment, data: DataInfo) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.augment = augment
        self.data = data
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def augment_name(cls, config: Any) -> str:
        """The augment pipeline this configuration trains with by default."""
        return cls.default_augment

    @classmethod
    def backbone_in_chans(cls, config: Any) -> int:
        """Input channels of the backbone (colorization feeds the L channel alone)."""
        return 3

    @property
    def encoder(self) -> Backbone:
        """The backbone that evaluation and export use."""
        return self.backbone

    def preprocess(self, x: Tensor) -> Tensor:
        """Images in ``[0, 1]`` to what the encoder takes (ImageNet normalisation)."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """Frozen features of images in ``[0, 1]`` for evaluation: ``(B, num_features)``."""
        return self.encoder(self.preprocess(x))

    def prepare(self, images: Tensor) -> None:
        """Called once before training with a uint8 sample of training images.

        Methods that estimate data statistics (colorization's class rebalancing)
        override it and keep the result in buffers, so checkpoints hold it.
        """

    def forward(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        return self.training_step(images, index)

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        """One step: augment ``images`` (float in ``[0, 1]``, ``(B, C, H, W)``) and
        return a dict with the scalar ``"loss"`` and any metrics (e.g. ``"acc"``).

        ``index`` holds each image's position in the training set (``(B,)`` long).
        """
        raise NotImplementedError

    def on_step_end(self) -> None:
        """After each optimiser step: momentum encoders, queues, memory banks."""

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Parameters to optimise; biases and norm weights get no weight decay
        (and so no LARS adaptation), as SimCLR and BYOL do."""
        decay, no_decay = [], []
        for _, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
