"""Grids of overlapping patches, batched: cutting, rotating and jittering them.

Contrastive Predictive Coding (van den Oord et al., "Representation Learning with
Contrastive Predictive Coding", 2018, Sec. 3.3) cuts every 256x256 image into "a 7x7
grid of 64x64 crops with 32 pixels overlap", encodes each crop separately and predicts
the encodings of rows below from the rows above. Hénaff et al. ("Data-Efficient Image
Recognition with Contrastive Predictive Coding", ICML 2020) also predict upwards and
sideways, which is the same task on a rotated grid. Jigsaw-style methods cut tiles the
same way. Everything here works on whole batches at once (no Python loop over images).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sslzoo.errors import ConfigError

Direction = Literal["top-down", "bottom-up", "left-right", "right-left"]

DIRECTIONS: tuple[Direction, ...] = ("top-down", "bottom-up", "left-right", "right-left")

# torch.rot90 turns that make each direction "top-down": row 0 of the rotated grid is
# where the context starts (top row, bottom row, left column, right column).
_ROT90: dict[str, int] = {"top-down": 0, "bottom-up": 2, "left-right": -1, "right-left": 1}


@dataclass(frozen=True)
class PatchGrid:
    """Where the patches of a ``grid x grid`` layout lie in a square image.

    Attributes:
        grid: patches per side.
        patch: side of each (square) patch in pixels.
        stride: distance between neighbouring patches (``patch // 2``: 50% overlap).
        offset: pixels skipped at the top and left so that the grid is centred.
    """

    grid: int
    patch: int
    stride: int
    offset: int = 0

    @property
    def span(self) -> int:
        """Pixels covered by the grid along each side."""
        return (self.grid - 1) * self.stride + self.patch


def half_overlap_grid(image_size: int, grid: int) -> PatchGrid:
    """The ``grid x grid`` layout of patches overlapping by half that covers an image.

    CPC's 256 px images hold 7x7 patches of 64 px at stride 32, i.e. stride
    ``S / (grid + 1)`` and patch ``2 S / (grid + 1)``. That gives 8 px patches at
    32 px, 16 at 64, 56 at 224. When ``grid + 1`` does not divide ``S``, the stride is
    rounded down and the grid centred: the leftover margin (fewer than ``grid + 1``
    pixels) is not used.

    Raises:
        ConfigError: the image is too small for the grid (fewer than 2 px per patch).
    """
    if grid < 1:
        raise ConfigError(f"grid must be >= 1, got {grid}; set it with --set grid=7")
    stride = image_size // (grid + 1)
    if stride < 1:
        raise ConfigError(
            f"a {grid}x{grid} grid of half-overlapping patches needs images of at least "
            f"{grid + 1} px, got {image_size} px; use a smaller --set grid=... or a larger "
            "--image-size")
    patch = 2 * stride
    return PatchGrid(grid, patch, stride, (image_size - (grid + 1) * stride) // 2)


def extract_patches(x: Tensor, layout: PatchGrid, *, flatten: bool = False) -> Tensor:
    """Cut every image of a batch into its grid of (overlapping) patches.

    Args:
        x: images ``(B, C, H, W)`` with ``H, W >= layout.offset + layout.span``.
        layout: the grid, e.g. from :func:`half_overlap_grid`.
        flatten: return ``(B * grid * grid, C, p, p)`` (row-major: image, row, column),
            ready for one backbone call, instead of ``(B, grid, grid, C, p, p)``.

    Returns:
        Patch ``(b, i, j)`` is ``x[b, :, o + i*s : o + i*s + p, o + j*s : o + j*s + p]``.
    """
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(x.shape)}")
    g, p, s, o = layout.grid, layout.patch, layout.stride, layout.offset
    if min(x.shape[-2:]) < o + layout.span:
        raise ValueError(f"a {g}x{g} grid of {p} px patches at stride {s} needs "
                         f"{o + layout.span} px, got images of {tuple(x.shape[-2:])}")
    x = x[..., o:o + layout.span, o:o + layout.span]
    tiles = x.unfold(2, p, s).unfold(3, p, s)              # (B, C, g, g, p, p)
    tiles = tiles.permute(0, 2, 3, 1, 4, 5)                # (B, g, g, C, p, p)
    return tiles.reshape(-1, x.shape[1], p, p) if flatten else tiles


def rotate_grid(x: Tensor, direction: Direction) -> Tensor:
    """Turn a grid (last two dims) so that ``direction`` reads top to bottom.

    After rotation, row 0 is where the context starts: the top row for
    ``"top-down"``, the bottom row for ``"bottom-up"``, the left column for
    ``"left-right"`` and the right column for ``"right-left"``. A model that predicts
    rows below from rows above on the rotated grid therefore predicts in ``direction``
    on the original one (CPC v2, Hénaff et al. 2020, Sec. 4.1).

    Args:
        x: ``(..., G, G)``, e.g. patch encodings ``(B, D, G, G)`` or an index grid.
        direction: one of :data:`DIRECTIONS`.
    """
    if direction not in _ROT90:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    k = _ROT90[direction]
    return x if k == 0 else torch.rot90(x, k, dims=(-2, -1))


def random_subcrop_pad(patches: Tensor, size: int,
                       generator: torch.Generator | None = None) -> Tensor:
    """Keep a random ``size x size`` window of every patch, pasted at a random place
    of an otherwise zero patch of the original size.

    CPC (van den Oord et al. 2018, Sec. 3.3): "For each of the 64x64 crops we randomly
    take a 60x60 subcrop and pad them back to a 64x64 image." Where the sub-crop goes
    is not specified; it is placed at an independent random position here, so the
    patch is also shifted by up to ``patch - size`` pixels. Every patch draws its own
    window and position.

    Args:
        patches: ``(N, C, p, p)``; zero is the fill value (the mean after normalisation).
        size: side of the kept window, ``1 <= size <= p`` (``p`` returns the input).
        generator: optional random generator.

    Returns:
        ``(N, C, p, p)``.
    """
    n, _, p, _ = patches.shape
    if not 1 <= size <= p:
        raise ValueError(f"sub-crop size must be in [1, {p}], got {size}")
    if size == p:
        return patches
    dev = patches.device
    crop = torch.randint(0, p - size + 1, (n, 2), device=dev, generator=generator)
    paste = torch.randint(0, p - size + 1, (n, 2), device=dev, generator=generator)
    pos = torch.arange(p, device=dev).view(1, 1, p)
    start = paste.unsqueeze(-1)                                           # (N, 2, 1)
    src = (pos - start + crop.unsqueeze(-1)).clamp(0, p - 1)              # (N, 2, p)
    inside = (pos >= start) & (pos < start + size)                       # (N, 2, p)
    rows, cols = src[:, 0], src[:, 1]                                     # (N, p)
    idx = torch.arange(n, device=dev).view(n, 1, 1)
    out = patches[idx, :, rows.unsqueeze(-1), cols.unsqueeze(1)]          # (N, p, p, C)
    mask = (inside[:, 0].unsqueeze(-1) & inside[:, 1].unsqueeze(1)).unsqueeze(-1)
    return (out * mask).permute(0, 3, 1, 2).contiguous()


def drop_colour_channels(patches: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keep one random colour channel of every patch and zero the other two.

    CPC v2 (Hénaff et al. 2019, Sec. 4.1) augments each patch with "color dropping",
    which "randomly drops two of the three color channels in each patch". The dropped
    channels are set to 0, the mean after normalisation. Every patch draws its own kept
    channel.

    Args:
        patches: ``(N, 3, p, p)``, normalised.
        generator: optional random generator.

    Returns:
        ``(N, 3, p, p)`` with one non-zero channel per patch.
    """
    n, c = patches.shape[:2]
    if c != 3:
        raise ValueError(f"colour dropping needs 3-channel patches, got {c} channels")
    keep = torch.randint(0, 3, (n,), device=patches.device, generator=generator)  # (N,)
    mask = torch.arange(3, device=patches.device).view(1, 3) == keep.view(n, 1)  # (N, 3)
    return patches * mask.view(n, 3, 1, 1).to(patches.dtype)


def random_flip_patches(patches: Tensor, prob: float = 0.5,
                        generator: torch.Generator | None = None) -> Tensor:
    """Mirror every patch left to right with probability ``prob``, independently.

    CPC v2 (Hénaff et al. 2019, Sec. 4.1) adds random horizontal flips to its
    patch-based augmentation.

    Args:
        patches: ``(N, C, p, p)``.
        prob: probability that a patch is flipped.
        generator: optional random generator.
    """
    n = patches.shape[0]
    flip = torch.rand(n, device=patches.device, generator=generator) < prob  # (N,)
    return torch.where(flip.view(n, 1, 1, 1), patches.flip(-1), patches)
