"""The Method interface: backbone + heads + loss of one self-supervised method."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from sslzoo.augment import Augment
from sslzoo.backbone import Backbone
from sslzoo.config import hp
from sslzoo.recipes import Recipe

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Learning-rate schedules of the engine (after the linear warm-up).
Schedule = Literal["cosine", "step", "constant"]


@dataclass
class OptimConfig:
    """Optimisation hyper-parameters every method has; methods override the defaults.

    The peak learning rate (:func:`peak_learning_rate`) is ``lr * batch_size / lr_batch``
    (the linear scaling rule of Goyal et al. 2017 that SimCLR and MoCo use), or with
    ``lr_scaling = "sqrt"`` ``lr * sqrt(batch_size / lr_batch)`` (SimCLR, Appendix B.1:
    "LearningRate = 0.075 x sqrt(BatchSize)" is ``lr = 0.075, lr_batch = 1``), unless
    ``lr_batch`` is 0; ``--lr`` on the command line sets the peak rate directly.
    ``wd_exclude_bias_norm`` takes biases and norm weights (every parameter of at most
    one dimension) out of weight decay, as SimCLR's official code does; most official
    code (RotNet, InstDisc, InvaSpread, MoCo, colorization) decays every parameter,
    which is the default. ``schedule = "step"`` multiplies the rate
    by ``lr_gamma`` at each of ``lr_milestones``, given as fractions of the whole run so
    that a paper's "drop 10x at epochs 120 and 160 of 200" is ``(0.6, 0.8)`` however long
    the run is.
    """

    optimizer: Literal["sgd", "lars", "adam", "adamw"] = hp("sgd", "optimizer")
    lr: float = hp(0.03, "base learning rate (per lr_batch images)", gt=0)
    lr_batch: int = hp(256, "batch size that lr refers to; 0 = use lr as is", ge=0)
    lr_scaling: Literal["linear", "sqrt"] = hp(
        "linear", "peak rate: lr x batch / lr_batch (linear) or lr x sqrt(batch / lr_batch) "
                  "(sqrt, SimCLR Appendix B.1)", choices=("linear", "sqrt"))
    momentum: float = hp(0.9, "SGD/LARS momentum, or Adam beta1", ge=0, lt=1)
    weight_decay: float = hp(1e-4, "weight decay", ge=0)
    wd_exclude_bias_norm: bool = hp(
        False, "no weight decay on biases and norm weights (False: decay every parameter, "
               "as most official code does)")
    warmup_epochs: float = hp(0.0, "linear warm-up before the schedule, in epochs", ge=0)
    schedule: Schedule = hp("cosine", "learning-rate schedule after warm-up: cosine decay to "
                                      "0, step drops at lr_milestones, or constant")
    lr_milestones: tuple[float, ...] = hp(
        (0.6, 0.8), "with schedule=step: fractions of the run after which the lr is "
                    "multiplied by lr_gamma", gt=0, lt=1)
    lr_gamma: float = hp(0.1, "with schedule=step: factor applied at each milestone", gt=0, le=1)


def peak_learning_rate(config: OptimConfig, global_batch: int) -> float:
    """The learning rate after warm-up for ``global_batch`` images per step.

    ``lr * global_batch / lr_batch`` (``lr_scaling = "linear"``) or
    ``lr * sqrt(global_batch / lr_batch)`` (``"sqrt"``); ``lr`` itself when ``lr_batch``
    is 0.
    """
    if not config.lr_batch:
        return config.lr
    ratio = global_batch / config.lr_batch
    return config.lr * (math.sqrt(ratio) if config.lr_scaling == "sqrt" else ratio)


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
        global_bn: whether batch norm is synchronised across processes under torchrun
            unless ``--no-sync-bn`` says otherwise (SimCLR's "Global BN").
        recipes: the papers' named settings (:class:`sslzoo.recipes.Recipe`) for the
            data-set families they report, run with ``--recipe NAME``.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    default_augment: ClassVar[str] = "simclr"
    Config: ClassVar[type] = OptimConfig
    #: child modules that ``--sync-bn`` leaves alone (MoCo's shuffled key encoder)
    sync_bn_exclude: ClassVar[tuple[str, ...]] = ()
    #: SyncBatchNorm under torchrun by default (``--sync-bn/--no-sync-bn`` override it)
    global_bn: ClassVar[bool] = False
    #: named recipes, e.g. ``{"cifar": Recipe(...), "imagenet": Recipe(...)}``
    recipes: ClassVar[dict[str, Recipe]] = {}

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

    @torch.no_grad()
    def embedding(self, x: Tensor) -> Tensor | None:
        """The method's own embedding of images in ``[0, 1]``, the space its loss
        compares instances in, ``(B, D)``; ``None`` (the default) when it has none.

        Contrastive methods with a projection head override it (InstDisc and
        InvaSpread score kNN on their L2-normalised 128-d embedding);
        ``sslzoo eval --features embedding`` evaluates it, with :attr:`knn_temperature`.
        """
        return None

    @property
    def knn_temperature(self) -> float:
        """Temperature of the weighted kNN vote on :meth:`embedding`: the method's own
        (InstDisc Sec. 3.4 scores its embedding with its training temperature). Backbone
        features are scored with InstDisc's 0.07 whatever the method."""
        return float(getattr(self.config, "temperature", None) or 0.07)

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
        """Parameters to optimise (those that require gradients).

        One group, all decayed, unless the config's ``wd_exclude_bias_norm`` is set: then
        biases and norm weights (parameters of at most one dimension) form a second group
        without weight decay (and so without LARS adaptation), as SimCLR does.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if not getattr(self.config, "wd_exclude_bias_norm", False):
            return [{"params": params}]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
