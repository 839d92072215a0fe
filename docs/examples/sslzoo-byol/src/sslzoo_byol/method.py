"""BYOL: an online network predicts a slowly moving target network's projection.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020. https://arxiv.org/abs/2006.07733 (Sec. 3.1 and 3.3, Appendix B), and the
official code, google-deepmind/deepmind-research ``byol/`` (where the paper leaves a
detail open).

Two views of every image go through an online network (encoder, projector, predictor)
and a target network (encoder, projector). The online prediction of each view regresses
the target projection of the other view: "we define the following mean squared error
between the normalized predictions and target projections", which equals
``2 - 2 cos(q, z')`` (Eq. 2); the loss is symmetrised by swapping the views (Eq. 3,
:func:`byol_loss`). Only the online network gets gradients; the target follows it by an
exponential moving average ``xi <- tau xi + (1 - tau) theta`` (Eq. 1) whose decay
"starts from tau_base = 0.996 and is increased to one during training" as
``tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2`` with "k the current training step
and K the maximum number of training steps" (Sec. 3.3, :func:`target_decay`).

Defaults (Sec. 3.3): projector and predictor are "a linear layer with
output size 4096 followed by batch normalization, rectified linear units (ReLU), and a
final linear layer with output dimension 256"; LARS with a cosine decay and a 10-epoch
warm-up, "base learning rate to 0.2, scaled linearly with the batch size (LearningRate
= 0.2 x BatchSize/256)", "a global weight decay parameter of 1.5 * 10^-6 while excluding
the biases and batch normalization parameters from both LARS adaptation and weight
decay" (``Method.parameter_groups`` with ``wd_exclude_bias_norm``: timm's LARS adapts only
groups with weight decay). LARS momentum 0.9 and trust coefficient 1e-3 are the official config's
(``momentum=.9``, ``eta=1e-3``). The augment is :class:`sslzoo_byol.augment.BYOLAugment`.

Following the official code (``byol_experiment.py``): each view is a separate forward
pass, so batch norm normalises each view on its own; the target network runs in training
mode and keeps its own batch-norm statistics; the target is updated after the online
optimiser step with the decay of that step (``global_step`` counts from 0). The official
code initialises the target with its own random draw and notes that it "did not notice a
significant different with using the same rng"; here the target starts as a copy of the
online network. ``--sync-bn`` gives the official cross-replica batch norm under torchrun.

The schedule needs K: the engine passes the run's planned optimiser steps as
``DataInfo.total_steps``. The step counter is a persistent buffer, so a resumed run
continues the schedule exactly; with K unknown (0, a method built outside a run) the
decay stays at ``tau_base``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from itertools import chain
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sslzoo
from sslzoo import DataInfo, OptimConfig, ProjectionHead, hp, momentum_update


def byol_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between L2-normalised predictions and targets (Eq. 2).

    ``|| q / ||q|| - z / ||z|| ||^2 = 2 - 2 <q, z> / (||q|| ||z||)`` per sample, averaged
    over the batch. Computed in float32; ``target`` gets no gradient. For BYOL's
    symmetric loss (Eq. 3) call it twice with the views swapped and add the results.

    Args:
        prediction: online predictions ``(N, D)``.
        target: target projections ``(N, D)`` of the other view.
    """
    if prediction.shape != target.shape or prediction.ndim != 2:
        raise ValueError(f"prediction and target must both be (N, D), got "
                         f"{tuple(prediction.shape)} and {tuple(target.shape)}")
    q = F.normalize(prediction.float(), dim=1)                  # (N, D)
    z = F.normalize(target.detach().float(), dim=1)             # (N, D)
    return (q - z).pow(2).sum(dim=1).mean()


def target_decay(step: Tensor | int, total_steps: int, base: float) -> Tensor:
    """BYOL's target decay ``1 - (1 - base) (cos(pi k / K) + 1) / 2`` at step ``k``.

    ``base`` at ``k = 0``, rising to 1 at ``k = K``; steps past ``K`` stay at 1. With
    ``K = 0`` (the run's length is unknown) the decay is ``base`` at every step.

    Args:
        step: the number of target updates done so far, ``k``.
        total_steps: the run's planned optimiser steps, ``K``.
        base: ``tau_base`` in ``[0, 1]``.

    Returns:
        A float64 scalar tensor on ``step``'s device.
    """
    k = torch.as_tensor(step, dtype=torch.float64)
    if total_steps <= 0:
        return torch.full_like(k, base)
    k = k.clamp(0, total_steps)
    return 1 - (1 - base) * (torch.cos(math.pi * k / total_steps) + 1) / 2


class BYOL(sslzoo.Method):
    """BYOL: predict an EMA target network's projection of the other view, no negatives."""

    name: ClassVar[str] = "byol"
    paper: ClassVar[str] = (
        "Grill et al., Bootstrap Your Own Latent: A New Approach to Self-Supervised "
        "Learning, NeurIPS 2020. https://arxiv.org/abs/2006.07733")
    default_augment: ClassVar[str] = "byol"

    @dataclass
    class Config(OptimConfig):
        optimizer: Literal["sgd", "lars", "adam", "adamw"] = hp(
            "lars", "optimizer (paper: LARS)")
        lr: float = hp(0.2, "learning rate per 256 images (paper: 0.2 x BatchSize/256)", gt=0)
        momentum: float = hp(0.9, "LARS momentum (official config: 0.9)", ge=0, lt=1)
        weight_decay: float = hp(1.5e-6, "weight decay, not on biases and batch-norm "
                                         "parameters (paper: 1.5e-6)", ge=0)
        wd_exclude_bias_norm: bool = hp(
            True, "no weight decay or LARS adaptation on biases and batch-norm parameters "
                  "(paper: excluded)")
        warmup_epochs: float = hp(10.0, "linear warm-up epochs (paper: 10)", ge=0)
        proj_hidden_dim: int = hp(4096, "projector hidden width (paper: 4096)", ge=1)
        proj_dim: int = hp(256, "projection and prediction width (paper: 256)", ge=1)
        pred_hidden_dim: int = hp(4096, "predictor hidden width (paper: 4096)", ge=1)
        tau_base: float = hp(0.996, "target decay at the first step, cosine-increased to 1 "
                                    "(paper: 0.996; official presets for 40 / 100-300 "
                                    "epochs: 0.97 / 0.99)", ge=0, le=1)

    def __init__(self, backbone: sslzoo.Backbone, config: Any, augment: sslzoo.Augment,
                 data: DataInfo) -> None:
        super().__init__(backbone, config, augment, data)
        c = config
        self.projector = ProjectionHead([backbone.num_features, c.proj_hidden_dim, c.proj_dim])
        self.predictor = ProjectionHead([c.proj_dim, c.pred_hidden_dim, c.proj_dim])
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self.target_parameters():
            p.requires_grad_(False)
        # target updates done so far (k); a buffer, so checkpoints resume the schedule
        self.register_buffer("target_step", torch.zeros((), dtype=torch.long))

    def target_parameters(self) -> chain[nn.Parameter]:
        """Parameters of the target network (moved by EMA, never optimised)."""
        return chain(self.target_backbone.parameters(), self.target_projector.parameters())

    def tau(self) -> Tensor:
        """The decay the next target update uses."""
        return target_decay(self.target_step, self.data.total_steps, self.config.tau_base)

    def views(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Two augmented views; an augment that returns one view per call (``--augment
        simclr``) is called twice."""
        out = self.augment(images)
        if isinstance(out, Tensor):
            return out, self.augment(images)
        first, second = out
        return first, second

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        v1, v2 = (self.preprocess(v) for v in self.views(images))      # (B, C, S, S) each
        # one pass per view, as in the official code: batch norm sees one view at a time
        q1 = self.predictor(self.projector(self.backbone(v1)))          # (B, proj_dim)
        q2 = self.predictor(self.projector(self.backbone(v2)))
        with torch.no_grad():
            z1 = self.target_projector(self.target_backbone(v1))        # (B, proj_dim)
            z2 = self.target_projector(self.target_backbone(v2))
        loss = byol_loss(q1, z2) + byol_loss(q2, z1)
        return {"loss": loss, "tau": self.tau().to(loss.dtype)}

    @torch.no_grad()
    def on_step_end(self) -> None:
        """``xi <- tau xi + (1 - tau) theta`` after the optimiser step, then ``k += 1``."""
        tau = self.tau()   # a device scalar: no host read in the step
        momentum_update(self.backbone, self.target_backbone, tau)
        momentum_update(self.projector, self.target_projector, tau)
        self.target_step.add_(1)
