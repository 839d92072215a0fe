"""Jigsaw: learn features by solving 3x3 jigsaw puzzles of image tiles.

Noroozi and Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles", ECCV 2016. https://arxiv.org/abs/1603.09246
Official code (Caffe): https://github.com/MehdiNoroozi/JigsawPuzzleSolver; PyTorch port:
https://github.com/bbrattoli/JigsawPuzzlePytorch

The puzzle is cut from a square window at a random place inside each image (the
paper's 225-pixel crop of a 256-pixel image, ``window = 225/256``); the window is cut
into a 3x3 grid of cells; a tile of 64/75 of the cell side is taken at a random place
inside each cell, so tiles are separated by random gaps; each colour channel of each tile
is normalised to zero mean and unit variance; the tiles are shuffled by a permutation
drawn uniformly from a fixed set of N permutations with large Hamming distance, and the
network predicts the permutation's index. All B*9 tiles go through the shared backbone in
one call (the paper's siamese "context-free network"); the 9 tile features are
concatenated in the shuffled order and classified by fully connected layers. Puzzle
accuracy is logged as ``acc``. The building blocks live in :mod:`sslzoo.pretext`.

Choices where the paper leaves room or does not fit small images:

* Crop: the window lies inside the image and nothing is padded: a zero-padded crop puts
  black strips in border cells only, and the network reads a tile's position from them.
  The default augment is ``none`` (no flip: neither the paper nor the official code
  flips). The official data set is a 255 crop of 256-pixel images cut into 85-pixel
  cells (``--set window=0.996``); the paper's 225 is the default.
* Sizes scale with the window: ``cell = W // grid`` and ``tile = round(cell * 64/75)``
  (paper: 225/75/64; the official prototxt uses 85-pixel cells and 64-pixel tiles).
  At 32 px the window is 28 px, cells 9 px, tiles 8 px.
* Permutation set: N = 100, the official code's ``permutations_100_max.bin`` (the paper
  studies 100 to 1000). The paper's greedy Algorithm 1 maximises the *average* Hamming
  distance, which leaves pairs 2 apart; by default the greedy search maximises the
  minimum distance first (min 6, same 8.08 average), ``permutation_criterion=mean`` is
  the paper's rule. ``permutations_file`` reads a set from a ``.npy`` file instead (the
  PyTorch port's ``permutations_*.npy``, 0- or 1-based). The set is a persistent
  buffer, so checkpoints carry it and a trained run no longer needs the file.
* Head: the paper's per-tile fc6 (1024) and fc7 (4096) after AlexNet's conv5. Here
  the pooled backbone features play fc6's role (``tile_dim=0``; set 1024 for the
  paper's extra per-tile layer) and fc7 defaults to 1024 units, enough for small
  backbones and images (``hidden_dim=4096`` for the paper's width); dropout 0.5 as in
  the paper's fc6/fc7.
* Normalisation: each channel of each tile on its own, as the PyTorch port's
  ``JigsawImageLoader`` does (one mean and standard deviation over all channels, which
  lets a colour cast survive as a cue, is ``--set per_channel_norm=false``).
* Chromatic aberration: the PyTorch port turns 30 % of the images grey before tiling
  (``colour_drop_prob=0.3``); ``colour_drop=projection`` removes the green-magenta axis
  instead. The paper also jitters the colour channels of each tile spatially by up to
  2 pixels of 64 (``channel_jitter``, off by default as in the official code, whose
  per-channel intensity offsets the per-channel normalisation would remove anyway).
* The encoder was trained on standardised tiles, so :meth:`Jigsaw.preprocess` (what
  evaluation uses) standardises each whole image the same way.
* Optimiser: the official solver's SGD, base lr 0.01, momentum 0.9, weight decay 5e-4,
  batch 256, step decay 10x every 100k of 350k iterations (``lr_milestones``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sslzoo
from sslzoo.config import hp
from sslzoo.errors import ConfigError
from sslzoo.method import DataInfo, Method, OptimConfig, Schedule
from sslzoo.recipes import Recipe
from sslzoo.pretext import (ColourDrop, JigsawPuzzle, accuracy, jigsaw_sizes, load_permutations,
                            normalize_tiles, permutation_set)


class Jigsaw(Method):
    """Jigsaw puzzles: classify which of N permutations shuffled a 3x3 grid of tiles."""

    name: ClassVar[str] = "jigsaw"
    paper: ClassVar[str] = (
        "Noroozi and Favaro, Unsupervised Learning of Visual Representations by Solving "
        "Jigsaw Puzzles, ECCV 2016. https://arxiv.org/abs/1603.09246")
    default_augment: ClassVar[str] = "none"
    recipes: ClassVar[dict[str, Recipe]] = {
        "imagenet": Recipe(
            "Jigsaw on ImageNet-size images: 225 px windows of 256 px images, 75 px cells "
            "with 64 px tiles, the paper's fc6 (1024) and fc7 (4096), batch 256 for about "
            "350k iterations.",
            "paper Sec. 3 (225 crop, 64 px tiles, fc6 1024, fc7 4096); official "
            "solver_cfn_jps.prototxt (batch 256, lr 0.01, 350k iterations ~ 70 epochs)",
            method={"tile_dim": 1024, "hidden_dim": 4096},
            train={"image_size": 256, "batch_size": 256, "epochs": 70}),
        "cifar": Recipe(
            "The paper's puzzle scaled to 32 px images (the paper reports no CIFAR run): a "
            "28 px window, 9 px cells, 8 px tiles; sizes follow the image size.",
            "paper Sec. 3 proportions (225/256 window, 64/75 tiles); official solver "
            "(batch 256, lr 0.01, ~70 epochs)",
            train={"image_size": 32, "batch_size": 256, "epochs": 70}),
    }

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
        per_channel_norm: bool = hp(True, "normalise each colour channel of a tile on its "
                                    "own (PyTorch port); false: one mean/std per tile")
        window: float = hp(225 / 256, "side of the random window the puzzle is cut from, as "
                           "a share of the image side (paper: 225 of 256; official data: "
                           "255 of 256); 28 px at 32", gt=0, le=1)
        colour_drop: ColourDrop = hp("grayscale", "how colour is removed from a share of "
                                     "the puzzles: grayscale or projection (green-magenta "
                                     "axis removed)")
        colour_drop_prob: float = hp(0.3, "share of puzzles with colour removed (PyTorch "
                                     "port: 30 % grey)", ge=0, le=1)
        channel_jitter: int = hp(0, "spatial jitter of each colour channel of a tile, in "
                                 "pixels (paper: up to 2 on 64 px tiles; official code: "
                                 "none)", ge=0)
        permutations_file: str = hp("", "read the permutation set from this .npy file "
                                    "(N rows of 9 tile indices, 0- or 1-based; N must "
                                    "equal num_permutations); empty: compute it")
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
        perms = self._file_permutations(missing_ok=True)
        if perms is None:
            perms = permutation_set(c.num_permutations, c.grid * c.grid, c.permutation_seed,
                                    c.permutation_criterion)
        self.puzzle = JigsawPuzzle(
            perms, c.grid, c.tile_ratio, normalize=c.normalize_tiles,
            per_channel=c.per_channel_norm, window=c.window, colour_drop=c.colour_drop,
            colour_drop_prob=c.colour_drop_prob, channel_jitter=c.channel_jitter)
        jigsaw_sizes(self.puzzle.window_size(data.image_size), c.grid, c.tile_ratio)  # tiny
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

    def _file_permutations(self, missing_ok: bool) -> Tensor | None:
        """The set of ``permutations_file``, or ``None`` when none is given (or, with
        ``missing_ok``, when the file is gone: a rebuilt run gets it from its checkpoint)."""
        c = self.config
        if not c.permutations_file or (missing_ok and not Path(c.permutations_file).exists()):
            return None
        perms = load_permutations(c.permutations_file, c.grid * c.grid)
        if len(perms) != c.num_permutations:
            raise ConfigError(f"permutations file {c.permutations_file} holds {len(perms)} "
                              f"permutations but num_permutations is {c.num_permutations}; "
                              f"set --set num_permutations={len(perms)}")
        return perms

    @torch.no_grad()
    def prepare(self, images: Tensor) -> None:
        """Before training, a given ``permutations_file`` must exist (it is read again)."""
        perms = self._file_permutations(missing_ok=False)
        if perms is not None:
            self.puzzle.permutations.copy_(perms)

    def preprocess(self, x: Tensor) -> Tensor:
        """Each image standardised as a whole, as tiles are in training (or ImageNet
        normalisation when ``normalize_tiles`` is off)."""
        if not self.config.normalize_tiles:
            return super().preprocess(x)
        return normalize_tiles(x, per_channel=self.config.per_channel_norm)

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
