"""CPC: Contrastive Predictive Coding on a grid of image patches.

van den Oord, Li and Vinyals, "Representation Learning with Contrastive Predictive
Coding", 2018, Sec. 3.3. https://arxiv.org/abs/1807.03748
CPC v2 options: Hénaff et al., "Data-Efficient Image Recognition with Contrastive
Predictive Coding", ICML 2020. https://arxiv.org/abs/1905.09272

Every image is cut into "a 7x7 grid of 64x64 crops with 32 pixels overlap"
(:func:`sslzoo.patches.half_overlap_grid` scales this to any image size: 8 px patches
at 32 px, 16 at 64, 56 at 224); the backbone encodes each patch to a mean-pooled vector
``z_{i,j}`` (all ``B * 49`` patches in one call); a PixelCNN-style context network with
masked convolutions turns the grid into ``c_{i,j}``, which sees only rows ``<= i``; and
``W_k c_{i,j}`` predicts ``z_{i+k,j}`` for ``k = 1..5`` ("we use up to five rows from
the 7x7 grid"). The loss is InfoNCE (Eq. (4), :func:`sslzoo.losses.info_nce_candidates`)
with the log-bilinear score ``exp(z^T W_k c)``; the candidates are every patch of the
batch ("other patches in the image and other images in the mini-batch"), gathered from
all processes under DDP. Optimiser: "Adam optimizer with a learning rate of 2e-4",
used as is at every batch size (``lr_batch = 0``) and kept constant, as the paper names
no schedule. Augmentation: "the 256x256 images are randomly cropped from a 300x300
image, horizontally flipped with a probability of 50% and converted to greyscale"; here
the ``crop-flip`` pipeline (a padded random crop and a flip) stands in for the crop and
flip, ``grayscale`` converts (also at evaluation, so features match training); then
"for each of the 64x64 crops we randomly take a 60x60 subcrop and pad them back to a
64x64 image" (``patch_crop``). The paper trains "on 32 GPUs each with a batch size of
16"; the candidate set grows with the batch: one step scores ``20 * 7 * B`` queries
against ``49 * B`` candidates per direction, and the logits with the log-softmax that
autograd keeps take about 3.6 GB at B = 256, so small batches per device suit it.

The paper leaves open, and this plugin chooses:
- the context network: ``context_layers`` pre-activation residual blocks of a 3x3
  convolution padded on the top only (a masked convolution: row ``i`` sees rows
  ``i-2..i``), with ``W_k`` a bias-free 1x1 convolution; the v1 paper says
  "PixelCNN-style", CPC v2 uses a deeper masked ResNet;
- the loss is the mean over prediction steps (and directions) of the mean over queries;
- ``W_k`` starts at N(0, 1 / (context_dim * F)) so that the first scores are near 0 and
  the loss near the log of the number of candidates; PyTorch's default init gives
  scores of order sqrt(F) (first loss 25 instead of 7.4 on digits), which the first
  tens of steps only shrink;
- with ``directions > 1`` (CPC v2: "we repeatedly predict the same patch using context
  from below, the right and the left") each direction has its own context network and
  predictors, applied to the rotated grid (:func:`sslzoo.patches.rotate_grid`);
- ``patch_norm=layer`` (CPC v2) turns the backbone's batch norms into GroupNorm(1, C),
  i.e. layer norm over each feature map, so patches of one image cannot exchange
  information through batch statistics; the weights keep their names otherwise;
- evaluation (``embed``): the paper's linear classifier reads the grid of patch
  encodings; ``embed=grid`` gives their mean. The default, ``embed=image``, runs the
  backbone on the whole image instead: about 3x cheaper (49 patches of 1/16 of the area
  each), and better kNN features on digits at 32 px (0.78 vs. 0.52 top-1 at random
  initialisation with the 7x7 grid; 0.79 vs. 0.71 after 100 steps with a 3x3 grid):
  a mean over patches keeps no trace of where each patch was;
- small images: the 7x7 grid is kept at every size, but patches below 8 px leave a
  ResNet little to encode. On 16 px digits, ``--set grid=3 --set prediction_steps=2``
  (8 px patches) lifted kNN from 0.852 (random init) to 0.905 in 300 steps of 16
  images, where the 7x7 grid of 4 px patches reached 0.875; at 32 px the default grid
  (8 px patches) went from 0.780 to 0.816 in 200 steps.

CPC v2 options (Hénaff et al. 2019; its code is not public, so this follows the paper,
whose appendix gives the loss as pseudo-code, ``CPC(latents, target_dim=64,
emb_scale=0.1, steps_to_ignore=2, steps_to_predict=3)``):
- ``target_dim``: the targets are a 1x1 convolution of the patch encodings to
  ``target_dim`` channels (64) instead of the encodings themselves, and the predictors
  map the context to that width;
- ``pred_scale``: predictions are multiplied by it before the scores (``emb_scale``,
  0.1);
- ``steps_to_ignore``: offsets ``1..steps_to_ignore`` are not predicted, so the steps
  are ``steps_to_ignore + 1 .. prediction_steps`` (the pseudo-code's
  ``range(steps_to_ignore, steps_to_predict)`` predicts row ``i + 1`` ahead; with its
  defaults, only 3 rows ahead);
- ``color_drop``: "color dropping", which "randomly drops two of the three color
  channels in each patch" (needs ``grayscale=false``);
- ``patch_flip``: each patch is flipped horizontally with probability 0.5.
All are off by default (CPC v1); the ``v2`` recipe turns them on with the layer norm and
four directions.

The InfoNCE score is invariant to a component shared by all patch encodings (it adds
the same amount to every candidate), so the pooled features keep a large common
direction that cosine kNN is sensitive to; centring the features first shows much of
what was learnt (32 px, 100 steps: kNN 0.930 centred vs. 0.802 uncentred).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sslzoo
from sslzoo import distributed
from sslzoo.config import hp
from sslzoo.errors import ConfigError
from sslzoo.losses import info_nce_candidates
from sslzoo.method import DataInfo, Method, OptimConfig, Schedule
from sslzoo.patches import (DIRECTIONS, drop_colour_channels, extract_patches, half_overlap_grid,
                            random_flip_patches, random_subcrop_pad, rotate_grid)
from sslzoo.recipes import Recipe


class RowCausalConv2d(nn.Conv2d):
    """A convolution whose output row ``i`` sees input rows ``i - kh + 1 .. i`` only.

    The same as a PixelCNN-style masked convolution whose rows below the centre are
    zeroed, written as padding on the top (no wasted multiplications).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=0)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C', H, W)
        kh, kw = self.kernel_size
        return super().forward(F.pad(x, (kw // 2, (kw - 1) // 2, kh - 1, 0)))


class ContextNetwork(nn.Module):
    """CPC's autoregressive context network ``g_ar`` over a grid of patch encodings.

    A 1x1 input projection, then ``layers`` residual blocks
    ``x + conv1x1(relu(masked3x3(relu(x))))``; ``c_{i,j}`` depends on ``z`` at rows
    ``<= i`` only.
    """

    def __init__(self, in_dim: int, dim: int, layers: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, dim, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), RowCausalConv2d(dim, dim, 3), nn.ReLU(),
                          nn.Conv2d(dim, dim, 1))
            for _ in range(layers))

    def forward(self, z: Tensor) -> Tensor:  # (B, in_dim, G, G) -> (B, dim, G, G)
        c = self.proj(z)
        for block in self.blocks:
            c = c + block(c)
        return c


def batch_norm_to_group_norm(module: nn.Module) -> nn.Module:
    """Replace, in place, every BatchNorm2d of ``module`` by GroupNorm(1, C).

    GroupNorm with one group normalises each sample over all its channels and
    positions (layer norm for feature maps), as CPC v2 does. Affine parameters are
    copied; timm's fused ``BatchNormAct2d`` keeps its activation.

    Returns:
        ``module``, or its replacement when ``module`` itself is a batch norm.
    """
    if isinstance(module, nn.BatchNorm2d):
        norm = nn.GroupNorm(1, module.num_features, eps=module.eps, affine=module.affine)
        if module.affine:
            with torch.no_grad():
                norm.weight.copy_(module.weight)
                norm.bias.copy_(module.bias)
        act = getattr(module, "act", None)
        if isinstance(act, nn.Module):  # timm BatchNormAct2d: norm, dropout, activation
            return nn.Sequential(norm, getattr(module, "drop", nn.Identity()), act)
        return norm
    for name, child in module.named_children():
        new = batch_norm_to_group_norm(child)
        if new is not child:
            setattr(module, name, new)
    return module


class CPC(Method):
    """Contrastive Predictive Coding: predict patch encodings of rows below from rows above."""

    name: ClassVar[str] = "cpc"
    paper: ClassVar[str] = (
        "van den Oord et al., Representation Learning with Contrastive Predictive Coding, "
        "2018. https://arxiv.org/abs/1807.03748 (v2 options: Hénaff et al., ICML 2020)")
    default_augment: ClassVar[str] = "crop-flip"
    recipes: ClassVar[dict[str, Recipe]] = {
        "imagenet": Recipe(
            "ImageNet-size images (256 px): CPC v1, a 7x7 grid of 64 px patches and a batch "
            "of 16 per process, as on the paper's 32 GPUs.",
            "van den Oord et al. 2018, Sec. 3.3 ('32 GPUs each with a batch size of 16')",
            train={"image_size": 256, "batch_size": 16}),
        "cifar": Recipe(
            "CIFAR-size images (32 px): the 7x7 grid gives 8 px patches; the paper has no "
            "CIFAR setting, so only the image size and a small batch change.",
            "van den Oord et al. 2018, Sec. 3.3, scaled to 32 px (no CIFAR run in the paper)",
            train={"image_size": 32, "batch_size": 64}),
        "v2": Recipe(
            "CPC v2 on ImageNet-size images (256 px): layer norm, four directions, targets "
            "projected to 64 channels, predictions scaled by 0.1, colour dropping and "
            "per-patch flips instead of greyscale.",
            "Hénaff et al. 2019, Sec. 4.1 and the appendix pseudo-code (target_dim=64, "
            "emb_scale=0.1, steps_to_ignore=2, steps_to_predict=3)",
            method={"patch_norm": "layer", "directions": 4, "target_dim": 64,
                    "pred_scale": 0.1, "steps_to_ignore": 2, "prediction_steps": 3,
                    "color_drop": True, "patch_flip": True, "grayscale": False},
            train={"image_size": 256}),
    }

    @dataclass
    class Config(OptimConfig):
        optimizer: Literal["sgd", "lars", "adam", "adamw"] = hp(
            "adam", "optimizer (paper: 'We used Adam optimizer')")
        lr: float = hp(2e-4, "learning rate (paper: 'a learning rate of 2e-4')", gt=0)
        lr_batch: int = hp(0, "0: lr is used as is at any batch size (paper: Adam at 2e-4)", ge=0)
        weight_decay: float = hp(0.0, "weight decay (paper: none mentioned)", ge=0)
        wd_exclude_bias_norm: bool = hp(
            False, "no weight decay on biases and norm weights "
                   "(paper: no weight decay)")
        schedule: Schedule = hp(
            "constant", "learning-rate schedule (paper: none mentioned, so constant)")
        grid: int = hp(7, "patches per side, overlapping by half, patch = 2 x image/(grid+1) "
                          "(paper: 7x7 grid of 64x64 crops at 32 px stride in 256 px images; "
                          "use 3 for 16 px images)", ge=2)
        prediction_steps: int = hp(5, "rows predicted ahead, k = 1..K; must be < grid "
                                      "(paper: 'up to five rows from the 7x7 grid')", ge=1)
        steps_to_ignore: int = hp(0, "offsets 1..this are not predicted: k runs from "
                                     "steps_to_ignore + 1 (CPC v2 pseudo-code: 2)", ge=0)
        target_dim: int = hp(0, "targets through a 1x1 convolution to this width; 0 = the "
                                "patch encodings themselves (v1; CPC v2 pseudo-code: 64)", ge=0)
        pred_scale: float = hp(1.0, "predictions are multiplied by this (CPC v2 "
                                    "pseudo-code: emb_scale=0.1)", gt=0)
        color_drop: bool = hp(False, "keep one random colour channel per patch (CPC v2: "
                                     "'drops two of the three color channels in each "
                                     "patch'); needs grayscale=false")
        patch_flip: bool = hp(False, "flip each patch horizontally with probability 0.5 "
                                     "(CPC v2)")
        context_dim: int = hp(256, "channels of the context network (paper: not given)", ge=1)
        context_layers: int = hp(5, "residual blocks of masked 3x3 convolutions in the context "
                                    "network (paper: 'PixelCNN-style'; not given)", ge=1)
        directions: int = hp(1, "1: top-down (v1); 2: + bottom-up; 4: + left-right, right-left "
                                "(CPC v2: context 'from below, the right and the left')",
                             choices=(1, 2, 4))
        patch_norm: Literal["batch", "layer"] = hp(
            "batch", "norm layers of the patch encoder: batch (v1) or layer (CPC v2: "
                     "GroupNorm(1, C) replaces every BatchNorm2d)")
        patch_crop: float = hp(60 / 64, "side fraction of the random sub-crop of each patch, "
                                        "padded back (paper: 60x60 of 64x64); 1 = off", gt=0, le=1)
        grayscale: bool = hp(True, "train and evaluate on greyscale images (paper: "
                                   "'converted to greyscale')")
        embed: Literal["grid", "image"] = hp(
            "image", "evaluation features: the backbone on the whole image, or the mean of "
                     "the patch grid's encodings (the paper pools the grid)")

        def __post_init__(self) -> None:
            if self.steps_to_ignore >= self.prediction_steps:
                raise ConfigError(
                    f"steps_to_ignore must be < prediction_steps ({self.prediction_steps}) "
                    f"so that one step is left, got {self.steps_to_ignore}; set it with "
                    f"--set steps_to_ignore={self.prediction_steps - 1}")
            if self.color_drop and self.grayscale:
                raise ConfigError("color_drop needs colour patches; set --set grayscale=false "
                                  "with --set color_drop=true")
            if self.prediction_steps >= self.grid:
                raise ConfigError(
                    f"prediction_steps must be < grid ({self.grid}) so that a row has a row "
                    f"{self.prediction_steps} below it, got {self.prediction_steps}; set it "
                    f"with --set prediction_steps={self.grid - 1}")

    def __init__(self, backbone: sslzoo.Backbone, config: Any, augment: sslzoo.Augment,
                 data: DataInfo) -> None:
        if config.patch_norm == "layer":
            backbone = batch_norm_to_group_norm(backbone)  # type: ignore[assignment]
        super().__init__(backbone, config, augment, data)
        half_overlap_grid(data.image_size, config.grid)  # fails early if the image is too small
        self.directions = DIRECTIONS[:config.directions]
        f = backbone.num_features
        k = config.prediction_steps - config.steps_to_ignore    # steps predicted
        # CPC v2: targets through a 1x1 convolution (with bias, as the pseudo-code's Conv2D)
        self.target_proj = (nn.Conv2d(f, config.target_dim, 1) if config.target_dim else None)
        d = config.target_dim or f
        self.context = nn.ModuleList(ContextNetwork(f, config.context_dim, config.context_layers)
                                     for _ in self.directions)
        # W_k of every predicted step as one bias-free 1x1 convolution per direction:
        # (B, k*D, G, G)
        self.predictors = nn.ModuleList(nn.Conv2d(config.context_dim, k * d, 1, bias=False)
                                        for _ in self.directions)
        for predictor in self.predictors:
            # scores z^T W_k c start near 0 (loss near log of the candidate count) instead
            # of the default init's O(sqrt(F)) scores, which take many steps to unlearn
            nn.init.normal_(predictor.weight, std=1.0 / math.sqrt(config.context_dim * d))

    def preprocess(self, x: Tensor) -> Tensor:
        """Greyscale (when configured, replicated to 3 channels), then normalisation."""
        if self.config.grayscale and x.shape[1] == 3:
            x = kornia.color.rgb_to_grayscale(x).expand(-1, 3, -1, -1)
        return super().preprocess(x)

    def encode_patches(self, x: Tensor, *, jitter: bool = False) -> Tensor:
        """Patch encodings ``z``: preprocessed images ``(B, C, S, S)`` -> ``(B, F, G, G)``."""
        layout = half_overlap_grid(x.shape[-1], self.config.grid)
        patches = extract_patches(x, layout, flatten=True)      # (B*G*G, C, p, p)
        c = self.config
        if jitter and c.patch_crop < 1:
            size = max(1, int(layout.patch * c.patch_crop))
            patches = random_subcrop_pad(patches, size)
        if jitter and c.color_drop:
            patches = drop_colour_channels(patches)
        if jitter and c.patch_flip:
            patches = random_flip_patches(patches)
        z = self.backbone(patches)                               # (B*G*G, F)
        g = layout.grid
        return z.reshape(x.shape[0], g, g, -1).permute(0, 3, 1, 2)

    def cpc_loss(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """InfoNCE of every prediction ``W_k c_{i,j}`` against all patches of the batch.

        Args:
            z: patch encodings ``(B, F, G, G)``.

        Returns:
            The loss (mean over directions and steps of the mean over queries) and the
            fraction of predictions whose own target scores highest.
        """
        b, _, g, _ = z.shape
        c = self.config
        targets_z = self.target_proj(z) if self.target_proj is not None else z  # (B, D, G, G)
        f = targets_z.shape[1]
        candidates = targets_z.permute(0, 2, 3, 1).reshape(-1, f)  # (B*G*G, D): image, row, col
        index = torch.arange(b * g * g, device=z.device).view(b, g, g)
        if distributed.world_size() > 1:
            candidates = distributed.gather_with_grad(candidates)
            index = index + distributed.rank() * b * g * g
        losses, accs = [], []
        for direction, context, predictor in zip(self.directions, self.context, self.predictors):
            ctx = context(rotate_grid(z, direction))             # (B, context_dim, G, G)
            preds = predictor(ctx).view(b, -1, f, g, g) * c.pred_scale  # (B, K', D, G, G)
            targets = rotate_grid(index, direction)               # (B, G, G) candidate rows
            for step, k in enumerate(range(c.steps_to_ignore + 1, c.prediction_steps + 1)):
                query = preds[:, step, :, :g - k].permute(0, 2, 3, 1).reshape(-1, f)
                loss, acc = info_nce_candidates(query, candidates, targets[:, k:].reshape(-1))
                losses.append(loss)
                accs.append(acc)
        return torch.stack(losses).mean(), torch.stack(accs).mean()

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        x = self.preprocess(self.augment(images))                # (B, C, S, S)
        loss, acc = self.cpc_loss(self.encode_patches(x, jitter=True))
        return {"loss": loss, "acc": acc}

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """``(B, F)``: the mean patch encoding of the grid, or whole-image features."""
        x = self.preprocess(x)
        if self.config.embed == "image":
            return self.backbone(x)
        return self.encode_patches(x).mean(dim=(-2, -1))


@sslzoo.hookimpl
def register_methods(register: Any) -> None:
    register(CPC)
