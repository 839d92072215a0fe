"""Fused, sync-free random views: every parameter drawn on the device, few kernels.

:class:`FusedViews` implements the operations of :class:`sslzoo.augment.ViewAugment`
(crop, flips, 90-degree turns, colour jitter, grayscale, blur, solarize) with the same
parameter distributions as torchvision's per-image transforms, in a handful of batched
kernels and without a single host-device synchronisation: no ``.item()``, ``.tolist()``,
boolean indexing or data-dependent branch. The crop, the flips and the turns are one
``grid_sample`` (an affine map per image); colour jitter is a few elementwise kernels with
per-image factors; the blur is one separable grouped convolution with a kernel per image.
An image that an operation skips gets that operation's neutral parameters (factor 1,
shift 0, a delta kernel) or is selected back with ``torch.where``, so the shapes never
depend on the draw.

The parameters are drawn by :meth:`FusedViews.sample` into a :class:`ViewParams` and
applied by :meth:`FusedViews.apply`, so tests can check each separately: the draws against
the configured distributions, the application against torchvision's functional ops.

References for each operation's definition: torchvision's ``RandomResizedCrop.get_params``
(area uniform in ``crop_scale``, log aspect ratio uniform in ``log(crop_ratio)``, ten tries,
then the whole image or its centre at the nearest allowed ratio), ``RandomCrop`` with
``padding``, ``ColorJitter`` and ``adjust_hue`` (HSV), ``rgb_to_grayscale`` (ITU-R 601-2
luma) and ``GaussianBlur`` (reflect padding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LUMA = (0.299, 0.587, 0.114)      # ITU-R 601-2, as torchvision's rgb_to_grayscale
_TRIES = 10                       # torchvision's RandomResizedCrop.get_params


@dataclass
class ViewParams:
    """Per-image parameters of one batch of views; every tensor is on the batch's device
    except ``order``.

    Attributes:
        box: ``(B, 4)`` crop ``x0, y0, w, h`` in input pixels; for a padded crop, the
            offset of the output inside the resized, unpadded image (may be negative).
        hflip, vflip: ``(B,)`` bool.
        turns: ``(B,)`` long, quarter turns counter-clockwise as ``torch.rot90``.
        jitter: ``(B,)`` bool, whether colour jitter applies.
        factors: ``(B, 4)`` brightness, contrast and saturation factors and hue shift
            (turns); neutral (1, 1, 1, 0) where ``jitter`` is False.
        order: ``(4,)`` long on the CPU, the order of the four adjustments
            (0 brightness, 1 contrast, 2 saturation, 3 hue), one per batch as kornia.
        gray, blur, solarize: ``(B,)`` bool.
        sigma: ``(B,)`` blur sigma in pixels (drawn for every image, used where ``blur``).
    """

    box: Tensor
    hflip: Tensor
    vflip: Tensor
    turns: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor
    blur: Tensor
    sigma: Tensor
    solarize: Tensor


def _uniform(n: int, low: float, high: float, device: torch.device) -> Tensor:
    return torch.rand(n, device=device) * (high - low) + low


def _coin(n: int, p: float, device: torch.device) -> Tensor:
    return torch.rand(n, device=device) < p


def resized_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                       ratio: tuple[float, float], device: torch.device) -> Tensor:
    """``(n, 4)`` boxes ``x0, y0, w, h`` drawn as torchvision's
    ``RandomResizedCrop.get_params``, for all images at once and without a host sync.

    Ten candidate sizes per image; the first that fits is kept, else the fallback crop
    (the whole image, or its centre at the nearest allowed aspect ratio). The position is
    uniform over the integer offsets where the crop fits.
    """
    area = height * width
    target = _uniform(n * _TRIES, scale[0], scale[1], device).view(n, _TRIES) * area
    log_ratio = _uniform(n * _TRIES, math.log(ratio[0]), math.log(ratio[1]), device)
    aspect = log_ratio.view(n, _TRIES).exp()
    w = (target * aspect).sqrt().round()
    h = (target / aspect).sqrt().round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = (fits.cumsum(1) == 1) & fits                       # one-hot of the first fit
    found = fits.any(1)
    w = (w * first).sum(1)
    h = (h * first).sum(1)
    in_ratio = width / height                                  # torchvision's fallback
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    # uniform integer offsets; min() guards against rand * n rounding up to n in float32
    x0 = torch.minimum((torch.rand(n, device=device) * (width - w + 1)).floor(), width - w)
    y0 = torch.minimum((torch.rand(n, device=device) * (height - h + 1)).floor(), height - h)
    centre = ~found                                            # the fallback is centred
    x0 = torch.where(centre, ((width - w) / 2).floor(), x0)
    y0 = torch.where(centre, ((height - h) / 2).floor(), y0)
    return torch.stack([x0, y0, w, h], 1)


def resize(x: Tensor, size: int) -> Tensor:
    """Images resized to ``size x size`` (antialiased bilinear), or ``x`` itself when they
    already are."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0, 1)


def gray(x: Tensor) -> Tensor:
    """``(B, 1, H, W)`` luma of RGB images (the image itself when single-channel)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of RGB images by ``shift`` turns per image (torchvision's HSV
    definition), branch-free: RGB -> (h, s, v) -> RGB with the closed-form inverse."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    chroma = maxc - minc
    grey = chroma == 0
    inv = 1 / torch.where(grey, torch.ones_like(chroma), chroma)
    # 6h: (g - b)/chroma where red is the maximum, 2 + (b - r)/chroma where green is,
    # 4 + (r - g)/chroma otherwise (torchvision's _rgb2hsv, simplified); 0 for greys
    h6 = torch.where(maxc == r, g - b,
                     torch.where(maxc == g, b - r + 2 * chroma, r - g + 4 * chroma)) * inv
    h6 = torch.where(grey, torch.zeros_like(h6), h6) + 6 * shift.view(-1, 1, 1)
    h6 = torch.remainder(h6, 6.0)
    # channel n of (r, g, b) is v - chroma * clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6
    k = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1) \
        + h6.unsqueeze(1)
    k = torch.where(k >= 6, k - 6, k)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4 - k).clamp_(0, 1)


def _jitter(x: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Brightness, contrast, saturation and hue with per-image ``factors`` in ``order``,
    each clamped to [0, 1] as torchvision does."""
    rgb = x.shape[1] == 3
    for op in order.tolist():      # a CPU tensor: no device sync
        f = factors[:, op].view(-1, 1, 1, 1)
        if op == 0:
            x = (x * f).clamp_(0, 1)
        elif op == 1:
            mean = gray(x).mean((1, 2, 3), keepdim=True)
            x = torch.lerp(mean, x, f).clamp_(0, 1)
        elif op == 2 and rgb:
            x = torch.lerp(gray(x), x, f).clamp_(0, 1)
        elif op == 3 and rgb:
            x = adjust_hue(x, factors[:, 3]).clamp_(0, 1)
    return x


def gaussian_kernels(sigma: Tensor, size: int) -> Tensor:
    """``(B, size)`` normalised 1-D Gaussian kernels, one per sigma (torchvision's
    ``_get_gaussian_kernel1d``)."""
    half = (size - 1) / 2
    t = torch.linspace(-half, half, size, device=sigma.device, dtype=sigma.dtype)
    k = torch.exp(-0.5 * (t / sigma.view(-1, 1)) ** 2)
    return k / k.sum(1, keepdim=True)


def blur(x: Tensor, kernels: Tensor) -> Tensor:
    """Blur each image with its own separable kernel (``(B, k)``), reflect padding, as
    one depthwise convolution: a ``k x k`` kernel up to k = 11 (faster than two passes
    on the CPU there, and one kernel launch), two 1-D passes above."""
    b, c, h, w = x.shape
    k = kernels.shape[1]
    weight = kernels.repeat_interleave(c, 0)                    # (B*C, k)
    y = F.pad(x.reshape(1, b * c, h, w), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    if k <= 11:
        y = F.conv2d(y, (weight[:, :, None] * weight[:, None, :]).unsqueeze(1), groups=b * c)
    else:
        y = F.conv2d(y, weight.view(b * c, 1, 1, k), groups=b * c)
        y = F.conv2d(y, weight.view(b * c, 1, k, 1), groups=b * c)
    return y.view(b, c, h, w)


def _pose(hflip: Tensor, vflip: Tensor, turns: Tensor) -> Tensor:
    """``(B, 2, 2)`` maps from output to source coordinates ``(x, y)`` (normalised, y
    down) of ``rot90(vflip(hflip(image)), turns)``."""
    n = len(turns)
    # torch.rot90(img, 1, dims=(-2, -1)): out[i, j] = img[j, S-1-i], i.e. source
    # (x, y) = (-y_out, x_out) in centred coordinates; k turns repeat it.
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=turns.device)[turns]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=turns.device)[turns]
    rot = torch.stack([cos, -sin, sin, cos], 1).view(n, 2, 2)
    flips = torch.stack([1.0 - 2.0 * hflip.float(), 1.0 - 2.0 * vflip.float()], 1)
    return flips.unsqueeze(2) * rot                                   # diag(flips) @ rot


def _affine_grid(linear: Tensor, shift: Tensor, size: int) -> Tensor:
    """``(B, size, size, 2)`` sampling grid of ``source = linear @ (u, v) + shift`` over
    the output's pixel centres (``F.affine_grid`` with ``align_corners=False``, written as
    broadcast products: its batched matmul is several times slower on the CPU)."""
    u = (torch.arange(size, device=linear.device, dtype=linear.dtype) * 2 + 1) / size - 1
    a = linear.view(-1, 2, 2, 1, 1)
    t = shift.view(-1, 2, 1, 1)
    grid = a[:, :, 0] * u.view(1, 1, 1, size) + a[:, :, 1] * u.view(1, 1, size, 1) + t
    return grid.permute(0, 2, 3, 1)                                   # (B, S, S, 2): (x, y)


class FusedViews(nn.Module):
    """Random views of a batch, drawn and applied on its device without host syncs.

    Args:
        config: a :class:`sslzoo.augment.ViewConfig`.
        image_size: side of the square output.
        blur_kernel: side of the blur kernel (odd).
    """

    def __init__(self, config: Any, image_size: int, blur_kernel: int) -> None:
        super().__init__()
        self.config, self.image_size, self.blur_kernel = config, image_size, blur_kernel

    def sample(self, n: int, height: int, width: int, device: torch.device) -> ViewParams:
        """Parameters for ``n`` images of ``height x width`` (the input size; for a
        padded or no crop, the images are first resized to ``image_size``)."""
        c, s = self.config, self.image_size
        if c.crop == "resized":
            box = resized_crop_boxes(n, height, width, c.crop_scale, c.crop_ratio, device)
        else:
            pad = round(c.crop_padding * s) if c.crop == "padded" else 0
            offset = torch.randint(-pad, pad + 1, (n, 2), device=device).float()
            box = torch.cat([offset, torch.full((n, 2), float(s), device=device)], 1)
        rotate = _coin(n, c.rot90_prob, device)
        turns = torch.randint(1, 4, (n,), device=device) * rotate
        jitter = _coin(n, c.jitter_prob, device)
        neutral = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device)
        low = [max(0.0, 1 - c.brightness), max(0.0, 1 - c.contrast), max(0.0, 1 - c.saturation),
               -c.hue]
        high = [1 + c.brightness, 1 + c.contrast, 1 + c.saturation, c.hue]
        low_t, high_t = (torch.tensor(v, device=device) for v in (low, high))
        factors = torch.rand(n, 4, device=device) * (high_t - low_t) + low_t
        factors = torch.where(jitter.unsqueeze(1), factors, neutral)
        return ViewParams(
            box=box, hflip=_coin(n, c.hflip_prob, device), vflip=_coin(n, c.vflip_prob, device),
            turns=turns, jitter=jitter, factors=factors, order=torch.randperm(4),
            gray=_coin(n, c.grayscale_prob, device), blur=_coin(n, c.blur_prob, device),
            sigma=_uniform(n, *c.blur_sigma, device), solarize=_coin(n, c.solarize_prob, device))

    def forward(self, x: Tensor) -> Tensor:
        """One view of every image: float ``(B, C, H, W)`` in [0, 1] ->
        ``(B, C, image_size, image_size)``."""
        c = self.config
        if c.crop == "none" and not any((c.hflip_prob, c.vflip_prob, c.rot90_prob, c.jitter_prob,
                                         c.grayscale_prob, c.blur_prob, c.solarize_prob)):
            return resize(x, self.image_size).clone()     # nothing random: nothing to draw
        return self.apply(x, self.sample(len(x), x.shape[-2], x.shape[-1], x.device))

    def apply(self, x: Tensor, p: ViewParams) -> Tensor:
        """The views that parameters ``p`` describe (see :meth:`sample`)."""
        c, s = self.config, self.image_size
        if c.crop != "resized":
            x = resize(x, s)
        x = self._geometry(x, p)
        jitter = c.jitter_prob > 0 and any((c.brightness, c.contrast, c.saturation, c.hue))
        colour = [self._jitter if jitter else None,
                  self._gray if c.grayscale_prob > 0 and x.shape[1] == 3 else None]
        for op in (colour[::-1] if c.grayscale_first else colour):
            if op is not None:
                x = op(x, p)
        if c.blur_prob > 0:
            delta = torch.zeros(self.blur_kernel, device=x.device, dtype=x.dtype)
            delta[self.blur_kernel // 2] = 1.0
            kernels = gaussian_kernels(p.sigma.to(x.dtype), self.blur_kernel)
            kernels = torch.where(p.blur.unsqueeze(1), kernels, delta)
            x = blur(x, kernels)
        if c.solarize_prob > 0:
            x = torch.where(p.solarize.view(-1, 1, 1, 1) & (x >= 0.5), 1 - x, x)
        return x.clamp_(0, 1)

    def _geometry(self, x: Tensor, p: ViewParams) -> Tensor:
        """Crop, flips and turns as one ``grid_sample``: bilinear for a resized crop,
        nearest (exact pixel values, zeros outside the image) for integer shifts."""
        c, s = self.config, self.image_size
        moves = c.crop == "resized" or (c.crop == "padded" and round(c.crop_padding * s) > 0)
        posed = c.hflip_prob > 0 or c.vflip_prob > 0 or c.rot90_prob > 0
        if not (moves or posed):
            return x.clone()
        n, _, height, width = x.shape
        x0, y0, w, h = p.box.unbind(1)
        # output pixel centres u in [-1, 1] -> source ((w/W) u + (2 x0 + w)/W - 1, likewise y)
        scale = torch.stack([w / width, h / height], 1)                         # (B, 2)
        shift = torch.stack([(2 * x0 + w) / width - 1, (2 * y0 + h) / height - 1], 1)
        linear = scale.unsqueeze(2) * _pose(p.hflip, p.vflip, p.turns)          # (B, 2, 2)
        grid = _affine_grid(linear.to(x.dtype), shift.to(x.dtype), s)
        if c.crop == "resized":
            return F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                 align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    def _jitter(self, x: Tensor, p: ViewParams) -> Tensor:
        return torch.where(p.jitter.view(-1, 1, 1, 1), _jitter(x, p.factors, p.order), x)

    def _gray(self, x: Tensor, p: ViewParams) -> Tensor:
        return torch.where(p.gray.view(-1, 1, 1, 1), gray(x).expand_as(x), x)
