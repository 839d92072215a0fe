"""Data sets: registered names and image folders, decoded once into uint8 tensors.

``--data`` takes a registered name (``digits``, ``photos``, ``cifar10``, ``cifar100``,
``stl10``, ``stl10+unlabeled``, ``synthetic``, or a plugin's) or a path to a folder of images.
A split whose uint8 pixels fit ``memory_budget`` is decoded and resized once into an
:class:`ImageData` (``(N, 3, S, S)`` uint8), which :class:`sslzoo.loaders.DeviceLoader`
keeps on the device and draws batches from. Larger folders become a
:class:`StreamingDataset` whose DataLoader workers only decode and resize
(:class:`sslzoo.loaders.StreamingLoader`). Augmentation happens later, on the device.

Image folders: class = top-level subfolder name (sorted, as torchvision's ImageFolder);
a folder with images directly inside it is unlabelled (labels -1, every image below it
used). ``train/`` plus ``val/`` (preferred) or ``test/`` subfolders are used as the two
splits; otherwise a labelled folder is split 80/20 per class with seed 0 (see
:func:`stratified_split`), and an unlabelled one is all training data with an empty test
split. Code that needs labels checks for them (:func:`require_labels`), so evaluating an
unlabelled folder fails with a clear error while pretraining on it works.

Broken files in a folder are handled one way everywhere (:func:`scan_image_files`):
anything that decodes becomes RGB (CMYK, 16-bit, palette, RGBA, grayscale; EXIF rotation
applied), and what does not (unreadable, zero-byte, truncated, not an image) is skipped
and listed in ``skipped`` as ``(path, reason)`` pairs, or with ``strict`` stops loading
with a :class:`DataError` naming the first such file.
"""
from __future__ import annotations

import colorsys
import functools
import inspect
import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from sslzoo.errors import ConfigError, DataError, PluginError

if TYPE_CHECKING:
    from sslzoo.registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test")


@dataclass
class ImageData:
    """A split held in memory.

    Attributes:
        images: ``(N, 3, S, S)`` uint8, on the CPU or (after :meth:`to`) the device.
        labels: ``(N,)`` int64, -1 where unknown.
        classes: class names when labelled, else ``None``.
        name: the data set's name or folder, for messages.
    """

    images: Tensor
    labels: Tensor
    classes: list[str] | None
    name: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of broken files

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> bool:
        """True if any sample has a label."""
        return bool((self.labels >= 0).any())

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def to(self, device: torch.device | str) -> ImageData:
        """The same split on ``device`` (``self`` itself if already there)."""
        images, labels = self.images.to(device), self.labels.to(device)
        if images is self.images and labels is self.labels:
            return self
        return replace(self, images=images, labels=labels)


# ---------------------------------------------------------------- decoding and resizing


def resize_square(x: Tensor, size: int, chunk: int = 1024) -> Tensor:
    """Bilinear (antialiased) resize of ``(N, C, h, w)`` images to ``(N, C, size, size)``.

    ``x`` holds values in ``0..255`` (uint8 or float); the result is uint8.
    """
    if x.shape[-2:] == (size, size):
        x = x.round().clamp(0, 255).to(torch.uint8) if x.is_floating_point() else x
        return x.contiguous()
    out = torch.empty((*x.shape[:-2], size, size), dtype=torch.uint8)
    for i in range(0, len(x), chunk):
        y = F.interpolate(x[i:i + chunk].float(), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)
        out[i:i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class SkippedFilesWarning(UserWarning):
    """Some files of an image folder were skipped (they are listed in ``skipped``)."""


def to_rgb(img: Any) -> Any:
    """A PIL image as 8-bit RGB: EXIF rotation applied, palette and RGBA (alpha dropped),
    CMYK, grayscale and 16-bit grayscale (scaled by 1/257) converted."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in _WIDE_GRAY_MODES:  # 16-bit PNGs: 0..65535 -> 0..255, not clipped
        wide = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(wide.round().clip(0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    return img.convert("RGB")


def read_image(path: str | Path, size: int) -> Tensor:
    """Decode an image file to RGB (:func:`to_rgb`), resize its shorter side to ``size``
    and centre-crop. Returns ``(3, size, size)`` uint8.

    Raises:
        DataError: naming the file, if it cannot be read or decoded.
    """
    from PIL import Image
    import torchvision.transforms.functional as TF

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when possible
            img = to_rgb(img)
            img = TF.center_crop(TF.resize(img, size, antialias=True), [size, size])
            return TF.pil_to_tensor(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {_reason(exc)}; remove or replace the "
                        "file") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) < 120 else text[:117] + "..."


def _decode(path: Path, size: int) -> tuple[Tensor | None, str]:
    """``(image, "")`` or ``(None, why it cannot be used)``."""
    try:
        return read_image(path, size), ""
    except DataError as exc:
        return None, _reason(exc.__cause__ or exc)


# ------------------------------------------------------------------------ image folders


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def check_image_file(path: Path) -> str:
    """Why ``path`` cannot be an image without decoding it ("" if it may be one): not a
    regular file (a dangling link, a pipe), empty, unreadable, or not an image format."""
    from PIL import Image, UnidentifiedImageError

    try:
        st = path.stat()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not path.is_file():
        return "not a regular file"
    if st.st_size == 0:
        return "empty file"
    try:
        with Image.open(path):
            pass
    except UnidentifiedImageError:
        return "not an image"
    except OSError as exc:
        return f"unreadable: {exc.strerror or _reason(exc)}"
    return ""


def scan_image_files(files: Sequence[Path], image_size: int, *, decode: bool,
                     strict: bool = False) -> tuple[list[int], Tensor | None, list[tuple[str, str]]]:
    """Sort an image folder's files into usable and broken ones.

    Every file is checked (:func:`check_image_file`); with ``decode`` the usable ones are
    also decoded and resized (in threads), which catches truncated files too.

    Returns:
        ``(indices of the usable files, their images (n, 3, S, S) uint8 when decode else
        None, [(path, reason)] of the skipped ones)``.

    Raises:
        DataError: with ``strict``, at the first broken file.
    """
    def one(path: Path) -> tuple[Tensor | None, str]:
        why = check_image_file(path)
        if why or not decode:
            return None, why
        return _decode(path, image_size)

    good, images, bad = [], [], []
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        for i, (img, why) in enumerate(pool.map(one, files)):
            if why:
                if strict:
                    raise DataError(f"--strict-data: cannot use {files[i]} ({why}); remove or "
                                    "replace it, or drop --strict-data to skip such files")
                bad.append((str(files[i]), why))
                continue
            good.append(i)
            if decode:
                images.append(img)
    stacked = torch.stack(images) if decode and images else None
    return good, stacked, bad


def _images_below(folder: Path) -> list[Path]:
    found = []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(parent, f) for f in sorted(files) if _is_image(Path(f))]
    return found


def _scan(folder: Path) -> list[tuple[Path, str | None]]:
    """(file, class name or None) for every image in ``folder``."""
    if any(_is_image(p) and p.is_file() for p in folder.iterdir()):
        return [(p, None) for p in _images_below(folder)]
    items = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        items += [(p, sub.name) for p in _images_below(sub)]
    if not items:
        raise DataError(f"no images found in {folder}; supported extensions: "
                        f"{', '.join(IMAGE_EXTENSIONS)}")
    return items


def stratified_split(labels: Tensor, test_fraction: float = 0.2,
                     seed: int = 0) -> tuple[Tensor, Tensor]:
    """Deterministic per-class split: ``round(test_fraction * n_c)`` of each class's
    ``n_c`` samples, drawn with a generator seeded with ``seed``, go to the test split.

    Returns sorted (train, test) index tensors. A class with a single sample stays in
    train. Labels below 0 (unlabelled) always go to train.
    """
    g = torch.Generator().manual_seed(seed)
    train, test = [(labels < 0).nonzero().flatten()], []
    for c in labels[labels >= 0].unique(sorted=True):
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        k = int(len(members) * test_fraction + 0.5)
        test.append(members[:k])
        train.append(members[k:])
    test_idx = torch.cat(test) if test else torch.empty(0, dtype=torch.long)
    return torch.cat(train).sort().values, test_idx.sort().values


def _folder_split(root: Path, split: str) -> tuple[list[Path], list[int], list[str] | None]:
    """Files, labels and class names of one split of an image folder."""
    eval_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and eval_dir is not None:
        parts = {"train": _scan(root / "train"), "test": _scan(eval_dir)}
        names = sorted({c for items in parts.values() for _, c in items if c is not None})
        index = {c: i for i, c in enumerate(names)}
        files = [p for p, _ in parts[split]]
        return files, [index.get(c, -1) for _, c in parts[split]], names or None
    items = _scan(root)
    files = [p for p, _ in items]
    names = sorted({c for _, c in items if c is not None})
    if not names:  # unlabelled: all of it is training data, the test split is empty
        return (files, [-1] * len(files), None) if split == "train" else ([], [], None)
    index = {c: i for i, c in enumerate(names)}
    labels = torch.tensor([index[c] for _, c in items])
    keep = stratified_split(labels)[SPLITS.index(split)].tolist()
    return [files[i] for i in keep], labels[keep].tolist(), names


class StreamingDataset(Dataset):
    """Image files decoded and resized on demand (for folders too big to keep in memory).

    ``dataset[i]`` is ``(image (3, S, S) uint8, label, i)``. A file that passed the scan
    but fails to decode (a truncated one) raises :class:`DataError` naming it with
    ``strict``; otherwise the next file that decodes stands in for it (deterministic, so
    an exact resume still holds) and a warning names it.
    """

    def __init__(self, files: Sequence[str | Path], labels: Sequence[int], image_size: int,
                 classes: list[str] | None = None, name: str = "", *,
                 skipped: Sequence[tuple[str, str]] = (), strict: bool = False) -> None:
        self.files = [str(f) for f in files]
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.image_size, self.classes, self.name = image_size, classes, name
        self.skipped, self.strict = list(skipped), strict

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        for k in range(min(len(self.files), 16)):
            j = (i + k) % len(self.files)
            try:
                return read_image(self.files[j], self.image_size), int(self.labels[i]), i
            except DataError as exc:
                if self.strict:
                    raise
                warnings.warn(f"{exc}; using the next image in its place", stacklevel=2)
        raise DataError(f"none of 16 files from {self.files[i]} on in {self.name} can be decoded")

    @property
    def labelled(self) -> bool:
        return bool((self.labels >= 0).any())


def load_folder(path: str | Path, split: str, image_size: int, *,
                memory_budget: int = 2 << 30, strict: bool = False,
                cache_dir: str | Path | None = None) -> ImageData | Dataset:
    """One split of an image folder (layout and split rule in the module docstring).

    In memory when ``N * 3 * S * S`` bytes fit ``memory_budget``; otherwise, with
    ``cache_dir``, a :class:`sslzoo.cache.CachedDataset` decoded once into a memory-mapped
    file there, and without it a :class:`StreamingDataset`. Broken files are skipped and
    listed in the result's ``skipped`` (with a warning), or with ``strict`` raise
    :class:`DataError` (:func:`scan_image_files`); :class:`DataError` also if no file can
    be used.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"no such folder: {root.absolute()}")
    if not root.is_dir():
        raise DataError(f"{root} is a file; --data takes a data set name or a folder of images")
    _check_split(split, SPLITS, str(root))
    files, labels, classes = _folder_split(root, split)
    if not files:
        return ImageData(torch.empty((0, 3, image_size, image_size), dtype=torch.uint8),
                         torch.empty(0, dtype=torch.long), classes, str(root))
    streaming = len(files) * 3 * image_size ** 2 > memory_budget
    good, images, bad = scan_image_files(files, image_size, decode=not streaming, strict=strict)
    if not good:
        raise DataError(f"none of the {len(files)} image files in {root} ({split}) could be decoded, "
                        f"e.g. {bad[0][0]} ({bad[0][1]})")
    if bad:  # skip broken files, but say which
        warnings.warn(f"skipped {len(bad)} unreadable image(s) in {root}: "
                      f"{', '.join(p for p, _ in bad[:10])}{' ...' if len(bad) > 10 else ''}",
                      SkippedFilesWarning, stacklevel=2)
    files, labels = [files[i] for i in good], [labels[i] for i in good]
    if streaming and cache_dir is not None:
        from sslzoo.cache import cached_folder

        cached = cached_folder(files, labels, image_size, classes, str(root.absolute()),
                               split=split, cache_dir=Path(cache_dir))
        cached.skipped = bad  # type: ignore[attr-defined]
        return cached
    if streaming:
        return StreamingDataset(files, labels, image_size, classes, str(root), skipped=bad,
                                strict=strict)
    return ImageData(images, torch.tensor(labels, dtype=torch.long), classes, str(root), bad)


# --------------------------------------------------------------------- registered sets


def _check_split(split: str, valid: Sequence[str], name: str) -> None:
    if split not in valid:
        raise DataError(f"{name} has no split {split!r}; choose from {', '.join(valid)}")


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[Tensor, Tensor]:
    """The bundled digits as ``(1797, 8, 8)`` float in 0..255 and int64 labels (cached)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().mul_(255 / 16)
    return images, torch.from_numpy(bunch.target).long()


def digits(split: str, image_size: int, root: str | Path | None = None,
           download: bool = False) -> ImageData:
    """scikit-learn's 1,797 handwritten digits (8x8, bundled, offline), upscaled to RGB.

    Pixel values 0..16 are scaled to 0..255 and upscaled bilinearly (antialiased) to
    ``image_size``; the split is :func:`stratified_split` with seed 0 (1,438 / 359).
    """
    _check_split(split, SPLITS, "digits")
    x, y = _digits_arrays()
    idx = stratified_split(y)[SPLITS.index(split)]
    images = resize_square(x[idx, None], image_size).expand(-1, 3, -1, -1).contiguous()
    return ImageData(images, y[idx], [str(d) for d in range(10)], "digits")


def synthetic(split: str, image_size: int, root: str | Path | None = None,
              download: bool = False, *, seed: int = 0, num_classes: int = 10,
              sizes: tuple[int, int] = (256, 128)) -> ImageData:
    """Coloured blobs on striped backgrounds, one colour/place/orientation per class (tests).

    Deterministic given ``seed``; the train and test splits are drawn independently.
    Noisy enough that pixel-space kNN is well above chance but far from perfect (about
    70% at seed 0, 32x32), leaving room for learned features.
    """
    _check_split(split, SPLITS, "synthetic")
    g = torch.Generator().manual_seed(seed * 2 + SPLITS.index(split))
    n = sizes[SPLITS.index(split)]
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    angle = 2 * math.pi * labels / num_classes
    colour = torch.tensor([colorsys.hsv_to_rgb(c / num_classes, 0.8, 0.9)
                           for c in range(num_classes)])[labels]            # (N, 3)
    colour = (colour + 0.3 * torch.randn(n, 3, generator=g)).clamp(0, 1)
    centre = 0.5 * torch.stack([angle.cos(), angle.sin()], 1) + 0.5 * torch.randn(n, 2, generator=g)
    grid = torch.linspace(-1, 1, image_size)
    yy, xx = grid[None, :, None], grid[None, None, :]                    # (1, S, 1), (1, 1, S)
    blob = torch.exp(-((xx - centre[:, :1, None]) ** 2 + (yy - centre[:, 1:, None]) ** 2) / 0.18)
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
    theta = (angle / 2)[:, None, None]
    stripes = 0.5 + 0.5 * torch.sin(6 * (xx * theta.cos() + yy * theta.sin()) + phase)  # (N, S, S)
    img = 0.1 + 0.25 * stripes[:, None] + 0.65 * blob[:, None] * colour[:, :, None, None]
    img = img + 0.3 * torch.randn(img.shape, generator=g)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageData(images, labels.long(), [f"class{c}" for c in range(num_classes)], "synthetic")


class _ArrayDataset(Dataset):
    """uint8 ``(N, 3, h, w)`` array resized per item (torchvision arrays over budget)."""

    def __init__(self, array: np.ndarray, labels: Tensor, image_size: int,
                 classes: list[str] | None, name: str) -> None:
        self.array, self.labels, self.image_size = array, labels, image_size
        self.classes, self.name = classes, name

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        x = torch.from_numpy(self.array[i][None])
        return resize_square(x, self.image_size)[0], int(self.labels[i]), i

    @property
    def labelled(self) -> bool:
        return bool((self.labels >= 0).any())


def _torchvision(name: str, build: Callable[[str, bool], Any], root: str | Path | None,
                 download: bool, folder: str) -> Any:
    root = Path(root) if root is not None else default_root()
    if download:
        root.mkdir(parents=True, exist_ok=True)
    try:
        return build(str(root), download)
    except RuntimeError as exc:
        if download:
            raise DataError(f"could not download {name} to {root}: {exc}") from exc
        raise DataError(f"{name} not found in {root} (looked for {root / folder}); run with "
                        "--download or give --data-root pointing at the folder that holds "
                        f"{folder}") from exc
    except OSError as exc:  # network errors (URLError is an OSError)
        raise DataError(f"could not download {name} to {root}: {exc}; check the network or "
                        f"copy {folder} into {root} by hand") from exc


def _from_arrays(array: np.ndarray, labels: Any, classes: list[str], image_size: int,
                 name: str, memory_budget: int) -> ImageData | _ArrayDataset:
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(array) * 3 * image_size ** 2 > memory_budget:
        return _ArrayDataset(array, labels, image_size, classes, name)
    return ImageData(resize_square(torch.from_numpy(array), image_size), labels, classes, name)


def _cifar(name: str, cls_name: str, folder: str, split: str, image_size: int,
           root: str | Path | None, download: bool) -> ImageData:
    import torchvision.datasets as tvd

    _check_split(split, SPLITS, name)
    ds = _torchvision(name, lambda r, d: getattr(tvd, cls_name)(r, train=split == "train",
                                                                download=d),
                      root, download, folder)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return ImageData(resize_square(images, image_size), torch.tensor(ds.targets), ds.classes, name)


def cifar10(split: str, image_size: int, root: str | Path | None = None,
            download: bool = False) -> ImageData:
    """CIFAR-10 (torchvision): 50,000 / 10,000 32x32 images, 10 classes."""
    return _cifar("cifar10", "CIFAR10", "cifar-10-batches-py", split, image_size, root, download)


def cifar100(split: str, image_size: int, root: str | Path | None = None,
             download: bool = False) -> ImageData:
    """CIFAR-100 (torchvision): 50,000 / 10,000 32x32 images, 100 classes."""
    return _cifar("cifar100", "CIFAR100", "cifar-100-python", split, image_size, root, download)


def stl10(split: str, image_size: int, root: str | Path | None = None, download: bool = False,
          *, memory_budget: int = 2 << 30) -> ImageData | Dataset:
    """STL-10 (torchvision), 96x96: train 5,000 labelled, test 8,000.

    Also takes the splits ``unlabeled`` (100,000, labels -1) and ``train+unlabeled``.
    """
    import torchvision.datasets as tvd

    _check_split(split, (*SPLITS, "unlabeled", "train+unlabeled"), "stl10")
    ds = _torchvision("stl10", lambda r, d: tvd.STL10(r, split=split, download=d),
                      root, download, "stl10_binary")
    return _from_arrays(ds.data, ds.labels, ds.classes, image_size, "stl10", memory_budget)


def stl10_unlabeled(split: str, image_size: int, root: str | Path | None = None,
                    download: bool = False, *, memory_budget: int = 2 << 30) -> ImageData | Dataset:
    """STL-10 for pretraining: train = train+unlabeled (105,000, labels -1 for 100,000)."""
    split = "train+unlabeled" if split == "train" else split
    _check_split(split, ("train+unlabeled", "test"), "stl10+unlabeled")
    return stl10(split, image_size, root, download, memory_budget=memory_budget)


from sslzoo.photos import photos  # noqa: E402  (it imports this module lazily)

DATASETS: dict[str, tuple[Callable[..., ImageData | Dataset], str]] = {
    "digits": (digits, "scikit-learn's 1,797 handwritten digits, upscaled (offline default)"),
    "cifar10": (cifar10, "CIFAR-10, 50k/10k 32x32 images in 10 classes (torchvision)"),
    "cifar100": (cifar100, "CIFAR-100, 50k/10k 32x32 images in 100 classes (torchvision)"),
    "stl10": (stl10, "STL-10, 5k labelled train / 8k test 96x96 images (torchvision)"),
    "stl10+unlabeled": (stl10_unlabeled, "STL-10 with its 100k unlabelled images in train"),
    "synthetic": (synthetic, "256/128 class-structured random images (tests)"),
    "photos": (photos, "1,200/400 crops of 10 bundled colour photographs, split by disjoint "
                       "regions (needs scikit-image)"),
}


def default_root() -> Path:
    """Where torchvision data sets live: ``$SSLZOO_DATA`` or ``~/.cache/sslzoo/data``."""
    return Path(os.environ.get("SSLZOO_DATA") or "~/.cache/sslzoo/data").expanduser()


def load_data(name_or_path: str, split: str, image_size: int, *, root: str | Path | None = None,
              download: bool = False, registry: Registry | None = None,
              memory_budget: int = 2 << 30, strict: bool = False,
              cache_dir: str | Path | None = None) -> ImageData | Dataset:
    """Load one split of a registered data set or of an image folder.

    Args:
        name_or_path: a registered name (wins over a folder of the same name; write
            ``./name`` for the folder) or the path of an image folder.
        split: ``"train"`` or ``"test"`` (some data sets take more, e.g. stl10).
        image_size: side ``S`` of the square uint8 images.
        root: where torchvision data sets live (default :func:`default_root`).
        download: let torchvision data sets download themselves.
        registry: the data set registry (default: the installed plugins').
        memory_budget: bytes of uint8 pixels a split may take in memory before a folder
            (or a factory that accepts ``memory_budget``) streams instead.
        strict: an image folder's first broken file raises instead of being skipped.
        cache_dir: where a folder too large for memory is decoded once into a
            memory-mapped cache (:mod:`sslzoo.cache`); ``None`` streams it instead.

    Returns:
        :class:`ImageData`, or a Dataset of ``(uint8 image, label, index)`` to stream.
    """
    if image_size < 1:
        raise ConfigError(f"image size must be >= 1, got {image_size}")
    if registry is None:
        from sslzoo.plugins import default_plugins

        registry = default_plugins().datasets
    root = Path(root).expanduser() if root is not None else default_root()
    if name_or_path not in registry:
        path = Path(name_or_path).expanduser()
        if path.exists() or any(s in name_or_path for s in ("/", os.sep, "~")) \
                or name_or_path.startswith("."):
            return load_folder(path, split, image_size, memory_budget=memory_budget,
                               strict=strict, cache_dir=cache_dir)
    entry = registry.get(name_or_path, hint="--data also takes the path of an image folder "
                                             f"(and there is no {Path(name_or_path).resolve()})")
    try:
        takes_budget = "memory_budget" in inspect.signature(entry.obj).parameters
    except (TypeError, ValueError):  # a callable without an inspectable signature
        takes_budget = False
    kwargs = {"memory_budget": memory_budget} if takes_budget else {}
    data = entry.obj(split, image_size, root, download, **kwargs)
    if not isinstance(data, (ImageData, Dataset)):
        raise PluginError(f"data set {name_or_path!r} from {entry.plugin!r} returned "
                          f"{type(data).__name__}; expected ImageData or a torch Dataset")
    return data


def require_labels(data: ImageData | Dataset, purpose: str = "evaluation") -> ImageData | Dataset:
    """``data`` restricted to its labelled samples; :class:`DataError` if it has none."""
    labels = getattr(data, "labels", None)
    if labels is None:
        return data
    name = getattr(data, "name", "") or "this data set"
    keep = labels >= 0
    if not keep.any():
        raise DataError(f"{purpose} needs labels, but {name} is unlabelled; use a labelled data "
                        "set (for a folder: one subfolder per class)")
    if keep.all():
        return data
    if isinstance(data, ImageData):
        return replace(data, images=data.images[keep], labels=labels[keep])
    if isinstance(data, StreamingDataset):
        files = [f for f, k in zip(data.files, keep.tolist()) if k]
        return StreamingDataset(files, labels[keep].tolist(), data.image_size, data.classes, name)
    return torch.utils.data.Subset(data, keep.nonzero().flatten().tolist())


def sample_images(data: ImageData | Dataset, n: int, seed: int = 0) -> Tensor:
    """Up to ``n`` distinct images, uint8 ``(n, 3, S, S)``, drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[:n]
    if isinstance(data, ImageData):
        return data.images.index_select(0, idx.to(data.images.device))
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:  # decoding releases the GIL
        return torch.stack(list(pool.map(lambda i: data[i][0], idx.tolist())))


__all__ = [
    "DATASETS", "IMAGE_EXTENSIONS", "ImageData", "StreamingDataset", "default_root",
    "load_data", "load_folder", "read_image", "require_labels", "resize_square",
    "sample_images", "stratified_split",
]
