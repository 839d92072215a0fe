from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslzoo import cache
from sslzoo.cache import CachedDataset, cache_key, cached_folder
from sslzoo.data import StreamingDataset, load_folder
from sslzoo.loaders import StreamingLoader


def _photo(path: Path, seed: int, size: tuple[int, int]) -> Path:
    """A noisy colour image (JPEG or PNG by suffix) so resizing and decoding matter."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i in range(6):
        _photo(root / ("a" if i % 2 else "b") / f"{i}.{'jpg' if i < 4 else 'png'}", i,
               (20 + 3 * i, 14 + i))
    return root


def _items(dataset) -> list[tuple[torch.Tensor, int, int]]:
    return [dataset[i] for i in range(len(dataset))]


def _assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya, ia), (xb, yb, ib) in zip(_items(a), _items(b)):
        assert xa.dtype == xb.dtype == torch.uint8
        assert torch.equal(xa, xb) and ya == yb and ia == ib


def test_cached_folder_yields_exactly_the_images_of_the_streaming_path(folder, tmp_path):
    streamed = load_folder(folder, "train", 16, memory_budget=0)
    cached = load_folder(folder, "train", 16, memory_budget=0, cache_dir=tmp_path / "cache")
    assert isinstance(streamed, StreamingDataset) and isinstance(cached, CachedDataset)
    _assert_same(cached, streamed)
    assert cached.classes == streamed.classes


def test_cached_batches_through_dataloader_workers_match_streaming(folder, tmp_path):
    streamed = load_folder(folder, "train", 8, memory_budget=0)
    cached = load_folder(folder, "train", 8, memory_budget=0, cache_dir=tmp_path / "cache")
    batches = [list(StreamingLoader(d, 2, "cpu", seed=3, num_workers=w))
               for d, w in ((streamed, 0), (cached, 1))]
    for (xa, ia, ya), (xb, ib, yb) in zip(*batches):
        assert torch.equal(xa, xb) and torch.equal(ia, ib) and torch.equal(ya, yb)


def test_a_second_run_reuses_the_cache_without_decoding(folder, tmp_path, monkeypatch):
    files = sorted(folder.rglob("*.*"))
    first = cached_folder(files, [0] * len(files), 12, name="photos", cache_dir=tmp_path)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache was built again")

    monkeypatch.setattr(cache, "build_cache", no_decoding)
    again = cached_folder(files, [0] * len(files), 12, name="photos", cache_dir=tmp_path)
    assert again.path == first.path
    _assert_same(again, first)


def test_cache_is_rebuilt_when_a_file_changes(folder, tmp_path):
    files = sorted(folder.rglob("*.*"))
    before = cached_folder(files, [0] * len(files), 12, name="photos", cache_dir=tmp_path)
    old = before[2][0].clone()
    _photo(files[2], seed=99, size=(30, 30))     # replaced by a different image
    st = os.stat(files[2])
    os.utime(files[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    after = cached_folder(files, [0] * len(files), 12, name="photos", cache_dir=tmp_path)
    assert after.path != before.path and not before.path.exists()  # the stale one is gone
    assert not torch.equal(after[2][0], old)
    _assert_same(after, StreamingDataset(files, [0] * len(files), 12))


def test_cache_key_depends_on_the_image_size_and_the_file_list(folder):
    files = sorted(folder.rglob("*.*"))
    assert cache_key(files, 16) == cache_key(files, 16)
    assert cache_key(files, 16) != cache_key(files, 32)
    assert cache_key(files, 16) != cache_key(files[1:], 16)


def test_the_two_splits_of_a_folder_keep_separate_caches(folder, tmp_path):
    train = load_folder(folder, "train", 8, memory_budget=0, cache_dir=tmp_path)
    test = load_folder(folder, "test", 8, memory_budget=0, cache_dir=tmp_path)
    assert train.path.exists() and test.path.exists() and train.path != test.path


def test_batched_jpeg_decoding_matches_the_streaming_images(folder):
    """The path CUDA takes when no cache exists (nvJPEG there; the same code on the CPU)."""
    from sslzoo.loaders import DeviceJpegLoader

    files = sorted(str(f) for f in folder.rglob("*.jpg"))
    streamed = StreamingDataset(files, [0] * len(files), 12)
    loader = DeviceJpegLoader(streamed, 2, "cpu", shuffle=False, drop_last=False)
    images = torch.cat([x for x, _, _ in loader])
    expected = torch.stack([streamed[i][0] for i in range(len(files))]).float() / 255
    assert images.shape == expected.shape == (len(files), 3, 12, 12)
    # the same pixels up to JPEG decoder and resampling rounding (values in [0, 1])
    assert (images - expected).abs().mean() < 0.03
