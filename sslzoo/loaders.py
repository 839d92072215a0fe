"""Batches drawn on the training device, in a seeded order sharded across ranks.

:class:`DeviceLoader` serves an in-memory :class:`~sslzoo.data.ImageData` with an
``index_select`` on the device; :class:`StreamingLoader` serves a Dataset decoded by
DataLoader workers with the same interface; :func:`make_loader` picks one. Every epoch's
order is a permutation seeded with ``(seed, epoch)``, rank ``r`` of ``W`` takes samples
``r::W`` of it, and :meth:`DeviceLoader.skip` starts mid-epoch for an exact resume.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sslzoo.data import ImageData, StreamingDataset
from sslzoo.errors import ConfigError, DataError


class _EpochOrder:
    """Which samples each rank takes in each epoch, as batches of indices.

    The epoch's order is one permutation of ``0..N-1`` from a CPU ``torch.Generator``
    seeded with ``(seed, epoch)`` (identity when not shuffling), the same on every rank.
    Rank ``r`` of ``W`` takes samples ``r::W`` of it (DistributedSampler's layout) and cuts
    them into batches. With ``drop_last`` the order is first cut to a multiple of
    ``batch_size * W``; without it, it is padded by wrapping around to a multiple of
    ``W``, so a few samples appear twice when ``W > 1``. Every rank has the same number of
    batches either way.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int,
                 rank: int, world_size: int) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, {world_size}), got {rank}")
        if n == 0:
            raise DataError("the data set is empty")
        if drop_last and n < batch_size * world_size:
            raise DataError(
                f"the data set has {n} samples, fewer than one batch of {batch_size}"
                + (f" x {world_size} processes" if world_size > 1 else "")
                + f"; use --batch-size {max(1, n // world_size)} or smaller")
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // (self.batch_size * self.world_size)
        return math.ceil(math.ceil(self.n / self.world_size) / self.batch_size)

    def skip(self, n: int) -> None:
        if not 0 <= n <= len(self):
            raise ConfigError(f"cannot skip {n} batches of an epoch of {len(self)}")
        self.start = n

    def indices(self) -> Tensor:
        """This rank's sample indices for the current epoch, in order."""
        if self.shuffle:
            # torch's CPU generator keeps 32 bits of its seed: mix (seed, epoch) into them.
            entropy = [self.seed % 2 ** 64, self.epoch % 2 ** 64]
            mixed = np.random.SeedSequence(entropy).generate_state(1)[0]
            g = torch.Generator().manual_seed(int(mixed))
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        total = (len(self) * self.batch_size * self.world_size if self.drop_last
                 else math.ceil(self.n / self.world_size) * self.world_size)
        order = order.repeat(math.ceil(total / self.n))[:total]
        return order[self.rank::self.world_size]

    def take_start(self) -> int:
        """The batch the next pass starts at (consumes :meth:`skip`)."""
        start, self.start = self.start, 0
        return start

    def __iter__(self) -> Iterator[list[int]]:
        order, b = self.indices().tolist(), self.batch_size
        for i in range(self.take_start(), len(self)):
            yield order[i * b:(i + 1) * b]


def _as_float(x: Tensor, channels_last: bool) -> Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.to(dtype=torch.float32, memory_format=fmt).div_(255)


class DeviceLoader:
    """Batches drawn on the device from an :class:`ImageData`.

    The images are moved to ``device`` once (pass ``data.to(device)`` to share one copy
    between loaders); each batch is an ``index_select`` there, converted to float in
    ``[0, 1]`` after the gather. Order and sharding: see :meth:`set_epoch`.

    Yields ``(images (B, 3, S, S) float32, index (B,) int64, labels (B,) int64)`` on
    ``device``; ``index`` is each sample's position in the split.
    """

    def __init__(self, data: ImageData, batch_size: int, device: torch.device | str, *,
                 shuffle: bool = True, drop_last: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, channels_last: bool = False) -> None:
        self.order = _EpochOrder(len(data), batch_size, shuffle=shuffle, drop_last=drop_last,
                                 seed=seed, rank=rank, world_size=world_size)
        self.device = torch.device(device)
        self.data = data.to(self.device)
        self.channels_last = channels_last

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order: a permutation drawn from a generator seeded with
        ``(seed, epoch)``, identical on every rank; rank ``r`` of ``W`` takes samples
        ``r::W`` of it. Deterministic, so a resumed run sees the same batches."""
        self.order.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return len(self.order)

    def skip(self, n: int) -> None:
        """Make the next pass start at batch ``n`` of the epoch (exact mid-epoch resume)."""
        self.order.skip(n)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = self.order.indices().to(self.device)
        b = self.order.batch_size
        for i in range(self.order.take_start(), len(self)):
            idx = order[i * b:(i + 1) * b]
            images = self.data.images.index_select(0, idx)  # uint8 gather on the device
            yield _as_float(images, self.channels_last), idx, self.data.labels.index_select(0, idx)


class StreamingLoader:
    """Same interface as :class:`DeviceLoader`, over a Dataset of
    ``(uint8 image (3, S, S), label, index)`` decoded by DataLoader workers.

    Pinned memory and non-blocking copies when ``device`` is CUDA.
    """

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device | str, *,
                 shuffle: bool = True, drop_last: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, channels_last: bool = False) -> None:
        self.order = _EpochOrder(len(dataset), batch_size, shuffle=shuffle, drop_last=drop_last,
                                 seed=seed, rank=rank, world_size=world_size)
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.loader = DataLoader(dataset, batch_sampler=self.order, num_workers=num_workers,
                                 pin_memory=self.device.type == "cuda",
                                 persistent_workers=num_workers > 0)

    set_epoch = DeviceLoader.set_epoch
    skip = DeviceLoader.skip

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for images, labels, index in self.loader:
            images = images.to(self.device, non_blocking=True)
            yield (_as_float(images, self.channels_last), index.to(self.device, non_blocking=True),
                   labels.to(self.device, non_blocking=True))


class JpegFiles(Dataset):
    """``dataset[i]`` is ``(the file's bytes (n,) uint8, label, i)``: JPEGs left encoded."""

    def __init__(self, files: list[str], labels: Tensor) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        from torchvision.io import read_file

        return read_file(self.files[i]), int(self.labels[i]), i


def _collate_encoded(items: list[tuple[Tensor, int, int]]) -> tuple[list[Tensor], Tensor, Tensor]:
    return ([x for x, _, _ in items], torch.tensor([y for _, y, _ in items]),
            torch.tensor([i for _, _, i in items]))


def square_batch(images: list[Tensor], size: int) -> Tensor:
    """Decoded ``(3, h, w)`` uint8 images, each resized (shorter side, antialiased) and
    centre-cropped to ``size`` as :func:`sslzoo.data.read_image` does: ``(B, 3, S, S)``."""
    out = []
    for img in images:
        h, w = img.shape[-2:]
        scale = size / min(h, w)
        th, tw = max(size, round(h * scale)), max(size, round(w * scale))
        x = torch.nn.functional.interpolate(img[None].float(), size=(th, tw), mode="bilinear",
                                            align_corners=False, antialias=True)
        top, left = (th - size) // 2, (tw - size) // 2
        out.append(x[0, :, top:top + size, left:left + size])
    return torch.stack(out).round_().clamp_(0, 255).to(torch.uint8)


class DeviceJpegLoader(StreamingLoader):
    """A :class:`StreamingLoader` for folders of JPEGs on CUDA: workers only read the files'
    bytes, and each batch is decoded on the device by nvJPEG in one call
    (``torchvision.io.decode_jpeg(list, device=...)``), then resized there."""

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device | str, *,
                 num_workers: int = 0, **kwargs: object) -> None:
        super().__init__(dataset, batch_size, device, num_workers=0, **kwargs)  # type: ignore[arg-type]
        self.image_size = dataset.image_size  # type: ignore[attr-defined]
        encoded = JpegFiles(dataset.files, dataset.labels)  # type: ignore[attr-defined]
        self.loader = DataLoader(encoded, batch_sampler=self.order, num_workers=num_workers,
                                 collate_fn=_collate_encoded, persistent_workers=num_workers > 0)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        from torchvision.io import ImageReadMode, decode_jpeg

        for data, labels, index in self.loader:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device,
                                  apply_exif_orientation=True)
            images = square_batch(decoded, self.image_size)
            yield (_as_float(images, self.channels_last), index.to(self.device, non_blocking=True),
                   labels.to(self.device, non_blocking=True))


def _all_jpeg(data: Dataset) -> bool:
    files = getattr(data, "files", None)
    return bool(files) and all(str(f).lower().endswith((".jpg", ".jpeg")) for f in files)


def make_loader(data: ImageData | Dataset, batch_size: int, device: torch.device | str, *,
                shuffle: bool = True, drop_last: bool = True, seed: int = 0, rank: int = 0,
                world_size: int = 1, num_workers: int = 0,
                channels_last: bool = False) -> DeviceLoader | StreamingLoader:
    """A :class:`DeviceLoader` for in-memory data; for a folder of JPEGs streamed to CUDA a
    :class:`DeviceJpegLoader` (decoded on the device); else a :class:`StreamingLoader`."""
    kwargs = dict(shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank,
                  world_size=world_size, channels_last=channels_last)
    if isinstance(data, ImageData):
        return DeviceLoader(data, batch_size, device, **kwargs)
    if isinstance(data, StreamingDataset) and torch.device(device).type == "cuda" \
            and _all_jpeg(data):
        return DeviceJpegLoader(data, batch_size, device, num_workers=num_workers, **kwargs)
    if isinstance(data, Dataset):
        return StreamingLoader(data, batch_size, device, num_workers=num_workers, **kwargs)
    raise TypeError(f"expected ImageData or a torch Dataset, got {type(data).__name__}")


__all__ = ["DeviceJpegLoader", "DeviceLoader", "StreamingLoader", "make_loader", "square_batch"]
