"""CIE Lab colour and the quantised ab space of colorization as classification.

Zhang, Isola and Efros, "Colorful Image Colorization", ECCV 2016
(https://arxiv.org/abs/1603.08511; official code richzhang/colorization). The ab plane is
cut into square cells of side 10 ("We quantize the ab output space into bins with grid
size 10 and keep the Q = 313 values which are in-gamut", Sec. 2.1); a pixel's colour
becomes a soft distribution over the cells near it, rare colours are up-weighted (Sec.
2.2), and a predicted distribution is turned back into a colour by its annealed mean
(Sec. 2.3). The pieces are here so that any method (or third-party plugin) predicting
colour can reuse them; conversions use :mod:`kornia.color` (sRGB, D65 white point).

Shapes: images ``(B, 3, H, W)`` in ``[0, 1]``; Lab ``(B, 3, H, W)`` with ``L`` in
``[0, 100]``; ab maps ``(B, 2, H, W)``; bin centres ``(Q, 2)``; distributions over the
bins ``(B, Q, H, W)``.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import lab_to_rgb as _kornia_lab_to_rgb
from kornia.color import rgb_to_lab as _kornia_rgb_to_lab
from torch import Tensor

from sslzoo.errors import ConfigError

#: Values from the paper: grid size, soft-encoding neighbours and kernel width,
#: rebalancing mix and smoothing, annealed-mean temperature.
GRID_SIZE = 10
SOFT_NEIGHBOURS = 5
SOFT_SIGMA = 5.0
REBALANCE_LAMBDA = 0.5
SMOOTH_SIGMA = 5.0
ANNEAL_TEMPERATURE = 0.38


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in ``[0, 1]`` ``(B, 3|1, H, W)`` to CIE Lab ``(B, 3, H, W)``, in float32.

    A single-channel image is taken as grey (``R = G = B``). Runs with autocast off, as
    the cube roots and powers of the conversion need full precision.
    """
    if rgb.shape[-3] == 1:
        rgb = rgb.expand(*rgb.shape[:-3], 3, *rgb.shape[-2:])
    with torch.autocast(rgb.device.type, enabled=False):
        return _kornia_rgb_to_lab(rgb.float().clamp(0, 1))


def lab_to_rgb(lab: Tensor) -> Tensor:
    """CIE Lab ``(B, 3, H, W)`` to sRGB in ``[0, 1]`` (out-of-gamut colours clipped)."""
    with torch.autocast(lab.device.type, enabled=False):
        return _kornia_lab_to_rgb(lab.float(), clip=True)


@functools.lru_cache(maxsize=4)
def _ab_bins(grid_size: int) -> Tensor:
    # The set of ab values of all 8-bit sRGB colours equals the set reached from the
    # cube's surface plus its interior; the projection's boundary comes from the surface
    # (an interior colour maps to an interior point of the ab projection), so the surface
    # at full 8-bit resolution plus a coarse interior grid hits exactly the cells all
    # 2^24 colours hit, in a fraction of the time.
    u = torch.arange(256) / 255.0                                     # 8-bit levels
    uu, vv = torch.meshgrid(u, u, indexing="ij")
    faces = []
    for channel in range(3):
        for value in (0.0, 1.0):
            rest = [c for c in range(3) if c != channel]
            face = torch.empty(3, uu.numel())
            face[channel], face[rest[0]], face[rest[1]] = value, uu.reshape(-1), vv.reshape(-1)
            faces.append(face)
    w = torch.linspace(0, 1, 16)
    interior = torch.stack(torch.meshgrid(w, w, w, indexing="ij")).reshape(3, -1)
    rgb = torch.cat([*faces, interior], dim=1)                        # (3, N)
    ab = _kornia_rgb_to_lab(rgb.view(1, 3, -1, 1))[0, 1:, :, 0]      # (2, N)
    cells = torch.floor(ab / grid_size + 0.5).long()                  # nearest grid point
    span = 2 * (int(130 // grid_size) + 2)                            # |a|, |b| < 130 in sRGB
    hit = torch.zeros(span * span, dtype=torch.bool)
    hit[(cells[0] + span // 2) * span + cells[1] + span // 2] = True
    key = hit.nonzero().squeeze(1)                                    # sorted by (a, b)
    cells = torch.stack([key // span, key % span], dim=1) - span // 2  # (Q, 2)
    return (cells * grid_size).float()


def ab_bins(grid_size: int = GRID_SIZE) -> Tensor:
    """Centres ``(Q, 2)`` of the in-gamut cells of the ab grid, sorted by ``(a, b)``.

    A cell (a square of side ``grid_size`` centred on a multiple of ``grid_size``) is
    kept when the ab value of some 8-bit sRGB colour falls in it, i.e. when it is the
    nearest grid point of a displayable colour. Deterministic; with kornia's D65
    conversion and grid size 10 this gives Q = 261 (the official ``pts_in_hull.npy``
    holds 313 cells, computed from a wider, undocumented gamut).
    """
    return _ab_bins(int(grid_size)).clone()


def _pixels(ab: Tensor) -> Tensor:
    return ab.movedim(1, -1).reshape(-1, 2).float()                  # (P, 2)


def nearest_bin(ab: Tensor, centres: Tensor, chunk: int = 1 << 16) -> Tensor:
    """Index of the nearest bin centre for every pixel: ``(B, 2, H, W) -> (B, H, W)``."""
    pts = _pixels(ab)
    centres = centres.to(pts)
    out = torch.cat([torch.cdist(p, centres).argmin(dim=1) for p in pts.split(chunk)]) \
        if len(pts) else torch.zeros(0, dtype=torch.long, device=ab.device)
    return out.view(ab.shape[0], *ab.shape[2:])


def soft_encode(ab: Tensor, centres: Tensor, k: int = SOFT_NEIGHBOURS,
                sigma: float = SOFT_SIGMA) -> Tensor:
    """Soft-encoding of ground-truth colours over the bins (paper Sec. 2.1).

    "We find the 5-nearest neighbors to Y_{h,w} in the output space and weight them
    proportionally to their distance from the ground truth using a Gaussian kernel with
    sigma = 5." The official training layer uses 10 neighbours; ``k`` chooses.

    Args:
        ab: ground-truth ab ``(B, 2, H, W)``.
        centres: bin centres ``(Q, 2)``.
        k: neighbours that receive mass.
        sigma: width of the Gaussian kernel, in ab units.

    Returns:
        ``(B, Q, H, W)`` float32, each pixel's weights summing to one.
    """
    pts = _pixels(ab)                                                 # (P, 2)
    centres = centres.to(pts)
    d2 = torch.cdist(pts, centres).square()                           # (P, Q)
    near_d2, near = d2.topk(min(k, len(centres)), dim=1, largest=False)  # (P, k)
    weights = torch.softmax(-near_d2 / (2 * sigma ** 2), dim=1)       # normalised Gaussian
    z = torch.zeros_like(d2).scatter_(1, near, weights)               # (P, Q)
    b, _, h, w = ab.shape
    return z.view(b, h, w, -1).permute(0, 3, 1, 2)


def bin_distribution(ab: Tensor, centres: Tensor) -> Tensor:
    """Empirical probability ``(Q,)`` of each bin: the share of pixels nearest to it."""
    idx = nearest_bin(ab, centres).reshape(-1)
    counts = torch.bincount(idx, minlength=len(centres)).float()
    return counts / counts.sum().clamp_min(1)


def smooth_distribution(p: Tensor, centres: Tensor, sigma: float = SMOOTH_SIGMA) -> Tensor:
    """Gaussian smoothing of a distribution over the bins, in the ab plane (Sec. 2.2).

    ``p~_q = sum_q' p_q' exp(-||c_q - c_q'||^2 / (2 sigma^2))``, renormalised over the Q
    bins: the paper smooths the empirical distribution "with a Gaussian kernel G_sigma".
    """
    centres = centres.to(p)
    kernel = torch.exp(-torch.cdist(centres, centres).square() / (2 * sigma ** 2))  # (Q, Q)
    smoothed = kernel @ p
    return smoothed / smoothed.sum().clamp_min(1e-12)


def rebalance_weights(p_smooth: Tensor, lam: float = REBALANCE_LAMBDA) -> Tensor:
    """Class-rebalancing weights ``(Q,)`` from a smoothed colour distribution (Eq. 4).

    ``w ∝ ((1 - lambda) p~ + lambda / Q)^-1`` normalised so that ``E_p~[w] = 1`` ("we
    mix it with a uniform distribution with weight lambda, take the reciprocal, and
    normalize so the weighting factor is 1 on expectation"; lambda = 1/2).
    """
    q = p_smooth.numel()
    w = 1.0 / ((1 - lam) * p_smooth + lam / q)
    return w / (p_smooth * w).sum()


def annealed_mean(logits: Tensor, centres: Tensor,
                  temperature: float = ANNEAL_TEMPERATURE) -> Tensor:
    """Annealed-mean decoding of a predicted colour distribution (paper Eq. 5).

    ``H(Z) = E[f_T(Z)]`` with ``f_T(z) = exp(log(z) / T) / sum_q exp(log(z_q) / T)``;
    "T = 0.38 ... captures the vibrancy of the mode while maintaining the spatial
    coherence of the mean". ``T = 1`` gives the mean, ``T -> 0`` the mode.

    Args:
        logits: log-probabilities up to a per-pixel constant ``(B, Q, H, W)`` (network
            logits, or ``log(z)`` of a distribution; ``-inf`` for zero probability).
        centres: bin centres ``(Q, 2)``.
        temperature: T in ``(0, 1]``.

    Returns:
        ab ``(B, 2, H, W)``.
    """
    f = torch.softmax(logits.float() / temperature, dim=1)            # (B, Q, H, W)
    return torch.einsum("bqhw,qc->bchw", f, centres.to(f))


def downsample(x: Tensor, stride: int) -> Tensor:
    """Keep every ``stride``-th pixel, starting half a stride in.

    The official network subsamples its ab target with a stride-4 1x1 convolution
    (``data_ab_ss``), which keeps pixels 0, 4, 8, ...; starting at ``stride // 2``
    instead is a choice made here: the kept pixel sits near the centre of its
    ``stride x stride`` block, where the bilinearly upsampled prediction
    (``align_corners=False``) is centred too."""
    if stride == 1:
        return x
    return x[..., stride // 2::stride, stride // 2::stride]


def upsample_ab(ab: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of a predicted ab map to the image size."""
    return F.interpolate(ab.float(), size=size, mode="bilinear", align_corners=False)


def _load_npy(path: str | Path, what: str) -> np.ndarray:
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist; point the option at the "
                          "official .npy file or leave it empty") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} file {path} is not a .npy array ({exc})") from None
    if not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"{what} file {path} must hold numbers, got dtype {array.dtype}")
    return array


def load_bins(path: str | Path) -> Tensor:
    """Bin centres ``(Q, 2)`` from a ``.npy`` file, e.g. the official ``pts_in_hull.npy``
    (313 ab cells, Zhang et al.'s in-gamut set).

    Raises:
        ConfigError: missing or unreadable file, or not a ``(Q, 2)`` array of finite values.
    """
    array = _load_npy(path, "bins")
    if array.ndim != 2 or array.shape[1] != 2 or len(array) < 2 or not np.isfinite(array).all():
        raise ConfigError(f"bins file {path} must hold a (Q, 2) array of finite ab values, "
                          f"got shape {array.shape}")
    return torch.from_numpy(array.astype(np.float32))


def load_prior(path: str | Path, num_bins: int) -> Tensor:
    """A colour prior ``(Q,)`` from a ``.npy`` file, e.g. the official ``prior_probs.npy``
    (the ImageNet distribution over the 313 bins), normalised to sum to one.

    Raises:
        ConfigError: missing or unreadable file, a length other than ``num_bins``,
            negative entries, or nothing positive.
    """
    array = _load_npy(path, "prior")
    if array.shape != (num_bins,):
        raise ConfigError(f"prior file {path} must hold one probability per bin, shape "
                          f"({num_bins},), got {array.shape}; its bins file must match")
    if not np.isfinite(array).all() or (array < 0).any() or array.sum() <= 0:
        raise ConfigError(f"prior file {path} must hold finite, non-negative probabilities "
                          "with a positive sum")
    prior = torch.from_numpy(array.astype(np.float64))
    return (prior / prior.sum()).float()
