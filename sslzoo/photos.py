"""``photos``: labelled colour crops of the photographs bundled with scikit-image and
scikit-learn, split by disjoint regions so that no test crop shares a pixel with a
training crop.

The ten colour photographs (astronaut, cat, coffee, deep field, stained tissue,
motorcycle, retina, rocket from scikit-image's ``skimage/data``; the temple and the flower
of scikit-learn's ``load_sample_images``) are each one class. Every photo is cut into a
``CELLS x CELLS`` grid; the cells with ``(row + col) % 4 == 0`` (4 of 16, spread over the
photo) hold the test crops, the other 12 the training crops, and every crop lies inside a
single cell. A test crop therefore comes from a part of the photo that training never
saw: the task is to recognise a photo's textures and colours in a new region, not to
retrieve a near-duplicate.

Needs scikit-image: ``pip install 'sslzoo[photos]'``.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sslzoo.errors import DataError

if TYPE_CHECKING:
    from sslzoo.data import ImageData

#: scikit-image's bundled colour photographs (file names in ``skimage/data``).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg",
                  "ihc.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg")
CELLS = 4
#: Crops per photo in each split (3 training cells for each test cell).
CROPS = {"train": 120, "test": 40}


def is_test_cell(row: int, col: int) -> bool:
    """Whether grid cell ``(row, col)`` holds test crops (4 of the 16 cells)."""
    return (row + col) % 4 == 0


@functools.lru_cache(maxsize=1)
def load_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """``(name, (H, W, 3) uint8)`` for the ten photographs, from the installed packages.

    Raises:
        DataError: scikit-image is not installed (it says what to install).
    """
    try:
        import skimage
    except ImportError:
        raise DataError("the photos data set reads the photographs bundled with scikit-image; "
                        "install it with pip install 'sslzoo[photos]' (or pip install "
                        "scikit-image)") from None
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder = Path(skimage.__file__).parent / "data"
    photos = []
    for name in SKIMAGE_PHOTOS:
        path = folder / name
        if not path.exists():
            raise DataError(f"{path} is missing from the installed scikit-image; reinstall it "
                            "(pip install --force-reinstall scikit-image)")
        with Image.open(path) as img:
            photos.append((Path(name).stem, np.asarray(img.convert("RGB"))))
    bunch = load_sample_images()
    photos += [(Path(f).stem, img) for f, img in zip(bunch.filenames, bunch.images)]
    return tuple(photos)


def crop_boxes(height: int, width: int, split: str, count: int,
               rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """``count`` square crops ``(top, left, side)`` inside the cells of ``split``.

    The side is the smaller cell dimension; crops are spread evenly over the split's
    cells, at random positions inside each.
    """
    ch, cw = height // CELLS, width // CELLS
    side = min(ch, cw)
    cells = [(r, c) for r in range(CELLS) for c in range(CELLS)
             if is_test_cell(r, c) == (split == "test")]
    boxes = []
    for i in range(count):
        r, c = cells[i % len(cells)]
        top = r * ch + int(rng.integers(0, ch - side + 1))
        left = c * cw + int(rng.integers(0, cw - side + 1))
        boxes.append((top, left, side))
    return boxes


def photos(split: str, image_size: int, root: str | Path | None = None,
           download: bool = False) -> ImageData:
    """Crops of ten bundled colour photographs, one class per photo (see module docs):
    1,200 training and 400 test crops, resized to ``image_size``."""
    from sslzoo.data import ImageData, SPLITS, resize_square

    if split not in SPLITS:
        raise DataError(f"photos has no split {split!r}; choose from {', '.join(SPLITS)}")
    rng = np.random.default_rng(SPLITS.index(split))
    images, labels, names = [], [], []
    for label, (name, photo) in enumerate(load_photos()):
        names.append(name)
        chw = torch.from_numpy(np.array(photo)).permute(2, 0, 1)  # (3, H, W)
        for top, left, side in crop_boxes(photo.shape[0], photo.shape[1], split, CROPS[split], rng):
            crop = chw[None, :, top:top + side, left:left + side]
            images.append(resize_square(crop, image_size)[0])
            labels.append(label)
    return ImageData(torch.stack(images), torch.tensor(labels), names, "photos")
