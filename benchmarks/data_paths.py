"""Images/s of the three folder data paths: streaming, decoded cache, in memory.

Writes ``--images`` JPEGs (random ``--source-size`` px crops of scikit-learn's two sample
photographs, so they decode like photographs), then reads them at ``--image-size`` px
through the loader the engine would use:

* **streaming**: :class:`~sslzoo.data.StreamingDataset` in ``--num-workers`` DataLoader
  workers, every image decoded and resized every epoch;
* **cached**: the decoded cache (:mod:`sslzoo.cache`), built once (its build time is
  reported apart) and then read from the memory-mapped file by the same workers;
* **in memory**: the folder decoded once into an :class:`~sslzoo.data.ImageData` and
  served by :class:`~sslzoo.loaders.DeviceLoader`.

Each round runs one epoch of each path in turn (no model: the loader alone); the median
images/s over ``--rounds`` is reported.

    python benchmarks/data_paths.py --images 2000 --rounds 3
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

from sslzoo.data import load_folder
from sslzoo.loaders import make_loader


def write_jpegs(out: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` JPEG crops of ``size`` px from the sample photographs, flat in ``out``."""
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = photos[i % len(photos)]
        top = rng.integers(0, image.shape[0] - size)
        left = rng.integers(0, image.shape[1] - size)
        Image.fromarray(image[top:top + size, left:left + size]).save(out / f"{i:05d}.jpg",
                                                                      quality=90)


def epoch_rate(loader) -> float:
    start, n = time.perf_counter(), 0
    for images, _, _ in loader:
        n += len(images)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--source-size", type=int, default=256, help="side of the JPEG files")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jpegs"
        write_jpegs(folder, args.images, args.source_size)
        s = args.image_size
        streaming = load_folder(folder, "train", s, memory_budget=0)
        start = time.perf_counter()
        cached = load_folder(folder, "train", s, memory_budget=0, cache_dir=Path(tmp) / "cache")
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        in_memory = load_folder(folder, "train", s)
        decode_s = time.perf_counter() - start
        loaders = {name: make_loader(data, args.batch_size, "cpu", num_workers=args.num_workers)
                   for name, data in (("streaming", streaming), ("cached", cached),
                                      ("in memory", in_memory))}
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        for r in range(args.rounds):
            for name, loader in loaders.items():
                loader.set_epoch(r)
                rates[name].append(epoch_rate(loader))
    print(f"{args.images} JPEGs of {args.source_size} px read at {s} px, batch "
          f"{args.batch_size}, {args.num_workers} DataLoader workers, median of "
          f"{args.rounds} alternated epochs (loader only, CPU)")
    print("| path | images/s | one-off cost |")
    print("|---|---|---|")
    print(f"| streaming | {statistics.median(rates['streaming']):.0f} | none |")
    print(f"| cached | {statistics.median(rates['cached']):.0f} | build {build_s:.1f} s "
          f"({args.images / build_s:.0f} images/s), {args.images * 3 * s * s / 2 ** 20:.0f} MiB "
          "on disk |")
    print(f"| in memory | {statistics.median(rates['in memory']):.0f} | decode {decode_s:.1f} s, "
          f"{args.images * 3 * s * s / 2 ** 20:.0f} MiB of memory |")


if __name__ == "__main__":
    main()
