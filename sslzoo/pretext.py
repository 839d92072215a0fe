"""Building blocks of the pretext tasks that predict a transformation of the image.

* :class:`Rotations`: all four 90-degree rotations of a batch and their labels (Gidaris
  et al., "Unsupervised Representation Learning by Predicting Image Rotations", ICLR
  2018. https://arxiv.org/abs/1803.07728).
* :func:`permutation_set`, :func:`load_permutations`, :func:`hamming_distances`,
  :func:`min_hamming_distance`, :func:`extract_tiles`, :func:`normalize_tiles`,
  :func:`drop_colour` and :class:`JigsawPuzzle`: the jigsaw
  puzzle of Noroozi & Favaro, "Unsupervised Learning of Visual Representations by
  Solving Jigsaw Puzzles", ECCV 2016. https://arxiv.org/abs/1603.09246

Like every augment, these draw their random parameters per sample and apply them to the
whole batch on its device; the parameters (rotation index, permutation index) are the
labels the method learns to predict.
"""
from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from sslzoo.augment import Augment
from sslzoo.errors import ConfigError

PermutationCriterion = Literal["min", "mean"]
ColourDrop = Literal["grayscale", "projection"]

# Up to 9 tiles every permutation is a candidate (9! = 362880); beyond that a fixed-seed
# sample of this many random permutations is the candidate pool.
_MAX_CANDIDATES = math.factorial(9)


def accuracy(logits: Tensor, target: Tensor) -> Tensor:
    """Top-1 accuracy of ``logits`` ``(N, K)`` against class indices ``target`` ``(N,)``."""
    return (logits.argmax(dim=1) == target).float().mean()


class Rotations(Augment):
    """Every image rotated by 0, 90, 180 and 270 degrees, labelled 0, 1, 2, 3.

    Gidaris et al. (ICLR 2018, Sec. 3.1, implementation details) found training
    clearly better when the network is fed all four rotated copies of an image
    simultaneously rather than one randomly sampled rotation. Label ``k`` is
    ``torch.rot90(x, k, dims=(-2, -1))``, i.e. ``k`` quarter turns counter-clockwise,
    the rotation the official code (``rotate_img``) applies for ``90 * k`` degrees.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # x: (B, C, S, S) -> views (4B, C, S, S), labels (4B,): rotation-major order
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rotations need square images, got {tuple(x.shape[-2:])}")
        views = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
        labels = torch.arange(4, device=x.device).repeat_interleave(len(x))
        return views, labels


# ----------------------------------------------------------------------------- jigsaw

def hamming_distances(perms: Tensor | np.ndarray) -> Tensor:
    """Pairwise Hamming distances: positions at which two permutations differ.

    Args:
        perms: ``(N, T)`` permutations of ``range(T)``.

    Returns:
        ``(N, N)`` long tensor; zero on the diagonal.
    """
    p = torch.as_tensor(np.asarray(perms) if not isinstance(perms, Tensor) else perms)
    return (p[:, None, :] != p[None, :, :]).sum(-1)         # (N, N)


def min_hamming_distance(perms: Tensor | np.ndarray) -> int:
    """The smallest Hamming distance between two different permutations of the set
    (the "minimum hamming distance" Noroozi & Favaro report for their sets)."""
    d = hamming_distances(perms)
    if len(d) < 2:
        raise ValueError("the minimum distance needs at least two permutations")
    d.fill_diagonal_(d.shape[1] + 1)
    return int(d.min())


def permutation_set(n: int, num_tiles: int = 9, seed: int = 0,
                    criterion: PermutationCriterion = "min") -> Tensor:
    """``n`` permutations of ``num_tiles`` tiles chosen greedily for large Hamming distance.

    Noroozi & Favaro, Algorithm 1: start from a random permutation, then repeatedly add
    the candidate that maximises a distance to the permutations chosen so far.

    * ``criterion="mean"`` is the paper's rule as written, and what the PyTorch port's
      ``select_permutations.py`` runs: the largest *average* distance (``1^T D``). Nothing stops it from adding a
      permutation close to one already chosen: for ``n=100`` its minimum distance is 2,
      below that of a random set (about 3).
    * ``criterion="min"`` (default) maximises the *minimum* distance first and breaks
      ties by the average. It keeps the same average (8.08 for ``n=100``) and raises the
      minimum to 6, which is what the paper argues for: permutations far apart make the
      task unambiguous.

    Every one of the ``9!`` permutations is a candidate for up to 9 tiles (the greedy
    search takes about 0.1 s for ``n=100`` and 1 s for ``n=1000``); for more tiles a
    fixed-seed sample of 362880 random permutations (repeats skipped) is the candidate
    pool. The result
    depends only on the arguments and is cached for the process.

    Args:
        n: number of permutations (the puzzle's classes).
        num_tiles: tiles per puzzle (9 for the 3x3 grid).
        seed: seed of the first permutation (and of the candidate pool).
        criterion: ``"min"`` or ``"mean"``, see above.

    Returns:
        ``(n, num_tiles)`` long tensor; row ``i`` is permutation ``i`` (a fresh copy).

    Raises:
        ConfigError: ``n`` is not between 1 and ``num_tiles!``, or the criterion is unknown.
    """
    if num_tiles < 2:
        raise ConfigError(f"a jigsaw puzzle needs at least 2 tiles, got {num_tiles}")
    available = math.factorial(num_tiles) if num_tiles <= 9 else _MAX_CANDIDATES
    if not 1 <= n <= available:
        raise ConfigError(f"cannot choose {n} permutations of {num_tiles} tiles: there are "
                          f"{available} candidates; set --set num_permutations=100")
    if criterion not in ("min", "mean"):
        raise ConfigError(f"criterion must be 'min' or 'mean', got {criterion!r}")
    return torch.from_numpy(_permutation_set(n, num_tiles, seed, criterion).astype(np.int64))


@functools.lru_cache(maxsize=16)
def _permutation_set(n: int, num_tiles: int, seed: int, criterion: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cand = _candidates(num_tiles, rng)                       # (M, T) int8, may repeat
    cand_t = np.ascontiguousarray(cand.T)                    # (T, M): fast column compares
    m = len(cand)
    total = np.zeros(m, np.int32)                            # sum of distances to the set
    nearest = np.full(m, num_tiles, np.int32)                # min distance to the set
    taken = np.zeros(m, bool)
    dist = np.empty(m, np.int32)
    weight = num_tiles * n + 1                               # > any total: min first
    chosen, j = [], int(rng.integers(m))
    for _ in range(n):
        chosen.append(j)
        taken[j] = True
        dist[:] = num_tiles
        for k, v in enumerate(cand[j]):
            dist -= cand_t[k] == v                           # Hamming distance to cand[j]
        taken |= dist == 0                                   # repeats of the sampled pool
        total += dist
        np.minimum(nearest, dist, out=nearest)
        score = total.astype(np.int64) if criterion == "mean" else nearest * weight + total
        score[taken] = -1
        j = int(score.argmax())                              # first maximum: deterministic
    out = cand[chosen]
    out.setflags(write=False)
    return out


def _candidates(num_tiles: int, rng: np.random.Generator) -> np.ndarray:
    if num_tiles <= 9:
        return _all_permutations(num_tiles)
    return rng.permuted(np.tile(np.arange(num_tiles, dtype=np.int8), (_MAX_CANDIDATES, 1)), axis=1)


@functools.lru_cache(maxsize=2)
def _all_permutations(num_tiles: int) -> np.ndarray:
    out = np.array(list(itertools.permutations(range(num_tiles))), dtype=np.int8)
    out.setflags(write=False)
    return out


def jigsaw_sizes(image_size: int, grid: int = 3, tile_ratio: float = 64 / 75) -> tuple[int, int]:
    """Cell and tile sizes for a ``grid x grid`` puzzle on ``image_size`` images.

    The paper cuts a 225-pixel crop into 75-pixel cells and takes a 64-pixel tile in
    each: ``cell = image_size // grid`` and ``tile = round(cell * tile_ratio)``.
    """
    cell = image_size // grid
    if cell < 1:
        raise ConfigError(f"images of {image_size} px are too small for a {grid}x{grid} "
                          "puzzle; use a larger --image-size or --set grid=2")
    return cell, min(cell, max(1, round(cell * tile_ratio)))


def extract_tiles(images: Tensor, grid: int, tile: int, offsets: Tensor | None = None,
                  origins: Tensor | None = None, channel_jitter: int = 0,
                  cell: int | None = None) -> tuple[Tensor, Tensor]:
    """Cut every image into a ``grid x grid`` array of cells and take one tile per cell.

    Noroozi & Favaro cut a 225-pixel crop into 75-pixel cells and pick a 64-pixel tile
    at a random place in each, so neighbouring tiles are separated by a random gap and
    cannot be matched by their edges. The cells are ``cell`` pixels (default
    ``min(H, W) // grid``); the grid is centred unless ``origins`` places it.

    Args:
        images: ``(B, C, H, W)``.
        grid: cells per side.
        tile: tile side, at most ``S // grid``.
        offsets: ``(B, grid*grid, 2)`` (y, x) offsets of each tile inside its cell, each
            in ``[0, cell - tile]``; drawn uniformly per sample and cell when ``None``.
        origins: ``(B, 2)`` top-left (row, column) of each sample's grid; centred when
            ``None``.
        channel_jitter: each colour channel of each tile is taken from a position moved
            by up to this many pixels in each direction, drawn per sample, tile and
            channel (kept inside the image): the paper's defence against chromatic
            aberration.
        cell: cell side in pixels; the grid must fit in the image.

    Returns:
        tiles ``(B, grid*grid, C, tile, tile)`` in row-major cell order, and their
        top-left pixel positions ``(B, grid*grid, 2)`` as (row, column) in ``images``
        (before the channel jitter).
    """
    b, c, h, w = images.shape
    cell = min(h, w) // grid if cell is None else min(cell, min(h, w) // grid)
    if not 1 <= tile <= cell:
        raise ValueError(f"tile size {tile} must be between 1 and the cell size {cell}")
    n, dev = grid * grid, images.device
    if offsets is None:
        offsets = torch.randint(0, cell - tile + 1, (b, n, 2), device=dev)
    if origins is None:
        origins = torch.tensor([(h - grid * cell) // 2, (w - grid * cell) // 2], device=dev)
    origins = origins.reshape(-1, 1, 2)                                  # (B|1, 1, 2)
    cells = torch.stack(torch.meshgrid(torch.arange(grid, device=dev),
                                       torch.arange(grid, device=dev), indexing="ij"), -1)
    positions = origins + cells.reshape(n, 2) * cell + offsets          # (B, n, 2)
    start = positions[:, :, None, :].expand(b, n, c, 2)                  # (B, n, C, 2)
    if channel_jitter > 0:
        shift = torch.randint(-channel_jitter, channel_jitter + 1, (b, n, c, 2), device=dev)
        limit = torch.tensor([h - tile, w - tile], device=dev)
        start = torch.minimum((start + shift).clamp_min(0), limit)
    ar = torch.arange(tile, device=dev)
    rows = start[..., 0, None] + ar                                      # (B, n, C, t)
    cols = start[..., 1, None] + ar                                      # (B, n, C, t)
    bidx = torch.arange(b, device=dev).view(b, 1, 1, 1, 1)
    cidx = torch.arange(c, device=dev).view(1, 1, c, 1, 1)
    tiles = images[bidx, cidx, rows[..., :, None], cols[..., None, :]]  # (B, n, C, t, t)
    return tiles.contiguous(), positions


def normalize_tiles(tiles: Tensor, eps: float = 1e-5, per_channel: bool = True) -> Tensor:
    """Zero mean and unit standard deviation per tile (and per channel).

    Noroozi & Favaro normalise the mean and standard deviation of each tile
    independently, so that low-level statistics shared by neighbouring tiles cannot
    solve the puzzle. The PyTorch port of the official code (``JigsawImageLoader``)
    normalises each colour channel of a tile on its own, so a colour cast shared by
    neighbouring tiles is removed too; ``per_channel=False`` takes one mean and one
    standard deviation over all channels and pixels of the tile. Population standard
    deviation; ``eps`` keeps flat tiles at 0 (the port divides those by 1).

    Args:
        tiles: ``(..., C, t, t)``.
    """
    dims = (-2, -1) if per_channel else (-3, -2, -1)
    mean = tiles.mean(dim=dims, keepdim=True)
    var = tiles.var(dim=dims, unbiased=False, keepdim=True)
    return (tiles - mean) / (var + eps).sqrt()


#: The green-magenta axis that colour projection removes (Doersch et al., ICCV 2015).
GREEN_MAGENTA = (-1.0, 2.0, -1.0)


def drop_colour(images: Tensor, mode: ColourDrop, prob: float) -> Tensor:
    """Remove colour cues from a random share ``prob`` of the images ``(B, 3, H, W)``.

    Noroozi & Favaro counter chromatic aberration (a colour shift that grows towards
    the image borders and gives away a tile's position) with greyscale images and
    colour-channel jitter. ``mode="grayscale"`` replaces the image by its luma
    (ITU-R 601, as PIL's ``convert('L')`` that the PyTorch port applies to 30 % of the
    images); ``mode="projection"`` removes the green-magenta component of every pixel,
    the projection Doersch et al. introduced for the same shortcut.
    """
    if prob <= 0 or images.shape[1] != 3:
        return images
    if mode == "grayscale":
        luma = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
        dropped = torch.einsum("bchw,c->bhw", images, luma)[:, None].expand_as(images)
    elif mode == "projection":
        axis = torch.tensor(GREEN_MAGENTA, device=images.device, dtype=images.dtype)
        along = torch.einsum("bchw,c->bhw", images, axis) / axis.square().sum()
        dropped = images - along[:, None] * axis.view(1, 3, 1, 1)
    else:
        raise ConfigError(f"colour_drop must be 'grayscale' or 'projection', got {mode!r}")
    hit = torch.rand(len(images), device=images.device) < prob               # (B,)
    return torch.where(hit.view(-1, 1, 1, 1), dropped, images)


def load_permutations(path: str | Path, num_tiles: int = 9) -> Tensor:
    """A permutation set from a ``.npy`` file, e.g. the PyTorch port's ``permutations_*.npy``.

    Rows are permutations of ``0..T-1`` or of ``1..T`` (the port's files are 1-based
    and it subtracts 1 when the smallest entry is 1; both are accepted).

    Raises:
        ConfigError: the file is missing, unreadable, not ``(N, num_tiles)``, or a row
            is not a permutation.
    """
    path = Path(path)
    fix = "point --set permutations_file= at a .npy file of shape (N, 9)"
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ConfigError(f"permutations file {path} does not exist; {fix}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"permutations file {path} is not a .npy array ({exc}); {fix}") from None
    if array.ndim != 2 or array.shape[1] != num_tiles or not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"permutations file {path} must hold an (N, {num_tiles}) array of "
                          f"tile indices, got shape {array.shape}")
    perms = torch.from_numpy(array.astype(np.int64))
    if len(perms) and int(perms.min()) == 1:
        perms = perms - 1
    expected = torch.arange(num_tiles)
    bad = (perms.sort(dim=1).values != expected).any(dim=1).nonzero()
    if len(bad):
        raise ConfigError(f"row {int(bad[0])} of permutations file {path} is not a permutation "
                          f"of 0..{num_tiles - 1} (or 1..{num_tiles})")
    return perms


class Puzzle(NamedTuple):
    """A batch of jigsaw puzzles.

    Attributes:
        tiles: ``(B, T, C, t, t)``; position ``i`` holds the tile of cell
            ``permutations[labels[b], i]``.
        labels: ``(B,)`` index of the permutation in the set.
        positions: ``(B, T, 2)`` top-left (row, column) of each cell's tile in the
            input image, in cell order (before shuffling).
    """

    tiles: Tensor
    labels: Tensor
    positions: Tensor


class JigsawPuzzle(Augment):
    """Tiles of a ``grid x grid`` puzzle shuffled by a random permutation from a set.

    The permutation set is a persistent buffer, so a checkpoint holds the classes the
    classifier was trained on. The puzzle is cut from a square window of side
    ``round(window * S)`` at a random place inside each image (the paper's 225-pixel
    crop of a 256-pixel image: ``window = 225/256``), so no tile ever holds padding;
    sizes follow the window: ``cell = window_px // grid`` and
    ``tile = round(cell * tile_ratio)`` (64/75 in the paper).

    Args:
        permutations: ``(N, grid*grid)`` permutation set (:func:`permutation_set`).
        grid: cells per side.
        tile_ratio: tile side relative to the cell side.
        normalize: apply :func:`normalize_tiles` to every tile.
        per_channel: normalise each colour channel of a tile on its own.
        window: side of the puzzle's window as a share of the image side.
        colour_drop: ``"grayscale"`` or ``"projection"`` (:func:`drop_colour`).
        colour_drop_prob: share of the puzzles whose colour is dropped.
        channel_jitter: per-channel spatial jitter of the tiles, in pixels.
    """

    def __init__(self, permutations: Tensor, grid: int = 3, tile_ratio: float = 64 / 75,
                 normalize: bool = True, *, per_channel: bool = True, window: float = 1.0,
                 colour_drop: ColourDrop = "grayscale", colour_drop_prob: float = 0.0,
                 channel_jitter: int = 0) -> None:
        super().__init__()
        if permutations.ndim != 2 or permutations.shape[1] != grid * grid:
            raise ValueError(f"permutations must be (N, {grid * grid}), "
                             f"got {tuple(permutations.shape)}")
        if not 0 < window <= 1:
            raise ConfigError(f"window must be in (0, 1], got {window}; set it with "
                              "--set window=0.879")
        self.grid, self.tile_ratio, self.normalize = grid, tile_ratio, normalize
        self.per_channel, self.window = per_channel, window
        self.colour_drop, self.colour_drop_prob = colour_drop, colour_drop_prob
        self.channel_jitter = channel_jitter
        self.register_buffer("permutations", permutations.long().clone())

    @property
    def min_hamming(self) -> int:
        """Minimum Hamming distance between two permutations of the set."""
        return min_hamming_distance(self.permutations.cpu())

    def window_size(self, image_size: int) -> int:
        """Side in pixels of the window the puzzle is cut from."""
        return max(1, min(image_size, round(self.window * image_size)))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Puzzle:
        # x: (B, C, H, W) -> Puzzle(tiles (B, T, C, t, t), labels (B,), positions (B, T, 2))
        b, dev = len(x), x.device
        h, w = x.shape[-2:]
        side = self.window_size(min(h, w))
        cell, tile = jigsaw_sizes(side, self.grid, self.tile_ratio)
        span = self.grid * cell                                          # <= side
        high = torch.tensor([h - span + 1, w - span + 1], device=dev)
        origins = (torch.rand(b, 2, device=dev) * high).long()           # (B, 2)
        x = drop_colour(x, self.colour_drop, self.colour_drop_prob)
        tiles, positions = extract_tiles(x, self.grid, tile, origins=origins,
                                         channel_jitter=self.channel_jitter, cell=cell)
        if labels is None:
            labels = torch.randint(0, len(self.permutations), (b,), device=dev)
        order = self.permutations[labels]                                # (B, T)
        shuffled = tiles[torch.arange(b, device=dev)[:, None], order]
        if self.normalize:
            shuffled = normalize_tiles(shuffled, per_channel=self.per_channel)
        return Puzzle(shuffled, labels, positions)
