"""MoCo: momentum contrast with a queue of negative keys (v1 and v2).

He, Fan, Wu, Xie and Girshick, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020. https://arxiv.org/abs/1911.05722
Chen, Fan, Girshick and He, "Improved Baselines with Momentum Contrastive Learning",
arXiv:2003.04297, 2020 (MoCo v2), chosen with ``--set version=1|2``.

A query encoder (backbone + head) is trained with InfoNCE (Eq. 1) against one positive
key, the other view of the same image encoded by a key encoder, and the K keys of a queue
(:class:`sslzoo.momentum.KeyQueue`). The key encoder is a copy of the query encoder that
receives no gradient and follows it by momentum, ``theta_k <- m theta_k + (1 - m)
theta_q`` (Eq. 2). Defaults: "K = 65536", "m = 0.999", "T = 0.07", a 128-d fc output, SGD
with "weight decay 0.0001, momentum 0.9", "learning rate 0.03" for "a mini-batch size of
256" (Sec. 4.1). v2: "we replace the fc head in MoCo with a 2-layer MLP head (hidden
layer 2048-d, with ReLU)", temperature 0.2, "a cosine learning rate schedule" and the
blur augmentation (registered as ``moco-v2``; v1 uses ``moco-v1``). v2 is the default
because it is the stronger recipe.

Where the papers leave details open, the official code (facebookresearch/moco) is
followed: the key encoder is updated at the start of each forward pass, before the keys
are computed; the keys of the whole (gathered) batch are enqueued after the loss; the
queue size must be a multiple of the global batch size; weight decay applies to every
parameter (``SGD(model.parameters(), ...)``); the v2 head's hidden layer is as wide as
the backbone's features (``dim_mlp = self.encoder_q.fc.weight.shape[1]``: the 2048 of
ResNet-50). ``symmetric=True`` is the official CIFAR-10 demo's symmetric loss ("it swaps
the two crops and computes an extra loss"): the two losses are added and both crops'
keys enqueued, so the queue size must be a multiple of twice the global batch. The
``cifar`` recipe is that demo's setting. v1 drops the rate 10x at epochs 120 and
160 of 200 (``schedule = "step"``, ``lr_milestones = (0.6, 0.8)``); v2 decays it by a cosine.

Shuffling BN (Sec. 3.3): under torchrun the key batch is shuffled across processes and
each process normalises its share, as the official ``_batch_shuffle_ddp`` does. On one
process the batch is split into ``shuffle_bn_groups`` sub-batches that batch norm
normalises separately, simulating that many GPUs as the official single-GPU CIFAR-10
demo does with ``SplitBatchNorm`` (``--bn-splits 8``): queries in their order, keys in a
shuffled order, so a query and its positive key never share batch statistics by
construction. Each sub-batch is a contiguous slice of the (randomly ordered) batch, a
free view in either memory format (the demo's reshape interleaves samples, which copies
channels_last activations). The batch norms of both encoders are converted to
:class:`sslzoo.momentum.SplitBatchNorm2d` (same parameters and state-dict keys), which
behaves as plain batch norm outside the training step and in eval mode.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from itertools import chain
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sslzoo
from sslzoo import distributed
from sslzoo.config import hp
from sslzoo.errors import ConfigError
from sslzoo.heads import ProjectionHead
from sslzoo.losses import info_nce
from sslzoo.method import DataInfo, Method, OptimConfig, Schedule
from sslzoo.momentum import (KeyQueue, batch_shuffle, batch_unshuffle, convert_split_batch_norm,
                             forward_bn_groups, momentum_update)
from sslzoo.recipes import Recipe

TEMPERATURE = {1: 0.07, 2: 0.2}   # MoCo v1 Sec. 4.1 "T = 0.07"; v2 Table 1 ("tau = 0.2")


class MoCo(Method):
    """MoCo v1/v2: momentum key encoder, queue of negatives, InfoNCE."""

    name: ClassVar[str] = "moco"
    paper: ClassVar[str] = (
        "He et al., Momentum Contrast for Unsupervised Visual Representation Learning, "
        "CVPR 2020. https://arxiv.org/abs/1911.05722; v2: Chen et al., Improved Baselines "
        "with Momentum Contrastive Learning, 2020. https://arxiv.org/abs/2003.04297")
    default_augment: ClassVar[str] = "moco-v2"
    # shuffling BN needs per-process statistics in the key encoder, even under --sync-bn
    sync_bn_exclude: ClassVar[tuple[str, ...]] = ("key_backbone", "key_head")
    recipes: ClassVar[dict[str, Recipe]] = {
        "cifar": Recipe(
            "CIFAR-size images (32 px): the official single-GPU CIFAR-10 demo (ResNet-18 with "
            "a fc head, K 4096, m 0.99, T 0.1, cosine schedule, no blur).",
            "facebookresearch/moco colab/moco_cifar10_demo: lr 0.06 for batch 512, wd 5e-4, "
            "moco-k 4096, moco-m 0.99, moco-t 0.1, bn-splits 8, cos, 200 epochs; "
            "RandomResizedCrop(32), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale 0.2",
            method={"version": 1, "queue_size": 4096, "key_momentum": 0.99, "temperature": 0.1,
                    "lr": 0.06, "lr_batch": 512, "weight_decay": 5e-4, "schedule": "cosine",
                    "shuffle_bn_groups": 8},
            augment={"name": "moco-v2", "crop_scale": (0.08, 1.0), "blur_prob": 0.0},
            train={"image_size": 32, "batch_size": 512, "epochs": 200}),
        "imagenet": Recipe(
            "ImageNet-size images (224 px): MoCo v2, 200 epochs at batch 256 (global: divide "
            "it by the number of processes).",
            "v2 paper Sec. 3 (batch 256, lr 0.03, 200 epochs, cosine, MLP head, T 0.2, blur)",
            method={"version": 2},
            train={"image_size": 224, "batch_size": 256, "epochs": 200}),
        "v1": Recipe(
            "ImageNet-size images (224 px): MoCo v1, 200 epochs at batch 256 with the lr "
            "dropped 10x at epochs 120 and 160 (global batch).",
            "MoCo paper Sec. 4.1 and official main_moco.py (--schedule 120 160)",
            method={"version": 1},
            train={"image_size": 224, "batch_size": 256, "epochs": 200}),
    }

    @dataclass
    class Config(OptimConfig):
        lr: float = hp(0.03, "learning rate per 256 images (paper: 0.03 for a batch of 256)", gt=0)
        momentum: float = hp(0.9, "SGD momentum (paper: 0.9)", ge=0, lt=1)
        weight_decay: float = hp(1e-4, "weight decay on all parameters (paper: 0.0001)", ge=0)
        wd_exclude_bias_norm: bool = hp(
            False, "no weight decay on biases and norm weights "
                   "(official code: SGD(model.parameters()))")
        schedule: Schedule | None = hp(
            None, "learning-rate schedule; default 'step' for v1 (drops 10x at epochs 120 "
                  "and 160 of 200: lr_milestones), 'cosine' for v2 (v2 paper)")
        version: Literal[1, 2] = hp(2, "1: MoCo (fc head, T=0.07, moco-v1 augment); "
                                       "2: MoCo v2 (MLP head, T=0.2, blur)", choices=(1, 2))
        dim: int = hp(128, "key/query width (paper: 'the output is a 128-D vector')", ge=1)
        mlp_hidden_dim: int = hp(0, "v2 head hidden width; 0 = the backbone's width (official "
                                    "code: dim_mlp = fc.weight.shape[1], 2048 for ResNet-50)",
                                 ge=0)
        symmetric: bool = hp(False, "symmetric loss: also swap the two crops and add that loss "
                                    "(official CIFAR-10 demo's --symmetric; the paper's loss "
                                    "is asymmetric)")
        queue_size: int = hp(65536, "number of negative keys K (paper: 65536); a multiple of "
                                    "the global batch size", ge=1)
        key_momentum: float = hp(0.999, "key encoder momentum m (paper: 0.999)", ge=0, le=1)
        temperature: float | None = hp(None, "InfoNCE temperature; default 0.07 for v1 "
                                             "(paper), 0.2 for v2 (v2 paper)", gt=0)
        shuffle_bn_groups: int = hp(8, "one process only: batch norm over this many "
                                       "sub-batches, simulating GPUs (official 1-GPU demo: "
                                       "8); 1 = whole batch", ge=1)

        def __post_init__(self) -> None:
            if self.version not in TEMPERATURE:
                raise ConfigError(f"version must be 1 or 2, got {self.version!r}; "
                                  "set it with --set version=2")
            if self.temperature is None:
                self.temperature = TEMPERATURE[self.version]
            if self.schedule is None:
                self.schedule = "step" if self.version == 1 else "cosine"

    def __init__(self, backbone: sslzoo.Backbone, config: Any, augment: sslzoo.Augment,
                 data: DataInfo) -> None:
        # batch norms that can normalise sub-batches (plain batch norm until switched on)
        backbone = convert_split_batch_norm(backbone)  # type: ignore[assignment]
        super().__init__(backbone, config, augment, data)
        c = config
        self.head = convert_split_batch_norm(self.build_head(backbone.num_features, c))
        self.key_backbone = copy.deepcopy(backbone)
        self.key_head = copy.deepcopy(self.head)
        for p in self.key_parameters():
            p.requires_grad_(False)
        self.queue = KeyQueue(c.queue_size, c.dim)

    @staticmethod
    def build_head(num_features: int, config: Any) -> ProjectionHead:
        """v1: "a fc layer (with 128-D output)"; v2: Linear-ReLU-Linear, no batch norm, the
        hidden layer as wide as the backbone's features unless ``mlp_hidden_dim`` is set."""
        if config.version == 1:
            return ProjectionHead([num_features, config.dim])
        hidden = config.mlp_hidden_dim or num_features
        return ProjectionHead([num_features, hidden, config.dim], batch_norm=False)

    @classmethod
    def augment_name(cls, config: Any) -> str:
        return "moco-v1" if config.version == 1 else "moco-v2"

    def key_parameters(self) -> chain[nn.Parameter]:
        """Parameters of the key encoder (never optimised)."""
        return chain(self.key_backbone.parameters(), self.key_head.parameters())

    def prepare(self, images: Tensor) -> None:
        """Start every rank from rank 0's queue (the keys are random until filled), and
        warn when the queue is larger than the training set."""
        self.queue.sync_()
        size, n = self.config.queue_size, self.data.num_samples
        if size > n and distributed.is_main():
            warnings.warn(
                f"queue_size={size} exceeds the {n} training images, so the queue holds older "
                "keys of the very images used as queries (the paper's 65536 is for ImageNet's "
                "1.28M images; the official CIFAR-10 demo uses 4096 for 50k); consider --set "
                "queue_size=<a multiple of the global batch size below that>", stacklevel=2)

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        self.check_batch_size(images.shape[0])
        groups = self.config.shuffle_bn_groups if distributed.world_size() == 1 else 1
        x1 = self.preprocess(self.augment(images))                  # (B, C, S, S)
        x2 = self.preprocess(self.augment(images))
        with torch.no_grad():
            # official code: update the key encoder first, then compute the keys
            momentum_update(self.backbone, self.key_backbone, self.config.key_momentum)
            momentum_update(self.head, self.key_head, self.config.key_momentum)
        # a copy, because the queue is updated in place before backward
        negatives = self.queue.keys.clone()                          # (K, D)
        loss, acc, k2 = self._contrast(x1, x2, negatives, groups)
        keys = k2
        if self.config.symmetric:
            # official CIFAR-10 demo: loss_12 + loss_21, both crops' keys enqueued
            loss_21, acc_21, k1 = self._contrast(x2, x1, negatives, groups)
            loss, acc, keys = loss + loss_21, (acc + acc_21) / 2, torch.cat([k1, k2])
        self.queue.push(distributed.gather(keys.contiguous()))
        return {"loss": loss, "acc": acc}

    def _contrast(self, x_q: Tensor, x_k: Tensor, negatives: Tensor,
                  groups: int) -> tuple[Tensor, Tensor, Tensor]:
        """InfoNCE of queries from ``x_q`` against keys from ``x_k`` and the queue.

        Returns:
            The loss, the fraction of queries whose positive beats every negative, and
            the keys ``(B, D)``.
        """
        q = F.normalize(forward_bn_groups(self.query_encoder(), x_q, groups), dim=1)  # (B, D)
        with torch.no_grad():
            x_k, unshuffle = batch_shuffle(x_k)
            k = forward_bn_groups(self.key_encoder(), x_k, groups)
            k = F.normalize(batch_unshuffle(k, unshuffle), dim=1)    # (B, D)
        loss = info_nce(q, k, negatives, self.config.temperature)
        with torch.no_grad():
            pos = (q.float() * k.float()).sum(1)                     # (B,)
            acc = (pos > (q.float() @ negatives.T).max(1).values).float().mean()
        return loss, acc, k

    def query_encoder(self) -> nn.Sequential:
        """Backbone and head of the queries (a view of registered modules)."""
        return nn.Sequential(self.backbone, self.head)

    def key_encoder(self) -> nn.Sequential:
        """Backbone and head of the keys (a view of registered modules)."""
        return nn.Sequential(self.key_backbone, self.key_head)

    def check_batch_size(self, batch: int) -> None:
        """The official code's ``assert K % batch_size == 0`` and the BN groups, as errors
        that say how to fix them (the batch size is only known at the first step)."""
        c, world = self.config, distributed.world_size()
        total = batch * world * (2 if c.symmetric else 1)  # keys enqueued per step
        if c.queue_size % total:
            per = f" ({batch} per process x {world} processes)" if world > 1 else ""
            per += " x 2 crops (symmetric)" if c.symmetric else ""
            fit = max(total, c.queue_size // total * total)
            raise ConfigError(
                f"queue_size={c.queue_size} must be a multiple of the global batch size "
                f"{total}{per}, as in the official MoCo code; set --set queue_size={fit} "
                "or choose a batch size that divides the queue size")
        if world == 1 and c.shuffle_bn_groups > 1 and (
                batch % c.shuffle_bn_groups or batch // c.shuffle_bn_groups < 2):
            raise ConfigError(
                f"the batch size {batch} must be a multiple of shuffle_bn_groups="
                f"{c.shuffle_bn_groups} with at least 2 images per group; set --set "
                "shuffle_bn_groups=<a divisor of the batch size> (1 disables the split)")

    @torch.no_grad()
    def embedding(self, x: Tensor) -> Tensor:
        """The L2-normalised query embedding that InfoNCE compares with the keys."""
        return F.normalize(self.query_encoder()(self.preprocess(x)).float(), dim=1)


@sslzoo.hookimpl
def register_methods(register: Any) -> None:
    register(MoCo)
