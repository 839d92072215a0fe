"""A decoded cache for image folders too large for memory.

Streaming decodes and resizes every image in every epoch. The cache does it once: the
folder's images, decoded and resized exactly as :func:`sslzoo.data.read_image` does,
go into one memory-mapped ``(N, 3, S, S)`` uint8 file that later epochs and later runs
read back. The page cache keeps what fits in memory; the rest is read from disk, which
costs far less than decoding.

The cache is keyed by the file list (paths in order), each file's size and modification
time, and the image size: adding, removing, replacing or touching a file, or asking for
another size, builds a new cache (and deletes the stale one of the same folder). The
array is written to a temporary file and renamed with its key when complete, so an
interrupted build is never mistaken for a cache.

Location: ``$SSLZOO_CACHE`` or ``~/.cache/sslzoo/decoded``, one subfolder per image folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from sslzoo.errors import DataError


def default_cache_dir() -> Path:
    """``$SSLZOO_CACHE`` or ``~/.cache/sslzoo/decoded``."""
    return Path(os.environ.get("SSLZOO_CACHE") or "~/.cache/sslzoo/decoded").expanduser()


def cache_key(files: Sequence[str | Path], image_size: int) -> str:
    """A digest of the file list, every file's size and mtime, and the image size."""
    h = hashlib.sha256(f"sslzoo-decoded-v1 {image_size}\n".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{os.fspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


class CachedDataset(Dataset):
    """``dataset[i]`` is ``(image (3, S, S) uint8, label, i)``, read from the cache file.

    The memory map is opened lazily in each process, so DataLoader workers open their own.
    """

    def __init__(self, path: Path, n: int, labels: Sequence[int], image_size: int,
                 classes: list[str] | None = None, name: str = "") -> None:
        self.path, self.n = path, n
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.image_size, self.classes, self.name = image_size, classes, name
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        """The ``(N, 3, S, S)`` uint8 memory map."""
        if self._array is None:
            s = self.image_size
            self._array = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.n, 3, s, s))
        return self._array

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        return torch.from_numpy(np.array(self.array[i])), int(self.labels[i]), i

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    @property
    def labelled(self) -> bool:
        return bool((self.labels >= 0).any())


def build_cache(files: Sequence[str | Path], image_size: int, path: Path, *,
                progress: bool = True) -> None:
    """Decode ``files`` into the ``(N, 3, S, S)`` uint8 file ``path`` (atomically)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from sslzoo.data import read_image

    s, tmp = image_size, path.with_suffix(".partial")
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(len(files), 3, s, s))
    bar = tqdm(total=len(files), desc=f"decoding {len(files)} images once into {path.parent}",
               unit="img", disable=not progress, mininterval=1 if sys.stderr.isatty() else 10)
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:  # decoding releases the GIL
        for i, img in enumerate(pool.map(lambda f: read_image(f, s), files)):
            out[i] = img.numpy()
            bar.update()
    bar.close()
    out.flush()
    del out
    os.replace(tmp, path)


def cached_folder(files: Sequence[str | Path], labels: Sequence[int], image_size: int,
                  classes: list[str] | None = None, name: str = "", *, split: str = "",
                  cache_dir: Path | None = None, progress: bool = True) -> Dataset:
    """A :class:`CachedDataset` of ``files``, building the cache first if it is missing.

    Falls back to a :class:`sslzoo.data.StreamingDataset` (with a warning) when the cache
    folder's disk lacks the space.
    """
    from sslzoo.data import StreamingDataset

    folder = hashlib.sha256(f"{name}\0{split}".encode()).hexdigest()[:16]
    root = (cache_dir or default_cache_dir()) / folder
    key = cache_key(files, image_size)
    path = root / f"{key}.u8"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        need = len(files) * 3 * image_size ** 2
        free = shutil.disk_usage(root).free
        if need > free:
            warnings.warn(f"not caching {name}: the decoded images need {need / 2 ** 30:.1f} "
                          f"GiB and {root} has {free / 2 ** 30:.1f} GiB free; streaming "
                          "instead (set $SSLZOO_CACHE to a larger disk)", stacklevel=2)
            return StreamingDataset(files, labels, image_size, classes, name)
        for stale in root.glob("*.u8"):  # the same folder's cache before a file changed
            stale.unlink(missing_ok=True)
        try:
            build_cache(files, image_size, path, progress=progress)
        except DataError:
            path.with_suffix(".partial").unlink(missing_ok=True)
            raise
        (root / "folder.json").write_text(json.dumps({"folder": name, "split": split, "files": len(files),
                                                      "image_size": image_size, "key": key}))
    return CachedDataset(path, len(files), labels, image_size, classes, name)


__all__ = ["CachedDataset", "build_cache", "cache_key", "cached_folder", "default_cache_dir"]
