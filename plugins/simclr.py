"""SimCLR: contrastive learning with in-batch negatives.

Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020. https://arxiv.org/abs/2002.05709
SimCLR v2: Chen et al., "Big Self-Supervised Models are Strong Semi-Supervised
Learners", NeurIPS 2020. https://arxiv.org/abs/2006.10029
Official code: https://github.com/google-research/simclr

Two independent views of every image go through the backbone and an MLP projection head;
the NT-Xent loss (:func:`sslzoo.losses.nt_xent`) treats the other 2(N-1) views of the
batch as negatives. Defaults are the paper's ImageNet settings, matching the default
``simclr`` augment (ImageNet's colour strength 1 and blur): "we use LARS optimizer with
learning rate of 4.8 (= 0.3 x BatchSize/256) and weight decay of 10^-6", a 10-epoch
linear warm-up then cosine decay (Sec. B.1), a 128-d projection output (Fig. 8), and
temperature 0.1 (the official ``run.py`` default). ``lr_scaling=sqrt`` gives the
square-root rule of Appendix B.1 ("LearningRate = 0.075 x sqrt(BatchSize)": ``--set
lr=0.075 --set lr_batch=1 --set lr_scaling=sqrt``). The ``cifar`` recipe is the
official README's CIFAR-10 command (batch 512, lr 1.0, weight decay 1e-4, temperature
0.5, colour strength 0.5, no blur) for 32 px images.

As in the official code (and not said in the paper):

* the projection head (``ProjectionHead``) is bias-free linear layers each followed by
  batch norm (``linear_layer`` drops the dense bias when ``use_bn``), the output
  layer's batch norm with a scale but no shift (``use_bias=False, use_bn=True``: no
  ``center``), the hidden layers as wide as the backbone's features (``mid_dim =
  hiddens.shape[-1]``; ``proj_hidden_dim = 0``);
* batch norm is global under torchrun (the paper's "Global BN", Sec. 2.2: "we
  aggregate BN mean and variance over all devices during the training"; ``run.py``
  ``--global_bn=True``): SyncBatchNorm unless ``--no-sync-bn``;
* biases and batch-norm parameters get no weight decay (and no LARS adaptation):
  ``LARSOptimizer(..., exclude_from_weight_decay=['batch_normalization', 'bias'])``
  (``wd_exclude_bias_norm``).

``version=2`` is SimCLR v2: "a deeper 3-layer projection head", temperature 0.1 and
weight decay 1e-4 ("LARS optimizer with learning rate of 6.4 (= 0.1 x sqrt(BatchSize))
and weight decay of 1e-4"); the ``v2`` recipe adds that square-root learning rate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

import sslzoo
from sslzoo.config import hp
from sslzoo.errors import ConfigError
from sslzoo.heads import ProjectionHead
from sslzoo.losses import nt_xent
from sslzoo.method import DataInfo, Method, OptimConfig
from sslzoo.recipes import Recipe

#: linear layers of the projection head per version (official ``num_proj_layers``)
HEAD_LAYERS = {1: 2, 2: 3}
#: v1 paper "weight decay of 10^-6"; v2 paper "weight decay of 1e-4"
WEIGHT_DECAY = {1: 1e-6, 2: 1e-4}

_CIFAR_SOURCE = ("google-research/simclr README, CIFAR-10 command: --train_batch_size=512 "
                 "--train_epochs=1000 --learning_rate=1.0 --weight_decay=1e-4 "
                 "--temperature=0.5 --image_size=32 --use_blur=False "
                 "--color_jitter_strength=0.5")


class SimCLR(Method):
    """SimCLR: NT-Xent over 2N augmented views with an MLP projection head."""

    name: ClassVar[str] = "simclr"
    paper: ClassVar[str] = (
        "Chen et al., A Simple Framework for Contrastive Learning of Visual "
        "Representations, ICML 2020. https://arxiv.org/abs/2002.05709")
    default_augment: ClassVar[str] = "simclr"
    global_bn: ClassVar[bool] = True
    recipes: ClassVar[dict[str, Recipe]] = {
        "cifar": Recipe(
            "CIFAR-size images (32 px): temperature 0.5, colour strength 0.5 and no blur.",
            _CIFAR_SOURCE + "; paper Sec. B.9",
            method={"lr": 1.0, "weight_decay": 1e-4, "temperature": 0.5},
            augment={"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1,
                     "blur_prob": 0.0},
            train={"image_size": 32, "batch_size": 512, "epochs": 1000}),
        "imagenet": Recipe(
            "ImageNet-size images (224 px): the paper's default setting at batch 4096 "
            "(the global batch: divide it by the number of processes).",
            "paper Sec. 2.3 and B.1 (LARS, lr 4.8 = 0.3 x 4096/256, wd 1e-6, 100 epochs); "
            "official run.py temperature 0.1",
            method={"lr": 0.3, "weight_decay": 1e-6, "temperature": 0.1},
            train={"image_size": 224, "batch_size": 4096, "epochs": 100}),
        "v2": Recipe(
            "SimCLR v2 on ImageNet-size images (224 px): 3-layer head and the square-root "
            "learning rate 0.1 x sqrt(4096) at batch 4096 (global).",
            "SimCLR v2 paper Sec. 3 and Appendix: LARS, lr 6.4 = 0.1 x sqrt(BatchSize), "
            "wd 1e-4, temperature 0.1, 800 epochs",
            method={"version": 2, "lr": 0.1, "lr_batch": 1, "lr_scaling": "sqrt",
                    "weight_decay": 1e-4, "temperature": 0.1},
            train={"image_size": 224, "batch_size": 4096, "epochs": 800}),
    }

    @dataclass
    class Config(OptimConfig):
        optimizer: Literal["sgd", "lars", "adam", "adamw"] = hp(
            "lars", "optimizer (paper: LARS)")
        lr: float = hp(0.3, "learning rate per lr_batch images (paper: 0.3 x BatchSize/256; "
                            "sqrt rule: 0.075 with lr_batch=1, lr_scaling=sqrt)", gt=0)
        weight_decay: float | None = hp(None, "weight decay; default 1e-6 for v1 (paper), "
                                              "1e-4 for v2 (v2 paper)", ge=0)
        wd_exclude_bias_norm: bool = hp(True, "no weight decay on biases and batch-norm "
                                              "parameters (official code)")
        warmup_epochs: float = hp(10.0, "linear warm-up epochs (paper: 10)", ge=0)
        temperature: float = hp(0.1, "NT-Xent temperature (official run.py: 0.1; CIFAR "
                                     "command: 0.5)", gt=0)
        proj_hidden_dim: int = hp(0, "hidden width of the projection MLP; 0 = the backbone's "
                                     "width (official code)", ge=0)
        proj_dim: int = hp(128, "projection output width (paper: 128)", ge=1)
        version: Literal[1, 2] = hp(1, "1: 2-layer head, wd 1e-6 (SimCLR); 2: 3-layer head, "
                                       "wd 1e-4 (SimCLR v2)", choices=(1, 2))

        def __post_init__(self) -> None:
            if self.version not in HEAD_LAYERS:
                raise ConfigError(f"version must be 1 or 2, got {self.version!r}; "
                                  "set it with --set version=2")
            if self.weight_decay is None:
                self.weight_decay = WEIGHT_DECAY[self.version]

    def __init__(self, backbone: sslzoo.Backbone, config: Any, augment: sslzoo.Augment,
                 data: DataInfo) -> None:
        super().__init__(backbone, config, augment, data)
        c, width = config, backbone.num_features
        hidden = [c.proj_hidden_dim or width] * (HEAD_LAYERS[c.version] - 1)
        self.projector = ProjectionHead([width, *hidden, c.proj_dim], last_norm="scale")

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        # two independent draws; both in one pass, so batch norm sees all 2N views as in
        # the official code
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
