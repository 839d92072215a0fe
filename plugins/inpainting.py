"""Context Encoders: feature learning by inpainting.

Pathak, Krähenbühl, Donahue, Darrell and Efros, "Context Encoders: Feature Learning by
Inpainting", CVPR 2016. https://arxiv.org/abs/1604.07379 (official code:
pathak22/context-encoder, Torch).

A region of each image is removed and filled with the data set's mean colour ("the
missing region in the masked input image is filled with constant mean value", Sec. 4);
the backbone encodes what is left, a channel-wise fully connected layer and a stride-1
convolution spread information across the whole map (Sec. 3.1), and up-convolutions
reconstruct the removed region. The loss is the paper's masked L2 (Eq. 1), optionally
plus an adversarial loss from a discriminator (Eq. 2-3, ``--set adversarial=true``, with
the paper's ``lambda_rec = 0.999``, ``lambda_adv = 0.001``).

Where the paper is silent, this follows the official code:

* The central mask drops the ``S/2 x S/2`` square (a quarter of the area) and the decoder
  predicts exactly that square (64 x 64 for 128 x 128 inputs); block and region masks
  are reconstructed over the full image, scored on the removed pixels only.
* Overlapping prediction, central mask only: only the square shrunk by ``overlap`` is
  hidden; the visible band along its edge is predicted too and weighted 10x
  (``train.lua``: ``overlapPred = 4`` at 128 px, ``overlapL2Weight = 10``); here the band
  is 4/128 of the image size (1 px at 32 px). Block and region masks hide their whole
  area and weigh only the hidden pixels, as the official random-mask training
  (``train_random.lua``: ``useOverlapPred = 0``): eroding a thin blob and weighting a
  visible band 10x would hide a fraction of the advertised coverage (at 128 px a 25 %
  region hides 9 %) and put most of the loss on pixels the encoder sees.
* The discriminator judges the predicted square for the central mask (official
  ``train.lua``); for block and region masks, whose prediction is the whole image, it
  judges a composite: the prediction inside the mask and the real image outside, so it
  cannot tell real from fake by the context the generator merely copies (the official
  ``train_random.lua`` shows it the whole generated image).
* Targets are scaled to ``[-1, 1]`` with a tanh output, and the L2 is averaged over
  the predicted region's pixels (Torch's ``MSECriterion`` on the 64 x 64 patch).
* Adam with beta1 = 0.5 and a constant ``lr = 0.0002``; with the joint loss the
  official encoder-decoder (generator) rate is 10x that ("LR of Gen is 10 times Adv"),
  which ``gen_lr_scale = 10`` puts as ``lr_scale`` into the encoder-decoder's parameter
  groups when ``adversarial`` is on (the discriminator keeps ``lr``).
* DCGAN initialisation (normal, std 0.02) of the decoder and the discriminator.

The engine runs one optimiser, so both players are trained by one backward pass:
the discriminator's loss sees detached reconstructions, and the generator's
adversarial loss goes through a functional copy of the discriminator whose weights are
detached, so each loss reaches only its own player's parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

import sslzoo
from sslzoo import distributed
from sslzoo.config import hp
from sslzoo.errors import ConfigError
from sslzoo.masks import (center_box, center_mask, erode, masked_l2, overlap_pixels,
                          overlap_weights, random_block_mask, random_region_mask)
from sslzoo.method import IMAGENET_MEAN, DataInfo, Method, OptimConfig, Schedule
from sslzoo.recipes import Recipe


class ChannelWiseFC(nn.Module):
    """Each channel's ``h x w`` map fully connected to itself, no weights across channels.

    "If the input layer has m feature maps of size n x n, this layer will output m
    feature maps of dimension n x n. However, unlike a fully-connected layer, it has no
    parameters connecting different feature maps" (Sec. 3.1): ``m n^4`` weights.
    """

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        n = height * width
        self.shape = (channels, height, width)
        self.weight = nn.Parameter(torch.randn(channels, n, n) / math.sqrt(n))
        self.bias = nn.Parameter(torch.zeros(channels, n))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, h, w) -> (B, C, h, w)
        b, c, h, w = x.shape
        if (c, h, w) != self.shape:
            raise ValueError(f"channel-wise FC was built for feature maps {self.shape}, got "
                             f"{(c, h, w)}; train and evaluate at the same image size")
        y = torch.einsum("bcn,cnm->bcm", x.reshape(b, c, h * w), self.weight) + self.bias
        return y.view(b, c, h, w)


def _dcgan_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def up_decoder(in_channels: int, in_size: int, out_size: int, width: int) -> nn.Sequential:
    """Up-convolutions (4x4, stride 2, BN, ReLU) from ``in_size`` to at least ``out_size``,
    halving the width each time (not below 32), then a 3x3 convolution to RGB and tanh.
    Output ``(B, 3, in_size * 2^k, ...)``; the caller resizes when that overshoots."""
    steps = max(0, math.ceil(math.log2(out_size / in_size))) if in_size < out_size else 0
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 1), nn.BatchNorm2d(width),
                               nn.ReLU(inplace=True)]
    ch = width
    for _ in range(steps):
        nxt = max(32, ch // 2)
        layers += [nn.ConvTranspose2d(ch, nxt, 4, 2, 1, bias=False), nn.BatchNorm2d(nxt),
                   nn.ReLU(inplace=True)]
        ch = nxt
    layers += [nn.Conv2d(ch, 3, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


def discriminator(size: int, width: int = 64) -> nn.Sequential:
    """DCGAN discriminator (official ``netD``): 4x4 stride-2 convolutions with LeakyReLU
    (0.2) and BN after the first, down to 4x4 or less, then one logit per image."""
    layers: list[nn.Module] = []
    ch_in, ch, s = 3, width, size
    while s > 4:
        layers += [nn.Conv2d(ch_in, ch, 4, 2, 1, bias=False)]
        layers += [nn.BatchNorm2d(ch)] if ch_in != 3 else []
        layers += [nn.LeakyReLU(0.2, inplace=True)]
        ch_in, ch, s = ch, min(ch * 2, width * 8), s // 2
    layers += [nn.Conv2d(ch_in, 1, s), nn.Flatten()]                 # (B, 1)
    return nn.Sequential(*layers)


class ContextEncoder(Method):
    """Context encoder: reconstruct a removed region from its context (masked L2, +adv)."""

    name: ClassVar[str] = "inpainting"
    paper: ClassVar[str] = (
        "Pathak et al., Context Encoders: Feature Learning by Inpainting, CVPR 2016. "
        "https://arxiv.org/abs/1604.07379")
    default_augment: ClassVar[str] = "crop-flip"
    recipes: ClassVar[dict[str, Recipe]] = {
        "imagenet": Recipe(
            "Inpainting of the central square at 128 px with the joint L2 and adversarial "
            "loss, the official ImageNet setting.",
            "official train.lua: fineSize=128, batchSize=64, wtl2=0.999, overlapPred=4, "
            "niter=25; paper Sec. 4",
            method={"mask": "center", "adversarial": True},
            train={"image_size": 128, "batch_size": 64, "epochs": 25}),
        "cifar": Recipe(
            "The official central-square setting scaled to 32 px images (the paper reports "
            "no CIFAR run): a 16 px square, a 1 px overlap band, joint loss.",
            "official train.lua (fineSize=128 scaled by 1/4), paper Sec. 4",
            method={"mask": "center", "adversarial": True},
            train={"image_size": 32, "batch_size": 64}),
        "features": Recipe(
            "The paper's feature-learning setting: random region masks and the L2 "
            "reconstruction loss only, at any image size.",
            "paper Sec. 5.2 (feature learning with random regions and L2 loss); official "
            "train_random.lua (useOverlapPred=0)",
            method={"mask": "region", "adversarial": False}),
    }

    @dataclass
    class Config(OptimConfig):
        optimizer: Literal["sgd", "lars", "adam", "adamw"] = hp(
            "adam", "optimizer (official code: Adam)")
        lr: float = hp(2e-4, "learning rate (official: lr=0.0002)", gt=0)
        lr_batch: int = hp(0, "lr is used as is (official batch size: 64)", ge=0)
        momentum: float = hp(0.5, "Adam beta1 (official: beta1=0.5)", ge=0, lt=1)
        beta2: float = hp(0.999, "Adam beta2 (Torch optim.adam default)", ge=0, lt=1)
        weight_decay: float = hp(0.0, "weight decay (official: none)", ge=0)
        wd_exclude_bias_norm: bool = hp(
            False, "no weight decay on biases and norm weights "
                   "(weight_decay is 0 by default)")
        schedule: Schedule = hp(
            "constant", "learning-rate schedule (official: constant)")
        mask: Literal["center", "block", "region"] = hp(
            "center", "removed region: central square, random blocks or random regions "
                      "(Sec. 3.3)")
        center_size: float = hp(0.5, "side of the central square as a share of the image "
                                "(official: 64 of 128)", gt=0, lt=1)
        overlap: float = hp(4 / 128, "central mask only: visible band predicted along the "
                            "square's edge, as a share of the image size (official: "
                            "overlapPred=4 at 128 px); block and region masks hide their "
                            "whole area", ge=0, lt=0.5)
        overlap_weight: float = hp(10.0, "loss weight of the overlap band (official: "
                                   "overlapL2Weight=10)", ge=0)
        adversarial: bool = hp(False, "add the adversarial loss and a discriminator (Sec. 3.2)")
        rec_weight: float = hp(0.999, "lambda_rec of the joint loss (paper: 0.999)", ge=0)
        adv_weight: float = hp(0.001, "lambda_adv of the joint loss (paper: 0.001)", ge=0)
        gen_lr_scale: float = hp(10.0, "with the adversarial loss: encoder-decoder lr / "
                                 "discriminator lr (official: 10)", gt=0)
        decoder_width: int = hp(512, "channels of the first up-convolution (official: "
                                "ngf*8 = 512)", ge=8)
        disc_width: int = hp(64, "channels of the discriminator's first layer (official: "
                             "ndf = 64)", ge=8)

    def __init__(self, backbone: sslzoo.Backbone, config: Any, augment: sslzoo.Augment,
                 data: DataInfo) -> None:
        super().__init__(backbone, config, augment, data)
        c, size = config, data.image_size
        # the overlapping prediction belongs to the central square (official train.lua);
        # random masks predict without it (train_random.lua: useOverlapPred = 0)
        self.overlap_px = overlap_pixels(size, c.overlap) if c.mask == "center" else 0
        self.out_size = center_box(size, c.center_size)[1] if c.mask == "center" else size
        if c.mask == "center" and self.out_size <= 2 * self.overlap_px:
            raise ConfigError(
                f"the overlap band ({self.overlap_px} px each side) hides nothing of the "
                f"{self.out_size} px central region at image size {size}; lower it with "
                "--set overlap=0.03125 or raise --image-size")
        # "filled with constant mean value": the data set's mean, set by prepare()
        self.register_buffer("fill", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        channels, h, w = _feature_shape(backbone, size)
        self.channel_fc = ChannelWiseFC(channels, h, w)
        self.decoder = up_decoder(channels, min(h, w), self.out_size, c.decoder_width)
        self.decoder.apply(_dcgan_init)
        self.disc = discriminator(self.out_size, c.disc_width) if c.adversarial else None
        if self.disc is not None:
            self.disc.apply(_dcgan_init)

    # -- data ---------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, images: Tensor) -> None:
        """The fill colour: the mean colour of a sample of training images."""
        mean = images.float().div(255).mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
        self.fill.copy_(mean.expand_as(self.fill).to(self.fill))
        distributed.broadcast_(self.fill)

    def draw_mask(self, batch: int, size: int, device: torch.device) -> Tensor:
        """The configured region mask ``(B, 1, S, S)`` bool (True: predicted)."""
        kind = self.config.mask
        if kind == "center":
            return center_mask(batch, size, self.config.center_size, device=device)
        if kind == "block":
            return random_block_mask(batch, size, device=device)
        return random_region_mask(batch, size, device=device)

    # -- model --------------------------------------------------------------------------
    def generate(self, context: Tensor) -> Tensor:
        """Masked images in ``[0, 1]`` to the predicted region in ``[-1, 1]``:
        ``(B, 3, P, P)`` with ``P`` the central square's side (center mask) or ``S``."""
        feats = self.backbone.forward_features(self.preprocess(context))  # (B, F, h, w)
        out = self.decoder(F.relu(self.channel_fc(feats)))             # (B, 3, >=P, >=P)
        if out.shape[-1] != self.out_size or out.shape[-2] != self.out_size:
            out = F.interpolate(out, size=(self.out_size, self.out_size), mode="bilinear",
                                align_corners=False)
        return out

    def _crop(self, x: Tensor) -> Tensor:
        """The predicted part of a full-size map: the central square for the center mask."""
        if self.config.mask != "center":
            return x
        start, side = center_box(x.shape[-1], self.config.center_size)
        return x[..., start:start + side, start:start + side]

    def losses(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Every loss term for images ``x`` in ``[0, 1]`` ``(B, 3, S, S)``, with gradients.

        Returns ``loss`` (what the optimiser minimises), ``rec`` (masked L2), and with the
        adversarial option ``adv`` (generator's adversarial term), ``disc`` (the
        discriminator's loss) and ``gen`` (``rec_weight * rec + adv_weight * adv``).
        """
        c = self.config
        b, _, size, _ = x.shape
        mask = mask if mask is not None else self.draw_mask(b, size, x.device)
        hole = erode(mask, self.overlap_px)                                 # hidden pixels
        context = torch.where(hole, self.fill.to(x.dtype), x)
        pred = self.generate(context)                                       # (B, 3, P, P)
        target = self._crop(x * 2 - 1)                                      # [-1, 1]
        weights = self._crop(overlap_weights(mask, self.overlap_px, c.overlap_weight))
        out = {"rec": masked_l2(pred, target, weights)}
        if self.disc is None:
            out["loss"] = out["rec"]
            return out
        fake = pred if c.mask == "center" else torch.where(mask, pred, target.to(pred.dtype))
        out.update(self._adversarial(target, fake))
        out["gen"] = c.rec_weight * out["rec"] + c.adv_weight * out["adv"]
        out["loss"] = out["gen"] + out["disc"]
        return out

    def _adversarial(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """The discriminator's loss (``disc``) and the generator's adversarial term
        (``adv``, Eq. 2-3 with the usual non-saturating generator loss of the code).
        ``fake`` is the predicted square (central mask) or the composite of prediction
        inside the mask and real image outside (block and region masks)."""
        assert self.disc is not None
        bce = F.binary_cross_entropy_with_logits
        real_logit = self.disc(real)                                        # (B, 1)
        fake_logit = self.disc(fake.detach())               # D's loss: no gradient to G
        disc = bce(real_logit, torch.ones_like(real_logit)) + bce(fake_logit,
                                                                  torch.zeros_like(fake_logit))
        # G's term through D with detached weights (and throw-away BN statistics): its
        # gradient reaches the generator only
        frozen = {n: p.detach() for n, p in self.disc.named_parameters()}
        frozen.update({n: buf.clone() for n, buf in self.disc.named_buffers()})
        gen_logit = functional_call(self.disc, frozen, (fake,))
        return {"disc": disc, "adv": bce(gen_logit, torch.ones_like(gen_logit))}

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        out = self.losses(self.augment(images))
        return {k: v if k == "loss" else v.detach() for k, v in out.items()}

    @torch.no_grad()
    def inpaint(self, images: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(context, reconstruction)`` for images in ``[0, 1]``: the masked input the
        encoder sees and the image with its masked region replaced by the prediction."""
        b, _, size, _ = images.shape
        mask = mask if mask is not None else self.draw_mask(b, size, images.device)
        context = torch.where(erode(mask, self.overlap_px), self.fill.to(images.dtype), images)
        pred = (self.generate(context).float() + 1) / 2                     # (B, 3, P, P)
        full = images.clone()
        if self.config.mask == "center":
            start, side = center_box(size, self.config.center_size)
            full[..., start:start + side, start:start + side] = pred
        else:
            full = torch.where(mask, pred, images)
        return context, full.clamp(0, 1)

    def reconstruct(self, images: Tensor) -> Tensor:
        """Images ``(B, 3, S, S)`` in ``[0, 1]`` with the masked region inpainted."""
        return self.inpaint(images)[1]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The base groups; with the adversarial loss the discriminator gets groups of its
        own and the encoder-decoder's groups carry ``lr_scale = gen_lr_scale`` (the
        official generator learns 10x faster than the discriminator)."""
        groups = super().parameter_groups()
        if self.disc is None:
            return groups
        disc = set(map(id, self.disc.parameters()))
        split = []
        for group in groups:
            extra = {k: v for k, v in group.items() if k != "params"}
            split.append({"params": [p for p in group["params"] if id(p) not in disc], **extra,
                          "lr_scale": self.config.gen_lr_scale})
            split.append({"params": [p for p in group["params"] if id(p) in disc], **extra})
        return [g for g in split if g["params"]]


def _feature_shape(backbone: sslzoo.Backbone, size: int) -> tuple[int, int, int]:
    """``(channels, h, w)`` of the backbone's spatial map for ``size x size`` inputs."""
    from sslzoo.evaluation import eval_mode

    with eval_mode(backbone), torch.no_grad():
        param = next(backbone.parameters(), None)
        probe = torch.zeros(1, getattr(backbone, "in_chans", 3), size, size,
                            device=param.device if param is not None else None)
        shape = backbone.forward_features(probe).shape
    return shape[1], shape[2], shape[3]


def inpainting_rows(method: ContextEncoder, images: Tensor) -> list[Tensor]:
    """Rows of the ``sslzoo inpaint`` grid: original, masked input, reconstruction."""
    return [images, *method.inpaint(images)]


@sslzoo.hookimpl
def register_methods(register: Any) -> None:
    register(ContextEncoder)


@sslzoo.hookimpl
def register_commands(cli: Any) -> None:
    from sslzoo.runs import add_image_grid_command

    add_image_grid_command(
        cli, "inpaint", ContextEncoder.name, "inpainting.png", inpainting_rows,
        help="Inpaint test images with a trained inpainting run and save a grid "
             "(rows: original, masked input, reconstruction).")
