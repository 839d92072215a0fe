"""SimCLR: contrastive learning with in-batch negatives.

Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020. https://arxiv.org/abs/2002.05709
SimCLR v2 head: Chen et al., "Big Self-Supervised Models are Strong Semi-Supervised
Learners", NeurIPS 2020. https://arxiv.org/abs/2006.10029

Two views of every image go through the backbone and an MLP projection head; the
NT-Xent loss (:func:`sslzoo.losses.nt_xent`) treats the other 2(N-1) views of the batch
as negatives. Defaults follow the paper: "we use LARS optimizer with learning rate of
4.8 (= 0.3 x BatchSize/256) and weight decay of 10^-6", a 10-epoch linear warm-up then
cosine decay (Sec. B.1), a 128-d projection output (Fig. 8), and temperature 0.5, the
value of its CIFAR-10 experiments (Sec. B.9; 0.1 is used for ImageNet at batch 4096).
The projection head puts batch norm after its hidden layer, as the official code does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

import sslzoo
from sslzoo.config import hp
from sslzoo.heads import ProjectionHead
from sslzoo.losses import nt_xent
from sslzoo.method import DataInfo, Method, OptimConfig


class SimCLR(Method):
    """SimCLR: NT-Xent over 2N augmented views with an MLP projection head."""

    name: ClassVar[str] = "simclr"
    paper: ClassVar[str] = (
        "Chen et al., A Simple Framework for Contrastive Learning of Visual "
        "Representations, ICML 2020. https://arxiv.org/abs/2002.05709")
    default_augment: ClassVar[str] = "simclr"

    @dataclass
    class Config(OptimConfig):
        optimizer: Literal["sgd", "lars", "adam", "adamw"] = hp(
            "lars", "optimizer (paper: LARS)")
        lr: float = hp(0.3, "learning rate per 256 images (paper: 0.3 x BatchSize/256)", gt=0)
        weight_decay: float = hp(1e-6, "weight decay (paper: 1e-6)", ge=0)
        warmup_epochs: float = hp(10.0, "linear warm-up epochs (paper: 10)", ge=0)
        temperature: float = hp(0.5, "NT-Xent temperature (paper: 0.5 on CIFAR, 0.1 on ImageNet)", gt=0)
        proj_hidden_dim: int = hp(2048, "hidden width of the projection MLP (paper: 2048)", ge=1)
        proj_dim: int = hp(128, "projection output width (paper: 128)", ge=1)
        version: Literal[1, 2] = hp(1, "1: 2-layer head (SimCLR); 2: 3-layer head (SimCLR v2)",
                                    choices=(1, 2))

    def __init__(self, backbone: sslzoo.Backbone, config: Any, augment: sslzoo.Augment,
                 data: DataInfo) -> None:
        super().__init__(backbone, config, augment, data)
        c = config
        hidden = [c.proj_hidden_dim] * (2 if c.version == 2 else 1)
        self.projector = ProjectionHead([backbone.num_features, *hidden, c.proj_dim])

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        # both views in one pass, so batch norm sees all 2N views as in the official code
        views = torch.cat([self.augment(images), self.augment(images)])  # (2N, C, H, W)
        z = self.projector(self.backbone(self.preprocess(views)))        # (2N, proj_dim)
        z1, z2 = z.chunk(2)
        return {"loss": nt_xent(z1, z2, self.config.temperature)}

    @torch.no_grad()
    def embedding(self, x: Tensor) -> Tensor:
        """The L2-normalised projection output that NT-Xent compares (the paper reports
        that the representation before the head is better, Sec. 4.2)."""
        return F.normalize(self.projector(self.backbone(self.preprocess(x))).float(), dim=1)


@sslzoo.hookimpl
def register_methods(register: Any) -> None:
    register(SimCLR)
