"""Jigsaw: learn features by solving 3x3 jigsaw puzzles of image tiles.

Noroozi and Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles", ECCV 2016. https://arxiv.org/abs/1603.09246
Official code (Caffe): https://github.com/MehdiNoroozi/JigsawPuzzleSolver; PyTorch port:
https://github.com/bbrattoli/JigsawPuzzlePytorch

Each image (after the ``crop-flip`` augment's random crop, the paper's 225-pixel crop)
is cut into a 3x3 grid of cells; a tile of 64/75 of the cell side is taken at a random
place inside each cell, so tiles are separated by random gaps; each tile is normalised
to zero mean and unit variance; the tiles are shuffled by a permutation drawn uniformly
from a fixed set of N permutations with large Hamming distance, and the network
predicts the permutation's index. All B*9 tiles go through the shared backbone in one
call (the paper's siamese "context-free network"); the 9 tile features are concatenated
in the shuffled order and classified by fully connected layers. Puzzle accuracy is
logged as ``acc``. The building blocks live in :mod:`sslzoo.pretext`.

Choices where the paper leaves room or does not fit small images:

* Sizes scale with the image: ``cell = S // grid`` and ``tile = round(cell * 64/75)``
  (paper: 225/75/64; the official prototxt uses a 255 crop, 85-pixel cells, 64-pixel
  tiles).
* Permutation set: N = 100, the official code's ``permutations_100_max.bin`` (the paper
  studies 100 to 1000). The paper's greedy Algorithm 1 maximises the *average* Hamming
  distance, which leaves pairs 2 apart; by default the greedy search maximises the
  minimum distance first (min 6, same 8.08 average), ``permutation_criterion=mean`` is
  the paper's rule. The set is a persistent buffer, so checkpoints carry it.
* Head: the paper's per-tile fc6 (1024) and fc7 (4096) after AlexNet's conv5. Here
  the pooled backbone features play fc6's role (``tile_dim=0``; set 1024 for the
  paper's extra per-tile layer) and fc7 defaults to 1024 units, enough for small
  backbones and images (``hidden_dim=4096`` for the paper's width); dropout 0.5 as in
  the paper's fc6/fc7.
* Per-tile normalisation uses one mean and standard deviation per tile, as the PyTorch
  port does. The paper also fights chromatic aberration with colour jitter and
  grayscale; not done here.
* The encoder was trained on standardised tiles, so :meth:`Jigsaw.preprocess` (what
  evaluation uses) standardises each whole image the same way.
* Optimiser: the official solver's SGD, base lr 0.01, momentum 0.9, weight decay 5e-4,
  batch 256, step decay 10x every 100k of 350k iterations (``lr_milestones``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor, nn

import sslzoo
from sslzoo.config import hp
from sslzoo.errors import ConfigError
from sslzoo.method import DataInfo, Method, OptimConfig, Schedule
from sslzoo.pretext import JigsawPuzzle, accuracy, jigsaw_sizes, normalize_tiles, permutation_set


class Jigsaw(Method):
    """Jigsaw puzzles: classify which of N permutations shuffled a 3x3 grid of tiles."""

    name: ClassVar[str] = "jigsaw"
    paper: ClassVar[str] = (
        "Noroozi and Favaro, Unsupervised Learning of Visual Representations by Solving "
        "Jigsaw Puzzles, ECCV 2016. https://arxiv.org/abs/1603.09246")
    default_augment: ClassVar[str] = "crop-flip"

    @dataclass
    class Config(OptimConfig):
        optimizer: Literal["sgd", "lars", "adam", "adamw"] = hp(
            "sgd", "optimizer (official solver: SGD)")
        lr: float = hp(0.01, "learning rate per lr_batch images (official solver: 0.01)", gt=0)
        lr_batch: int = hp(256, "batch size lr refers to (official solver: 256)", ge=0)
        momentum: float = hp(0.9, "SGD momentum (official solver: 0.9)", ge=0, lt=1)
        weight_decay: float = hp(5e-4, "weight decay (official solver: 5e-4)", ge=0)
        wd_exclude_bias_norm: bool = hp(
            True, "no weight decay on biases and norm weights "
                   "(as SimCLR and BYOL do)")
        schedule: Schedule = hp("step", "learning-rate schedule (official solver: step)")
        lr_milestones: tuple[float, ...] = hp(
            (0.286, 0.571, 0.857), "fractions of the run where the lr drops 10x (official "
                                   "solver: every 100k of 350k iterations)", gt=0, lt=1)
        grid: int = hp(3, "cells per side of the puzzle (paper: 3x3)", ge=2, le=4)
        tile_ratio: float = hp(64 / 75, "tile side / cell side (paper: 64 px tiles in 75 px "
                               "cells); the rest is the random gap", gt=0, le=1)
        num_permutations: int = hp(100, "size N of the permutation set, the classes "
                                   "(official code: 100)", ge=2)
        permutation_criterion: Literal["min", "mean"] = hp(
            "min", "greedy choice of the set: maximise the minimum Hamming distance (then "
            "the average), or the average alone (paper's Algorithm 1)")
        permutation_seed: int = hp(0, "seed of the permutation set's first permutation", ge=0)
        normalize_tiles: bool = hp(True, "zero mean, unit std per tile against low-level "
                                   "shortcuts (paper)")
        tile_dim: int = hp(0, "per-tile fc layer after the pooled features (paper's fc6: "
                           "1024); 0 = none", ge=0)
        hidden_dim: int = hp(1024, "width of the fc layer on the 9 concatenated tile "
                             "features (paper's fc7: 4096); 0 = linear classifier", ge=0)
        dropout: float = hp(0.5, "dropout after the fc layers (paper: 0.5)", ge=0, lt=1)

        def __post_init__(self) -> None:
            tiles = self.grid * self.grid
            if tiles <= 9 and self.num_permutations > math.factorial(tiles):
                raise ConfigError(
                    f"num_permutations must be at most {math.factorial(tiles)} for a "
                    f"{self.grid}x{self.grid} grid, got {self.num_permutations}; "
                    f"set it with --set num_permutations={math.factorial(tiles)}")

    def __init__(self, backbone: sslzoo.Backbone, config: Any, augment: sslzoo.Augment,
                 data: DataInfo) -> None:
        super().__init__(backbone, config, augment, data)
        c = config
        jigsaw_sizes(data.image_size, c.grid, c.tile_ratio)  # fails early on tiny images
        perms = permutation_set(c.num_permutations, c.grid * c.grid, c.permutation_seed,
                                c.permutation_criterion)
        self.puzzle = JigsawPuzzle(perms, c.grid, c.tile_ratio, normalize=c.normalize_tiles)
        width = backbone.num_features
        self.tile_fc: nn.Module = nn.Identity()
        if c.tile_dim:
            self.tile_fc = _fc(width, c.tile_dim, c.dropout)
            width = c.tile_dim
        in_dim = width * c.grid * c.grid
        self.classifier: nn.Module = (
            nn.Sequential(_fc(in_dim, c.hidden_dim, c.dropout),
                          nn.Linear(c.hidden_dim, c.num_permutations))
            if c.hidden_dim else nn.Linear(in_dim, c.num_permutations))

    def preprocess(self, x: Tensor) -> Tensor:
        """Each image standardised as a whole, as tiles are in training (or ImageNet
        normalisation when ``normalize_tiles`` is off)."""
        return normalize_tiles(x) if self.config.normalize_tiles else super().preprocess(x)

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        puzzle = self.puzzle(self.augment(images))
        b, t = puzzle.tiles.shape[:2]
        tiles = puzzle.tiles.flatten(0, 1)                     # (B*T, C, t, t)
        if not self.config.normalize_tiles:
            tiles = super().preprocess(tiles)
        feats = self.tile_fc(self.backbone(tiles))             # (B*T, D)
        logits = self.classifier(feats.reshape(b, -1))         # (B, N)
        return {"loss": F.cross_entropy(logits.float(), puzzle.labels),
                "acc": accuracy(logits.detach(), puzzle.labels)}


def _fc(d_in: int, d_out: int, dropout: float) -> nn.Sequential:
    """Linear + ReLU + dropout, the paper's fc6/fc7 block."""
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(inplace=True), nn.Dropout(dropout))


@sslzoo.hookimpl
def register_methods(register: Any) -> None:
    register(Jigsaw)
