from __future__ import annotations

import pytest
import torch

from sslzoo.errors import ConfigError
from sslzoo.patches import (DIRECTIONS, PatchGrid, drop_colour_channels, extract_patches,
                            half_overlap_grid, random_flip_patches, random_subcrop_pad,
                            rotate_grid)


@pytest.mark.parametrize("size, patch", [(32, 8), (64, 16), (96, 24), (224, 56), (256, 64)])
def test_half_overlap_grid_scales_cpc_layout(size, patch):
    # CPC: 256 px -> 7x7 patches of 64 px at stride 32; other sizes scale with S/8.
    layout = half_overlap_grid(size, 7)
    assert (layout.grid, layout.patch, layout.stride, layout.offset) == (7, patch, patch // 2, 0)
    assert layout.span == size


def test_half_overlap_grid_centres_when_size_does_not_divide():
    layout = half_overlap_grid(30, 7)  # 30 // 8 = 3: 6 px patches cover 24 px, 3 px margins
    assert (layout.patch, layout.stride, layout.offset, layout.span) == (6, 3, 3, 24)
    assert layout.offset + layout.span <= 30


def test_half_overlap_grid_rejects_images_smaller_than_the_grid():
    with pytest.raises(ConfigError, match="grid"):
        half_overlap_grid(6, 7)


@pytest.mark.parametrize("layout", [PatchGrid(7, 8, 4), PatchGrid(3, 6, 3, offset=2),
                                    PatchGrid(2, 5, 5)])
def test_extract_patches_matches_slicing(layout):
    x = torch.randn(2, 3, 33, 33)
    tiles = extract_patches(x, layout)
    flat = extract_patches(x, layout, flatten=True)
    g, p, s, o = layout.grid, layout.patch, layout.stride, layout.offset
    assert tiles.shape == (2, g, g, 3, p, p)
    assert flat.shape == (2 * g * g, 3, p, p)
    for b in range(2):
        for i in range(g):
            for j in range(g):
                ref = x[b, :, o + i * s:o + i * s + p, o + j * s:o + j * s + p]
                assert torch.equal(tiles[b, i, j], ref)
                assert torch.equal(flat[(b * g + i) * g + j], ref)


def test_extract_patches_rejects_too_small_images():
    with pytest.raises(ValueError, match="needs"):
        extract_patches(torch.zeros(1, 3, 16, 16), PatchGrid(7, 8, 4))


# Where a step of one row down in the rotated grid goes on the original grid.
STEP = {"top-down": (1, 0), "bottom-up": (-1, 0), "left-right": (0, 1), "right-left": (0, -1)}
START = {"top-down": ("row", 0), "bottom-up": ("row", 4), "left-right": ("col", 0),
         "right-left": ("col", 4)}


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_rotate_grid_turns_each_direction_top_down(direction):
    g = 5
    index = torch.arange(g * g).view(1, g, g)  # original position i*g + j
    rot = rotate_grid(index, direction)[0]
    pos = lambda n: divmod(int(n), g)  # noqa: E731
    axis, line = START[direction]
    first_row = {pos(n)[0 if axis == "row" else 1] for n in rot[0]}
    assert first_row == {line}  # the context starts at the named border
    di, dj = STEP[direction]
    for r in range(g - 1):
        for c in range(g):
            (i, j), (i2, j2) = pos(rot[r, c]), pos(rot[r + 1, c])
            assert (i2 - i, j2 - j) == (di, dj)


def test_rotate_grid_keeps_leading_dims_and_rejects_unknown_direction():
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(rotate_grid(x, "top-down"), x)
    assert rotate_grid(x, "left-right").shape == x.shape
    with pytest.raises(ValueError, match="direction"):
        rotate_grid(x, "diagonal")  # type: ignore[arg-type]


def test_random_subcrop_pad_keeps_one_window_per_patch_at_random_places():
    torch.manual_seed(0)
    p, size, n = 8, 6, 200
    patches = torch.rand(n, 2, p, p) + 1  # strictly positive, so zeros are padding
    out = random_subcrop_pad(patches, size)
    assert out.shape == patches.shape
    places, shifts = set(), set()
    for k in range(n):
        rows = out[k, 0].ne(0).any(1).nonzero().flatten()
        cols = out[k, 0].ne(0).any(0).nonzero().flatten()
        assert len(rows) == len(cols) == size
        assert rows.diff().eq(1).all() and cols.diff().eq(1).all()
        kept = out[k, :, rows[0]:rows[0] + size, cols[0]:cols[0] + size]
        assert kept.ne(0).all()
        # the kept window is a contiguous size x size crop of the input patch
        found = [(a, b) for a in range(p - size + 1) for b in range(p - size + 1)
                 if torch.equal(kept, patches[k, :, a:a + size, b:b + size])]
        assert found
        places.add((int(rows[0]), int(cols[0])))
        shifts.add((int(rows[0]) - found[0][0], int(cols[0]) - found[0][1]))
    assert len(places) == 9 and len(shifts) > 9  # per-patch windows and positions


def test_random_subcrop_pad_full_size_is_identity_and_checks_size():
    x = torch.rand(3, 1, 4, 4)
    assert torch.equal(random_subcrop_pad(x, 4), x)
    with pytest.raises(ValueError):
        random_subcrop_pad(x, 5)


def test_drop_colour_channels_keeps_one_random_channel_per_patch():
    torch.manual_seed(0)
    patches = torch.rand(300, 3, 4, 4) + 0.1
    out = drop_colour_channels(patches)
    kept = (out != 0).flatten(2).all(-1)                        # (N, 3)
    assert torch.equal(kept.sum(1), torch.ones(300, dtype=torch.long))
    channel = kept.float().argmax(1)
    torch.testing.assert_close(out[torch.arange(300), channel],
                               patches[torch.arange(300), channel])
    counts = torch.bincount(channel, minlength=3)
    assert counts.min() > 60                                     # each channel is drawn
    with pytest.raises(ValueError, match="3-channel"):
        drop_colour_channels(torch.rand(2, 1, 4, 4))


def test_random_flip_patches_mirrors_about_half_of_them_independently():
    torch.manual_seed(0)
    patches = torch.rand(400, 2, 3, 3)
    out = random_flip_patches(patches)
    same = (out == patches).flatten(1).all(1)
    mirrored = (out == patches.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 140 < int(mirrored.sum()) < 260
    assert torch.equal(random_flip_patches(patches, prob=0.0), patches)
