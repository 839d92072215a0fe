"""RotNet: learn features by predicting which of four rotations an image underwent.

Gidaris, Singh and Komodakis, "Unsupervised Representation Learning by Predicting Image
Rotations", ICLR 2018. https://arxiv.org/abs/1803.07728
Official code: https://github.com/gidariss/FeatureLearningRotNet

Every image of the batch is fed in all four rotations (0, 90, 180, 270 degrees) at once,
which the paper found clearly better than sampling one rotation per image (Sec. 3.1,
implementation details), and a 4-way
classifier on the backbone's features is trained with cross-entropy; the rotation
accuracy is logged as ``acc``. Random crop and horizontal flip are the only other
augmentations, applied once per image before rotating, as the official CIFAR data
loader does (``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``): the ``crop-flip``
pipeline.

Where this differs from the paper, and why:

* The paper's CIFAR classifier sits on the NIN's last conv block (and ends in global
  average pooling); here it sits on the backbone's pooled features, so any backbone
  works. ``head_hidden=0`` makes it linear; a positive width gives one hidden layer
  with batch norm and ReLU, like the paper's non-linear classifiers.
* Optimiser (Sec. 3.1): SGD with batch size 128, momentum 0.9, weight decay 5e-4 and
  learning rate 0.1, dropped 5x after epochs 30, 60 and 80 of 100; the official config
  (``config/CIFAR10_RotNet_NIN4blocks.py``) adds Nesterov momentum and trains 200
  epochs with drops at 60, 120 and 160: the same fractions of the run, which is how
  ``lr_milestones`` expresses them.
  The batch of 128 counts images, not rotated copies (512 inputs per step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor, nn

import sslzoo
from sslzoo.config import hp
from sslzoo.heads import ProjectionHead
from sslzoo.method import DataInfo, Method, OptimConfig, Schedule
from sslzoo.pretext import Rotations, accuracy
from sslzoo.recipes import Recipe


class Rotation(Method):
    """RotNet: 4-way classification of image rotations (0, 90, 180, 270 degrees)."""

    name: ClassVar[str] = "rotation"
    paper: ClassVar[str] = (
        "Gidaris et al., Unsupervised Representation Learning by Predicting Image "
        "Rotations, ICLR 2018. https://arxiv.org/abs/1803.07728")
    default_augment: ClassVar[str] = "crop-flip"
    recipes: ClassVar[dict[str, Recipe]] = {
        "cifar": Recipe(
            "RotNet on CIFAR-size images: 32 px, batch 128, 100 epochs with 5x drops after "
            "30, 60 and 80 (the paper's NIN is not built in; pick a small backbone).",
            "paper Sec. 4.1 (SGD, batch 128, momentum 0.9, wd 5e-4, lr 0.1, drops 5x at 30, "
            "60, 80 of 100 epochs); config/CIFAR10_RotNet_NIN4blocks.py (Nesterov, the same "
            "drops at 60/120/160 of 200 epochs)",
            method={"lr": 0.1, "lr_batch": 128, "lr_milestones": (0.3, 0.6, 0.8),
                    "lr_gamma": 0.2},
            train={"image_size": 32, "batch_size": 128, "epochs": 100}),
        "imagenet": Recipe(
            "RotNet on ImageNet-size images: 224 px random-resized crops, batch 192, 50 "
            "epochs with 10x drops after 15, 30 and 45 (the paper's AlexNet is not built in).",
            "config/ImageNet_RotNet_AlexNet.py (batch 192, lr 0.1, Nesterov, wd 5e-4, LUT_lr "
            "drops at epochs 15/30/45 of 50, random_sized_crop)",
            method={"lr": 0.1, "lr_batch": 192, "lr_milestones": (0.3, 0.6, 0.9),
                    "lr_gamma": 0.1},
            augment={"crop": "resized"},
            train={"image_size": 224, "batch_size": 192, "epochs": 50}),
    }

    @dataclass
    class Config(OptimConfig):
        optimizer: Literal["sgd", "lars", "adam", "adamw"] = hp(
            "sgd", "optimizer (paper: SGD with momentum)")
        lr: float = hp(0.1, "learning rate per lr_batch images (paper: 0.1)", gt=0)
        lr_batch: int = hp(128, "batch size lr refers to (paper: batch size 128)", ge=0)
        momentum: float = hp(0.9, "SGD momentum (paper: 0.9)", ge=0, lt=1)
        nesterov: bool = hp(True, "Nesterov momentum (official CIFAR config: true)")
        weight_decay: float = hp(5e-4, "weight decay (paper: 5e-4)", ge=0)
        wd_exclude_bias_norm: bool = hp(
            False, "no weight decay on biases and norm weights "
                   "(official code: every parameter decays)")
        schedule: Schedule = hp("step", "learning-rate schedule (paper: step drops)")
        lr_milestones: tuple[float, ...] = hp(
            (0.3, 0.6, 0.8), "fractions of the run where the lr drops (paper: epochs 30, 60 "
                             "and 80 of 100)", gt=0, lt=1)
        lr_gamma: float = hp(0.2, "factor of each drop (paper: 5x)", gt=0, le=1)
        head_hidden: int = hp(
            0, "hidden width of the rotation classifier; 0 = linear on pooled features", ge=0)

    def __init__(self, backbone: sslzoo.Backbone, config: Any, augment: sslzoo.Augment,
                 data: DataInfo) -> None:
        super().__init__(backbone, config, augment, data)
        self.rotations = Rotations()
        dims = [backbone.num_features, *([config.head_hidden] if config.head_hidden else []), 4]
        self.classifier: nn.Module = (nn.Linear(dims[0], 4) if len(dims) == 2
                                      else ProjectionHead(dims))

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        views, labels = self.rotations(self.augment(images))  # (4B, C, S, S), (4B,)
        logits = self.classifier(self.backbone(self.preprocess(views)))  # (4B, 4)
        return {"loss": F.cross_entropy(logits.float(), labels),
                "acc": accuracy(logits.detach(), labels)}


@sslzoo.hookimpl
def register_methods(register: Any) -> None:
    register(Rotation)
