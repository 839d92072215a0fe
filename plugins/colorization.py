"""Colorful Image Colorization: predict the colours of a greyscale image.

Zhang, Isola and Efros, "Colorful Image Colorization", ECCV 2016.
https://arxiv.org/abs/1603.08511 (official code: richzhang/colorization, Caffe and PyTorch).

The backbone sees only the lightness channel L of CIE Lab (it is built with one input
channel) and predicts, for every pixel, a distribution over the Q in-gamut cells of the
ab plane (grid size 10; :mod:`sslzoo.color`). The target is the soft-encoding of the
true ab over the 5 nearest cells (Gaussian, sigma = 5), and the multinomial
cross-entropy of each pixel is weighted by the class-rebalancing factor of its nearest
cell (Eq. 2-4, lambda = 1/2), estimated in :meth:`Colorization.prepare` from a sample of
the training images and kept in a buffer, so checkpoints carry it. ``--set
loss=regression`` trains the paper's L2 baseline on ab instead (Eq. 1).

Choices where the paper leaves room, and what the official code does:

* Input: ``(L - 50) / 100``, i.e. L centred and scaled to ``[-0.5, 0.5]`` as the official
  PyTorch code (``l_cent = 50``, ``l_norm = 100``); the Caffe model fed ``L - 50``.
  :meth:`Colorization.preprocess` does the same for evaluation, so ``embed`` sees L.
* Resolution: the paper predicts at a quarter of the input resolution (56 x 56 for
  224 x 224); here a 1x1 convolution maps the backbone's spatial features to Q logits,
  which are upsampled bilinearly to ``S / target_stride``, and the target is the ab
  map subsampled with that stride. The official network subsamples with a stride-4
  1x1 convolution (``data_ab_ss``), keeping pixels 0, 4, 8, ...; here the kept pixel is
  the one half a stride in (2, 6, 10, ...), nearer the centre of each 4x4 block: a
  choice of this implementation, not the official code's.
* Bins: computed from the sRGB gamut (Q = 261 with kornia's Lab; the official
  ``pts_in_hull.npy`` has 313) — see :func:`sslzoo.color.ab_bins`. With
  ``bins_file=pts_in_hull.npy`` the official 313 bins are read instead, and with
  ``prior_file=prior_probs.npy`` the official ImageNet prior replaces the estimate from
  the training sample (used as given, without further smoothing, as the official
  ``PriorFactor`` does). Both end up in buffers, so checkpoints carry them and a trained
  run does not need the files again.
* Rebalancing: p is the share of pixels nearest to each bin in the ``prepare`` sample
  (the paper uses all of ImageNet), smoothed with a Gaussian (sigma = 5) in the ab plane.
  The official training also masks out greyscale images; that is not done here.
* Neighbours: the paper's 5 (the official training layer uses 10: ``--set neighbours=10``).
* Optimiser: "Adam ... beta1 = .9, beta2 = .99, and weight decay = 10^-3. Initial
  learning rate was 3 x 10^-5 and dropped to 10^-5 and 3 x 10^-6 when loss plateaued".
  The drops are ``lr_gamma = 0.316`` (so 3e-5 -> 9.5e-6 -> 3e-6) at the official
  solver's step size, 225k of its 500k iterations (``lr_milestones = (0.45, 0.9)``).
  Tiny runs may want a larger ``--lr``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sslzoo
from sslzoo import color, distributed
from sslzoo.config import hp
from sslzoo.errors import ConfigError
from sslzoo.method import DataInfo, Method, OptimConfig, Schedule
from sslzoo.recipes import Recipe

#: ab scale of the regression option (official PyTorch code: ``ab_norm = 110``).
AB_NORM = 110.0
L_CENTRE, L_NORM = 50.0, 100.0


def normalise_l(lightness: Tensor) -> Tensor:
    """L in ``[0, 100]`` to the network input ``(L - 50) / 100``."""
    return (lightness - L_CENTRE) / L_NORM


class Colorization(Method):
    """Colorization as classification over quantised ab, with class rebalancing."""

    name: ClassVar[str] = "colorization"
    paper: ClassVar[str] = (
        "Zhang, Isola and Efros, Colorful Image Colorization, ECCV 2016. "
        "https://arxiv.org/abs/1603.08511")
    default_augment: ClassVar[str] = "crop-flip"
    recipes: ClassVar[dict[str, Recipe]] = {
        "imagenet": Recipe(
            "Colorization on ImageNet-size images: 224 px inputs predicted at 56 x 56, batch "
            "40, 500k iterations (about 16 epochs) with drops at 225k and 450k.",
            "paper Sec. 2 and 3 (224 x 224 input, 1/4 resolution output, Adam 3e-5, batch "
            "40); official solver (step size 225k of 500k iterations)",
            train={"image_size": 224, "batch_size": 40, "epochs": 16}),
        "cifar": Recipe(
            "The paper's setting scaled to 32 px images (the paper reports no CIFAR run): "
            "targets at 8 x 8 (stride 4), batch 40; short runs may want a larger --lr.",
            "paper Sec. 2-3 (1/4 resolution output, Adam 3e-5, batch 40)",
            train={"image_size": 32, "batch_size": 40}),
    }

    @dataclass
    class Config(OptimConfig):
        optimizer: Literal["sgd", "lars", "adam", "adamw"] = hp("adam", "optimizer (paper: Adam)")
        lr: float = hp(3e-5, "learning rate (paper: 3e-5, dropped to 1e-5 and 3e-6)", gt=0)
        lr_batch: int = hp(0, "lr is used as is (paper's batch size: 40)", ge=0)
        momentum: float = hp(0.9, "Adam beta1 (paper: .9)", ge=0, lt=1)
        beta2: float = hp(0.99, "Adam beta2 (paper: .99)", ge=0, lt=1)
        weight_decay: float = hp(1e-3, "weight decay (paper: 10^-3)", ge=0)
        wd_exclude_bias_norm: bool = hp(
            False, "no weight decay on biases and norm weights "
                   "(official solver: every parameter decays)")
        schedule: Schedule = hp("step", "learning-rate schedule (official solver: step)")
        lr_milestones: tuple[float, ...] = hp(
            (0.45, 0.9), "fractions of the run where the lr drops (official solver: 225k "
                         "iteration steps of 500k)", gt=0, lt=1)
        lr_gamma: float = hp(0.316, "factor of each drop (paper: 3e-5 -> 1e-5 -> 3e-6)",
                             gt=0, le=1)
        loss: Literal["classification", "regression"] = hp(
            "classification", "classification over ab bins (Eq. 2) or L2 on ab (Eq. 1)")
        grid_size: int = hp(10, "side of the ab cells (paper: 10)", ge=2)
        neighbours: int = hp(5, "bins of the soft-encoding (paper: 5; official code: 10)", ge=1)
        sigma: float = hp(5.0, "Gaussian width of the soft-encoding (paper: 5)", gt=0)
        rebalance_lambda: float = hp(0.5, "uniform mix of the rebalancing (paper: 1/2); 1: "
                                     "no rebalancing", ge=0, le=1)
        smooth_sigma: float = hp(5.0, "Gaussian smoothing of the colour prior (paper: 5)", gt=0)
        temperature: float = hp(0.38, "annealed-mean temperature for decoding (paper: 0.38)",
                                gt=0, le=1)
        target_stride: int = hp(4, "predict at 1/stride of the input resolution (paper: 4)",
                                ge=1)
        bins_file: str = hp("", "read the ab bin centres from this .npy file, shape (Q, 2) "
                            "(official: pts_in_hull.npy, Q = 313); empty: computed from "
                            "the sRGB gamut")
        prior_file: str = hp("", "read the colour prior from this .npy file, shape (Q,) "
                             "matching the bins (official: prior_probs.npy); empty: "
                             "estimated from the training images")

    def __init__(self, backbone: sslzoo.Backbone, config: Any, augment: sslzoo.Augment,
                 data: DataInfo) -> None:
        super().__init__(backbone, config, augment, data)
        c = config
        if data.image_size < c.target_stride:
            raise ConfigError(f"target_stride {c.target_stride} is larger than the image size "
                              f"{data.image_size}; set it with --set target_stride=1")
        bins = self._file_bins(missing_ok=True)
        self._set_bins(bins if bins is not None else color.ab_bins(c.grid_size))  # (Q, 2)
        if c.prior_file and Path(c.prior_file).exists():
            color.load_prior(c.prior_file, len(self.bins))  # fail early on a wrong file

    def _set_bins(self, bins: Tensor) -> None:
        """Bin centres ``(Q, 2)`` and what depends on Q: the prior, the rebalancing
        weights (uniform and 1 until :meth:`prepare`) and the classifier."""
        q = len(bins)
        old = getattr(self, "head", None)
        device = old.weight.device if old is not None else bins.device
        self.register_buffer("bins", bins.to(device))
        self.register_buffer("prior", torch.full((q,), 1.0 / q, device=device))
        self.register_buffer("class_weights", torch.ones(q, device=device))
        out = q if self.config.loss == "classification" else 2
        self.head = nn.Conv2d(self.backbone.feature_channels, out, kernel_size=1).to(device)

    def _file_bins(self, missing_ok: bool) -> Tensor | None:
        path = self.config.bins_file
        if not path or (missing_ok and not Path(path).exists()):
            return None
        return color.load_bins(path)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:
        """As :meth:`torch.nn.Module.load_state_dict`; a checkpoint with another number
        of bins (read from a file that may be gone) resizes the bins and the head first."""
        bins = state_dict.get("bins")
        if bins is not None and bins.shape != self.bins.shape:
            self._set_bins(torch.zeros_like(bins))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @classmethod
    def backbone_in_chans(cls, config: Any) -> int:
        """The backbone sees the L channel alone."""
        return 1

    def preprocess(self, x: Tensor) -> Tensor:
        """RGB images in ``[0, 1]`` ``(B, 3, H, W)`` to normalised lightness ``(B, 1, H, W)``."""
        return normalise_l(color.rgb_to_lab(x)[:, :1])

    # -- data ---------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, images: Tensor, chunk: int = 256) -> None:
        """Estimate the colour prior and the rebalancing weights (Sec. 2.2) from a uint8
        sample of training images, on the pixels the loss sees (or read the prior from
        ``prior_file``)."""
        c = self.config
        bins = self._file_bins(missing_ok=False)         # a given file must exist to train
        if bins is not None:
            self.bins.copy_(bins.to(self.bins))
        if c.prior_file:
            prior = color.load_prior(c.prior_file, len(self.bins)).to(self.prior)
            self.prior.copy_(prior)
            self.class_weights.copy_(color.rebalance_weights(prior, c.rebalance_lambda))
            return
        counts = torch.zeros(len(self.bins), device=self.bins.device)
        for part in images.split(chunk):
            ab = color.rgb_to_lab(part.to(self.bins.device).float() / 255)[:, 1:]
            ab = color.downsample(ab, c.target_stride)
            idx = color.nearest_bin(ab, self.bins).reshape(-1)
            counts += torch.bincount(idx, minlength=len(self.bins)).float()
        p = counts / counts.sum().clamp_min(1)
        self.prior.copy_(color.smooth_distribution(p, self.bins, c.smooth_sigma))
        self.class_weights.copy_(color.rebalance_weights(self.prior, c.rebalance_lambda))
        distributed.broadcast_(self.prior)
        distributed.broadcast_(self.class_weights)

    # -- model --------------------------------------------------------------------------
    def predict(self, lightness: Tensor, size: tuple[int, int]) -> Tensor:
        """Normalised L ``(B, 1, H, W)`` to logits ``(B, Q, h, w)`` (or ab/110
        ``(B, 2, h, w)`` for regression) at ``size`` = the target resolution."""
        out = self.head(self.backbone.forward_features(lightness))
        return F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)

    def _target_size(self, h: int, w: int) -> tuple[int, int]:
        s = self.config.target_stride
        return len(range(s // 2, h, s)), len(range(s // 2, w, s))

    def losses(self, x: Tensor) -> dict[str, Tensor]:
        """Loss and bin accuracy for RGB images ``x`` in ``[0, 1]`` ``(B, 3, S, S)``."""
        c = self.config
        lab = color.rgb_to_lab(x)                                            # (B, 3, S, S)
        ab = color.downsample(lab[:, 1:], c.target_stride)                   # (B, 2, h, w)
        out = self.predict(normalise_l(lab[:, :1]), ab.shape[-2:])
        if c.loss == "regression":
            # Eq. 1: 1/2 sum_hw ||Y - Y^||^2, on ab / 110, averaged over pixels
            return {"loss": 0.5 * (out - ab / AB_NORM).square().sum(1).mean()}
        with torch.no_grad():
            z = color.soft_encode(ab, self.bins, c.neighbours, c.sigma)     # (B, Q, h, w)
            nearest = z.argmax(dim=1)                                        # (B, h, w)
            v = self.class_weights[nearest]                                  # (B, h, w)
        log_p = F.log_softmax(out, dim=1)                                    # (B, Q, h, w)
        # Eq. 2: -sum_hw v(Z_hw) sum_q Z_hwq log Z^_hwq, averaged over pixels
        loss = -(v * (z * log_p).sum(dim=1)).mean()
        acc = (out.argmax(dim=1) == nearest).float().mean()
        return {"loss": loss, "acc": acc}

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        out = self.losses(self.augment(images))
        return {k: v if k == "loss" else v.detach() for k, v in out.items()}

    @torch.no_grad()
    def colorize(self, images: Tensor) -> Tensor:
        """Colourise the lightness of RGB images ``(B, 3, S, S)`` in ``[0, 1]``: the
        annealed mean of the predicted distribution (T = ``temperature``), or the
        regressed ab, upsampled to ``S`` and combined with the input's L."""
        c = self.config
        lab = color.rgb_to_lab(images)
        size = self._target_size(*images.shape[-2:])
        out = self.predict(normalise_l(lab[:, :1]), size)
        ab = out * AB_NORM if c.loss == "regression" else \
            color.annealed_mean(out, self.bins, c.temperature)
        ab = color.upsample_ab(ab, images.shape[-2:])
        return color.lab_to_rgb(torch.cat([lab[:, :1], ab], dim=1))


def colorization_rows(method: Colorization, images: Tensor) -> list[Tensor]:
    """Rows of the ``sslzoo colorize`` grid: original, greyscale input, colourised."""
    lab = color.rgb_to_lab(images)
    grey = color.lab_to_rgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], dim=1))
    return [images, grey, method.colorize(images)]


@sslzoo.hookimpl
def register_methods(register: Any) -> None:
    register(Colorization)


@sslzoo.hookimpl
def register_commands(cli: Any) -> None:
    from sslzoo.runs import add_image_grid_command

    add_image_grid_command(
        cli, "colorize", Colorization.name, "colorization.png", colorization_rows,
        help="Colourise test images with a trained colorization run and save a grid "
             "(rows: original, greyscale input, colourised with the annealed mean).")
