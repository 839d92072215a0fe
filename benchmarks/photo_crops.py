"""Write a small labelled colour image folder from scikit-learn's two sample photographs.

The embedded digits are greyscale, so colorization has nothing to learn from them. This
folder is the offline stand-in used in ``RESULTS.md``: random square crops of
``china.jpg`` and ``flower.jpg`` (bundled with scikit-learn), labelled by the photo and
the cell of a ``--grid`` x ``--grid`` layout their centre falls in (sky, roof, petals,
leaves, ...), one subfolder per label, so that ``sslzoo`` reads it as a labelled folder
and splits it 80/20::

    python benchmarks/photo_crops.py /tmp/photos
    python benchmarks/quality.py colorization --data /tmp/photos --backbone small_resnet10
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images


def write_crops(out: Path, *, size: int = 64, per_label: int = 150, grid: int = 2,
                seed: int = 0) -> int:
    """Write ``per_label`` crops per (photo, cell) label; returns the number written."""
    rng = np.random.default_rng(seed)
    photos = load_sample_images()
    count = 0
    for name, image in zip(photos.filenames, photos.images):
        photo = Path(name).stem
        h, w = image.shape[:2]
        for row in range(grid):
            for col in range(grid):
                folder = out / f"{photo}-{row}{col}"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_label):
                    # a crop centre inside the cell, the crop itself inside the photo
                    cy = rng.uniform(row * h / grid, (row + 1) * h / grid)
                    cx = rng.uniform(col * w / grid, (col + 1) * w / grid)
                    top = int(np.clip(cy - size / 2, 0, h - size))
                    left = int(np.clip(cx - size / 2, 0, w - size))
                    crop = image[top:top + size, left:left + size]
                    Image.fromarray(crop).save(folder / f"{i:04d}.png")
                    count += 1
    return count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=64, help="crop side in pixels")
    p.add_argument("--per-label", type=int, default=150)
    p.add_argument("--grid", type=int, default=2, help="cells per side of each photo")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    n = write_crops(args.out, size=args.size, per_label=args.per_label, grid=args.grid,
                    seed=args.seed)
    print(f"wrote {n} crops to {args.out}")


if __name__ == "__main__":
    main()
