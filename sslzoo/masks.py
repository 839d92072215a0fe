"""Region masks for inpainting, drawn per sample and batched on the device.

Pathak, Krähenbühl, Donahue, Darrell and Efros, "Context Encoders: Feature Learning by
Inpainting", CVPR 2016 (https://arxiv.org/abs/1604.07379; official code
pathak22/context-encoder), Sec. 3.3 "Region masks":

* central region — "the simplest such shape is the central square patch in the image";
  the official code drops the central ``S/2 x S/2`` square (a quarter of the area);
* random block — "we remove a number of smaller possibly overlapping masks, covering up
  to 1/4 of the image";
* random region — "arbitrary shapes ... again covering up to 1/4 of the image". The
  paper takes the shapes from PASCAL VOC segmentations; the official ``train_random.lua``
  instead thresholds bicubically upsampled uniform noise (``res = 0.06``,
  ``density = 0.25``) and keeps windows with 20-30 % coverage, which is what
  :func:`random_region_mask` does, without a data set.

A mask is ``(B, 1, H, W)`` bool, True where pixels are removed (and reconstructed).
:func:`overlap_weights` gives the loss weights of the paper's overlapping prediction.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: "covering up to 1/4 of the image" (Sec. 3.3).
MAX_COVERAGE = 0.25
#: Official code: ``local overlapL2Weight = 10``.
OVERLAP_WEIGHT = 10.0


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def center_mask(batch: int, size: int, fraction: float = 0.5,
                device: torch.device | str | None = None) -> Tensor:
    """The central square of side ``round(fraction * size)`` (``S/2``: a quarter of the
    area) for every sample: ``(B, 1, S, S)`` bool."""
    side = center_side(size, fraction)
    start = (size - side) // 2
    mask = torch.zeros(batch, 1, size, size, dtype=torch.bool, device=_device(device))
    mask[..., start:start + side, start:start + side] = True
    return mask


def center_side(size: int, fraction: float = 0.5) -> int:
    """Side of the central square region (``64`` for ``128`` at the default ``1/2``)."""
    return max(1, min(size, round(fraction * size)))


def center_box(size: int, fraction: float = 0.5) -> tuple[int, int]:
    """``(start, side)`` of the central square, the same on both axes."""
    side = center_side(size, fraction)
    return (size - side) // 2, side


def random_block_mask(batch: int, size: int, *, max_coverage: float = MAX_COVERAGE,
                      num_blocks: int = 8, min_side: float = 1 / 8, max_side: float = 1 / 4,
                      device: torch.device | str | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
    """Several possibly overlapping random rectangles per sample, covering at most
    ``max_coverage`` of each image.

    Each sample draws ``num_blocks`` rectangles with sides uniform in
    ``[min_side, max_side] * size`` at uniform positions; they are added in turn and a
    rectangle that would push the covered share above ``max_coverage`` is skipped, so
    every sample gets its own mask, all in one batched pass.

    Returns:
        ``(B, 1, S, S)`` bool.
    """
    dev = _device(device)
    lo, hi = max(1, round(min_side * size)), max(1, round(max_side * size))
    rand = torch.rand(4, batch, num_blocks, device=dev, generator=generator)
    h = (lo + rand[0] * (hi - lo + 1)).long().clamp(lo, hi)           # (B, K)
    w = (lo + rand[1] * (hi - lo + 1)).long().clamp(lo, hi)
    top = (rand[2] * (size - h + 1)).long()
    left = (rand[3] * (size - w + 1)).long()
    ys = torch.arange(size, device=dev).view(1, 1, size, 1)
    xs = torch.arange(size, device=dev).view(1, 1, 1, size)
    blocks = ((ys >= top[..., None, None]) & (ys < (top + h)[..., None, None])
              & (xs >= left[..., None, None]) & (xs < (left + w)[..., None, None]))  # (B, K, S, S)
    mask = torch.zeros(batch, size, size, dtype=torch.bool, device=dev)
    limit = max_coverage * size * size
    for k in range(num_blocks):
        candidate = mask | blocks[:, k]
        keep = candidate.sum(dim=(1, 2)) <= limit                     # (B,)
        mask = torch.where(keep[:, None, None], candidate, mask)
    return mask[:, None]


def random_region_mask(batch: int, size: int, *, coverage: tuple[float, float] = (0.2, 0.3),
                       cells: int = 8, device: torch.device | str | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
    """Random blob-shaped regions, as the official ``train_random.lua`` draws them.

    Uniform noise on a ``cells x cells`` grid is upsampled bicubically to the image size
    and thresholded. The official code thresholds one fixed pattern at 0.25 and
    rejects crops whose coverage is outside 20-30 %; here each sample draws its own
    coverage uniformly in ``coverage`` and takes the matching quantile of its own noise
    as threshold, so the share is exact and nothing is rejected. ``cells = 8`` matches
    the official blob scale (``res = 0.06`` of a pattern cropped at 128 px: ~7.7 noise
    cells across a crop).

    Returns:
        ``(B, 1, S, S)`` bool.
    """
    dev = _device(device)
    noise = torch.rand(batch, 1, cells, cells, device=dev, generator=generator)
    field = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
    flat = field.flatten(1)                                           # (B, S*S)
    share = coverage[0] + (coverage[1] - coverage[0]) * torch.rand(
        batch, device=dev, generator=generator)
    count = (share * flat.shape[1]).round().long().clamp(1, flat.shape[1] - 1)
    # the smallest `count` values of each sample's field are removed
    threshold = flat.sort(dim=1).values.gather(1, count[:, None])    # (B, 1)
    return (flat < threshold).view(batch, 1, size, size)


def erode(mask: Tensor, pixels: int) -> Tensor:
    """Shrink a ``(B, 1, H, W)`` bool mask by ``pixels`` (square structuring element).

    Outside the image counts as masked, so a region touching the image border is not
    shrunk from that side (there is no context there to overlap with).
    """
    if pixels <= 0:
        return mask
    k = 2 * pixels + 1
    # max-pool pads with -inf, so the border is ignored: outside counts as masked
    kept = -F.max_pool2d(-mask.float(), kernel_size=k, stride=1, padding=pixels)
    return kept > 0.5


def overlap_weights(mask: Tensor, overlap: int, weight: float = OVERLAP_WEIGHT) -> Tensor:
    """Per-pixel reconstruction-loss weights of the overlapping prediction.

    The network predicts the whole masked region but only its interior (the region
    eroded by ``overlap`` pixels) is hidden from it; the ``overlap``-pixel band along the
    region's inner edge stays visible and its loss is weighted ``weight`` times more. In
    the official code (``train.lua``) the central 64 x 64 prediction of a 128 x 128 image
    has ``overlapPred = 4`` and ``overlapL2Weight = 10``.

    Args:
        mask: ``(B, 1, H, W)`` bool, the predicted region.
        overlap: width of the visible band, in pixels (0: no band).
        weight: loss weight of the band; the interior has weight 1, outside 0.

    Returns:
        ``(B, 1, H, W)`` float.
    """
    hole = erode(mask, overlap)
    return hole.float() + (mask & ~hole).float() * weight


def overlap_pixels(size: int, overlap: float) -> int:
    """An overlap given as a fraction of the image size, in whole pixels (at least 1 when
    the fraction is positive): 4/128 is 1 px at 32, 2 px at 64."""
    return 0 if overlap <= 0 else max(1, math.floor(overlap * size + 0.5))


def masked_l2(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Weighted L2 reconstruction loss over the masked pixels (Eq. 1).

    ``L_rec = || M ⊙ (x - F((1 - M) ⊙ x)) ||^2`` with the overlap weighting of
    :func:`overlap_weights` in place of the binary ``M``, averaged over the masked pixels
    and channels: ``sum(w (pred - target)^2) / (C * #{w > 0})``. For the central region
    this is the official code's ``MSECriterion`` over the predicted patch with the
    ``wtl2Matrix`` weights. Pixels with weight 0 do not contribute, whatever ``pred``
    holds there.

    Args:
        pred: prediction ``(B, C, H, W)``.
        target: ground truth ``(B, C, H, W)``.
        weights: ``(B, 1, H, W)`` per-pixel weights, 0 outside the mask.

    Returns:
        The scalar loss (float32).
    """
    sq = (pred.float() - target.float()).square() * weights.float()   # (B, C, H, W)
    count = (weights > 0).sum() * pred.shape[1]
    return sq.sum() / count.clamp_min(1)
