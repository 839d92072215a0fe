"""Write labelled colour crops of scikit-learn's two sample photographs to a folder,
split by disjoint regions.

Each photo (``china.jpg``, ``flower.jpg``) is cut into the grid of
:mod:`sslzoo.photos`; crops of the test cells go to ``OUT/test/<label>/``, crops of the
other cells to ``OUT/train/<label>/``, so no test crop shares a pixel with a training
crop (an earlier version cut both splits from the same places: every test crop shared
at least half its pixels with a training crop). The label is the photo and the quadrant
of the photo the crop lies in (each quadrant holds one test cell and three training
cells)::

    python benchmarks/photo_crops.py /tmp/photos
    sslzoo train colorization --data /tmp/photos ...

The registered ``photos`` data set (``--data photos``) is the larger version of the same
idea, with ten photographs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

from sslzoo.photos import CELLS, crop_boxes


def write_crops(out: Path, *, per_split: dict[str, int] | None = None, seed: int = 0) -> int:
    """Write the crops of both splits; returns the number written."""
    per_split = per_split or {"train": 480, "test": 160}
    photos = load_sample_images()
    count = 0
    for split, n in per_split.items():
        rng = np.random.default_rng([seed, split == "test"])
        for name, image in zip(photos.filenames, photos.images):
            h, w = image.shape[:2]
            for i, (top, left, side) in enumerate(crop_boxes(h, w, split, n, rng)):
                row, col = (top // (h // CELLS)) * 2 // CELLS, (left // (w // CELLS)) * 2 // CELLS
                folder = out / split / f"{Path(name).stem}-{row}{col}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image[top:top + side, left:left + side]).save(folder / f"{i:04d}.png")
                count += 1
    return count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--train", type=int, default=480, help="training crops per photo")
    p.add_argument("--test", type=int, default=160, help="test crops per photo")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    n = write_crops(args.out, per_split={"train": args.train, "test": args.test}, seed=args.seed)
    print(f"wrote {n} crops to {args.out}")


if __name__ == "__main__":
    main()
