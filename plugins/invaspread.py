"""InvaSpread: invariant and spreading instance features, learned within the batch.

Ye, Zhang, Yuen and Chang, "Unsupervised Embedding Learning via Invariant and Spreading
Instance Feature", CVPR 2019. https://arxiv.org/abs/1904.03436
Official code: https://github.com/mangye16/Unsupervised_Embedding_Learning

Each image of the batch and an augmented copy go through the backbone and a linear layer
to a 128-d L2-normalised embedding (the official ResNet's ``linear`` + ``Normalize``).
An instance-wise softmax over the batch's own embeddings, with no memory bank, pulls
the copy towards its image (invariance) and pushes the other images away (spreading):
``J = -sum_i log P(i|x^_i) - sum_i sum_{j != i} log(1 - P(i|x_j))`` (Eq. (5)), see
:func:`sslzoo.losses.invariance_spreading_loss`.

Where the paper and the official code differ, this follows the official code and says so:

* both the "original" and the copy are augmented: its data set returns two draws of the
  training transform (``datasets/cifar.py``), and both go through the network in one
  batch of 2N (so batch norm sees both);
* the loss (``BatchAverage.py``, ``BatchCriterion`` with ``negM = 1``) treats both views
  as queries, each against the other 2N - 1 embeddings of the batch, with the keys
  detached (``feat.data``) and the sum divided by 2N (``detach_keys`` turns the
  detaching off);
* the official transform applies colour jitter before grayscale; the default augment
  here is the registered ``instdisc`` pipeline (the same operations and strengths:
  RandomResizedCrop scale (0.2, 1), grayscale p = 0.2, jitter 0.4, flip), which applies
  grayscale first (``--set aug.grayscale_first=false`` restores the official order).

Defaults, from the official ``demo_seen.py``: temperature 0.1 and a 128-d embedding (the
paper's settings too), SGD with momentum 0.9, learning rate 0.03 at batch 128, weight
decay 5e-4, and the rate dropped 10x at epoch 120 of the 301 the script trains (its
later drops sit in ``elif`` branches that never run), i.e. ``lr_milestones = (0.4,)``. Under torch.distributed
the keys come from every rank, so the softmax runs over the global batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

import sslzoo
from sslzoo.config import hp
from sslzoo.heads import ProjectionHead
from sslzoo.losses import invariance_spreading_loss
from sslzoo.method import DataInfo, Method, OptimConfig, Schedule
from sslzoo.recipes import Recipe


class InvaSpread(Method):
    """Instance softmax over the batch: invariance to augmentation, spreading of instances."""

    name: ClassVar[str] = "invaspread"
    paper: ClassVar[str] = (
        "Ye et al., Unsupervised Embedding Learning via Invariant and Spreading Instance "
        "Feature, CVPR 2019. https://arxiv.org/abs/1904.03436")
    default_augment: ClassVar[str] = "instdisc"
    recipes: ClassVar[dict[str, Recipe]] = {
        "cifar": Recipe(
            "CIFAR-size images (32 px): the official CIFAR-10 script, batch 128, colour "
            "jitter before grayscale, 301 epochs with one drop at epoch 120.",
            "mangye16/Unsupervised_Embedding_Learning demo_seen.py and datasets/cifar.py",
            augment={"grayscale_first": False},
            train={"image_size": 32, "batch_size": 128, "epochs": 301}),
        "imagenet": Recipe(
            "ImageNet-size images (224 px): the unseen-category setting (CUB-200, Cars-196, "
            "Products) that fine-tunes an ImageNet-pretrained network with random crops "
            "and flips only; the crop keeps 224 of 256 px of the resized image.",
            "demo_unseen.py: batch 64, lr 0.001, SGD wd 5e-4, drops at epochs 20 and 40 of "
            "60, RandomCrop(224) + RandomHorizontalFlip, pretrained network",
            method={"lr": 0.001, "lr_batch": 64, "lr_milestones": (1 / 3, 2 / 3)},
            augment={"name": "crop-flip", "crop": "resized",
                     "crop_scale": ((224 / 256) ** 2, (224 / 256) ** 2),
                     "crop_ratio": (1.0, 1.0)},
            train={"image_size": 224, "batch_size": 64, "epochs": 60, "pretrained": True}),
    }

    @dataclass
    class Config(OptimConfig):
        lr: float = hp(0.03, "learning rate per 128 images (official code: 0.03 at batch 128)",
                       gt=0)
        lr_batch: int = hp(128, "batch size that lr refers to (official code: 128); 0 = use "
                           "lr as is", ge=0)
        momentum: float = hp(0.9, "SGD momentum (official code: 0.9)", ge=0, lt=1)
        weight_decay: float = hp(5e-4, "weight decay (official code: 5e-4)", ge=0)
        wd_exclude_bias_norm: bool = hp(
            False, "no weight decay on biases and norm weights "
                   "(official code: every parameter decays)")
        schedule: Schedule = hp("step", "learning-rate schedule (official code: one step)")
        lr_milestones: tuple[float, ...] = hp(
            (0.4,), "fractions of the run where the lr drops 10x (official code: epoch 120 "
                    "of 301)", gt=0, lt=1)
        proj_dim: int = hp(128, "embedding width (paper: 128)", ge=1)
        temperature: float = hp(0.1, "softmax temperature t (paper: 0.1)", gt=0)
        detach_keys: bool = hp(True, "stop gradients through the keys of the batch softmax, "
                               "as the official code does (feat.data)")

    def __init__(self, backbone: sslzoo.Backbone, config: Any, augment: sslzoo.Augment,
                 data: DataInfo) -> None:
        super().__init__(backbone, config, augment, data)
        self.head = ProjectionHead([backbone.num_features, config.proj_dim])

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        views = torch.cat([self.augment(images), self.augment(images)])  # (2N, C, H, W)
        z = self.head(self.backbone(self.preprocess(views)))              # (2N, proj_dim)
        z1, z2 = z.float().chunk(2)
        c = self.config
        loss = invariance_spreading_loss(z1, z2, c.temperature, detach_keys=c.detach_keys)
        return {"loss": loss, "acc": _view_match_accuracy(z1.detach(), z2.detach())}

    @torch.no_grad()
    def embedding(self, x: Tensor) -> Tensor:
        """The L2-normalised 128-d embedding of the instance softmax (the paper's kNN
        evaluation uses it, with the training temperature)."""
        return F.normalize(self.head(self.backbone(self.preprocess(x))).float(), dim=1)


def _view_match_accuracy(z1: Tensor, z2: Tensor) -> Tensor:
    """Fraction of this process's images whose nearest second view is their own."""
    sim = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T             # (N, N)
    return (sim.argmax(1) == torch.arange(len(z1), device=z1.device)).float().mean()


@sslzoo.hookimpl
def register_methods(register: Any) -> None:
    register(InvaSpread)
