"""The ``photos`` data set: colour crops of bundled photographs, split without leaks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sslzoo import photos

pytest.importorskip("skimage", reason="the photos data set needs scikit-image "
                                      "(pip install 'sslzoo[photos]')")


def _overlap(a, b) -> int:
    (ta, la, sa), (tb, lb, sb) = a, b
    h = max(0, min(ta + sa, tb + sb) - max(ta, tb))
    w = max(0, min(la + sa, lb + sb) - max(la, lb))
    return h * w


@pytest.mark.parametrize("shape", [(427, 640), (512, 512), (300, 451), (1411, 1411)])
def test_no_test_crop_shares_a_pixel_with_a_training_crop(shape):
    train = photos.crop_boxes(*shape, "train", 120, np.random.default_rng(0))
    test = photos.crop_boxes(*shape, "test", 40, np.random.default_rng(1))
    assert all(_overlap(a, b) == 0 for a in test for b in train)
    for top, left, side in train + test:   # inside the photo
        assert top >= 0 and left >= 0 and top + side <= shape[0] and left + side <= shape[1]


def test_test_cells_are_a_quarter_of_the_grid_spread_over_rows_and_columns():
    cells = [(r, c) for r in range(photos.CELLS) for c in range(photos.CELLS) if photos.is_test_cell(r, c)]
    assert len(cells) == photos.CELLS ** 2 // 4
    assert {r for r, _ in cells} == {c for _, c in cells} == set(range(photos.CELLS))


def test_photos_loads_ten_colour_classes_through_the_registry():
    from sslzoo.data import load_data

    train, test = load_data("photos", "train", 16), load_data("photos", "test", 16)
    assert train.images.shape == (1200, 3, 16, 16) and test.images.shape == (400, 3, 16, 16)
    assert torch.bincount(train.labels).tolist() == [120] * 10
    assert torch.bincount(test.labels).tolist() == [40] * 10
    assert len(train.classes) == 10 and train.classes == test.classes
    rgb = train.images.float()
    assert (rgb[:, 0] - rgb[:, 1]).abs().mean() > 5   # colour, not grey


def test_no_test_image_is_a_copy_of_a_training_image():
    from sslzoo.data import load_data

    train = load_data("photos", "train", 16).images.flatten(1).float()
    test = load_data("photos", "test", 16).images.flatten(1).float()
    nearest = torch.cdist(test, train).min(dim=1).values / train.shape[1] ** 0.5   # RMS
    assert (nearest > 0.5).all()


def test_missing_scikit_image_says_what_to_install(monkeypatch):
    import builtins

    from sslzoo.errors import DataError

    real_import = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name == "skimage":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    photos.load_photos.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_skimage)
    with pytest.raises(DataError, match=r"pip install 'sslzoo\[photos\]'"):
        photos.load_photos()
    monkeypatch.undo()
    photos.load_photos.cache_clear()
