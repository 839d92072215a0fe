from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from sslzoo.data import (DATASETS, ImageData, StreamingDataset, load_data, load_folder,
                         require_labels, sample_images, stratified_split)
from sslzoo.errors import DataError, PluginError, UnknownNameError
from sslzoo.loaders import DeviceLoader, StreamingLoader, make_loader
from sslzoo.registry import Entry, Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The core's data sets, without loading every installed plugin."""
    reg = Registry("dataset")
    for name, (factory, summary) in DATASETS.items():
        reg.add(Entry("dataset", name, factory, "sslzoo", "0", "sslzoo.data", summary))
    return reg


def _save(path: Path, mode: str = "RGB", colour: object = (200, 30, 60), size=(20, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    for c, colour in (("cat", (250, 0, 0)), ("dog", (0, 0, 250))):
        for i in range(5):
            _save(tmp_path / c / f"{i}.png", colour=colour)
    return tmp_path


# ------------------------------------------------------------------------------ digits

def test_digits_split_is_disjoint_stratified_and_covers_all(registry):
    train = load_data("digits", "train", 32, registry=registry)
    test = load_data("digits", "test", 32, registry=registry)
    assert len(train) + len(test) == 1797
    assert 0.19 < len(test) / 1797 < 0.21
    assert train.images.shape == (len(train), 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) == set(range(10))
    assert train.classes == [str(d) for d in range(10)] and train.labelled
    # Each class keeps ~20% in test; every image is in exactly one split.
    counts = test.labels.bincount() / (test.labels.bincount() + train.labels.bincount())
    assert ((counts - 0.2).abs() < 0.02).all()
    # At 8x8 (no resize) the two splits together are exactly the 1,797 digits, each once.
    full = load_digits()
    expected = sorted((int(y), tuple((x.flatten() * 255 / 16).round().astype(int)))
                      for x, y in zip(full.images, full.target))
    small = [load_data("digits", s, 8, registry=registry) for s in ("train", "test")]
    got = sorted((int(y), tuple(x[0].flatten().tolist()))
                 for d in small for x, y in zip(d.images, d.labels))
    assert got == expected
    # RGB made from grayscale, values spread over 0..255.
    assert torch.equal(train.images[:, 0], train.images[:, 1])
    assert train.images.max() == 255 and train.images.min() == 0


def test_digits_is_reproducible_and_upscales(registry):
    a = load_data("digits", "test", 32, registry=registry)
    b = load_data("digits", "test", 64, registry=registry)
    assert b.images.shape[-2:] == (64, 64)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.images, load_data("digits", "test", 32, registry=registry).images)


# ------------------------------------------------------------------------------ synthetic

def test_synthetic_is_deterministic_per_seed_and_pixel_knn_beats_chance(registry):
    from sslzoo.data import synthetic

    train = load_data("synthetic", "train", 32, registry=registry)
    test = load_data("synthetic", "test", 32, registry=registry)
    assert (len(train), len(test)) == (256, 128)
    assert torch.equal(train.images, synthetic("train", 32).images)
    assert not torch.equal(train.images, synthetic("train", 32, seed=1).images)
    nearest = torch.cdist(test.images.flatten(1).float(), train.images.flatten(1).float()).argmin(1)
    accuracy = (train.labels[nearest] == test.labels).float().mean()
    assert 0.3 < accuracy < 1.0


# ------------------------------------------------------------------------------ folders

def test_labelled_folder_split_and_rgb_conversion(tmp_path):
    for i in range(5):
        _save(tmp_path / "a" / f"gray{i}.png", "L", 100)
        _save(tmp_path / "b" / f"rgba{i}.png", "RGBA", (10, 20, 30, 0))
    train = load_folder(tmp_path, "train", 16)
    test = load_folder(tmp_path, "test", 16)
    assert (len(train), len(test)) == (8, 2)
    assert train.classes == ["a", "b"] and test.labels.tolist() == [0, 1]
    assert train.images.shape == (8, 3, 16, 16)
    gray = train.images[train.labels == 0]
    assert (gray == 100).all()
    rgba = train.images[train.labels == 1]
    assert torch.equal(rgba[:, :, 0, 0], torch.tensor([[10, 20, 30]] * 4, dtype=torch.uint8))


def test_folder_resizes_shorter_side_then_centre_crops(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # left quarter white: cropped away
    img.save(tmp_path / "wide.png")
    data = load_folder(tmp_path, "train", 10)
    assert data.images.shape == (1, 3, 10, 10)
    assert data.images.max() < 40


def test_flat_folder_is_unlabelled_training_data_with_an_empty_test_split(tmp_path, registry):
    for i in range(3):
        _save(tmp_path / f"{i}.jpg")
    data = load_data(str(tmp_path), "train", 8, registry=registry)
    assert isinstance(data, ImageData) and len(data) == 3
    assert data.labels.tolist() == [-1, -1, -1] and not data.labelled and data.classes is None
    test = load_data(str(tmp_path), "test", 8, registry=registry)
    assert len(test) == 0 and test.images.shape == (0, 3, 8, 8) and not test.labelled
    for split in (data, test):
        with pytest.raises(DataError, match="evaluation needs labels.*subfolder per class"):
            require_labels(split)


def test_train_val_subfolders_are_the_splits(tmp_path):
    for i in range(3):
        _save(tmp_path / "train" / "x" / f"{i}.png")
        _save(tmp_path / "train" / "y" / f"{i}.png")
    _save(tmp_path / "val" / "y" / "0.png")
    train, val = load_folder(tmp_path, "train", 8), load_folder(tmp_path, "test", 8)
    assert len(train) == 6 and len(val) == 1
    assert train.classes == val.classes == ["x", "y"] and val.labels.tolist() == [1]


def test_big_folder_streams_and_streaming_loader_batches(labelled_folder):
    data = load_folder(labelled_folder, "train", 8, memory_budget=100)
    assert isinstance(data, StreamingDataset) and len(data) == 8
    image, label, index = data[3]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and index == 3
    loader = make_loader(data, 3, "cpu", shuffle=True, drop_last=False, seed=1)
    assert isinstance(loader, StreamingLoader) and len(loader) == 3
    batches = list(loader)
    x, idx, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (3, 3, 8, 8) and 0 <= x.min() <= x.max() <= 1
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == list(range(8))
    assert torch.equal(y, data.labels[idx])
    memory = load_folder(labelled_folder, "train", 8)
    assert torch.equal(x, memory.images[idx].float() / 255)
    in_memory = make_loader(memory, 3, "cpu", shuffle=True, drop_last=False, seed=1)
    assert isinstance(in_memory, DeviceLoader)
    assert [b[1].tolist() for b in in_memory] == [b[1].tolist() for b in batches]
    loader.skip(1)
    assert torch.equal(next(iter(loader))[1], batches[1][1])
    picked = sample_images(data, 3, seed=0)
    assert picked.shape == (3, 3, 8, 8) and picked.dtype == torch.uint8


def test_empty_folder_missing_path_and_corrupt_file_errors(tmp_path, registry):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"no images found in .*supported extensions: .*\.png"):
        load_folder(tmp_path, "train", 8)
    with pytest.raises(DataError, match="no such folder"):
        load_data(str(tmp_path / "missing"), "train", 8, registry=registry)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="could be decoded.*bad.png"):
        load_folder(tmp_path, "train", 8)
    _save(tmp_path / "good.png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image.*bad.png"):
        data = load_folder(tmp_path, "train", 8)
    assert len(data) == 1
    with pytest.warns(UserWarning, match="skipped 1 unreadable image.*bad.png"):
        streaming = load_folder(tmp_path, "train", 8, memory_budget=1)
    assert streaming.files == [str(tmp_path / "good.png")]      # found when scanned
    assert streaming.skipped == [(str(tmp_path / "bad.png"), "not an image")]


def test_unknown_name_suggests_closest_and_mentions_folders(registry):
    with pytest.raises(UnknownNameError, match=r"did you mean 'digits'.*path of an image folder"):
        load_data("digit", "train", 8, registry=registry)


def test_default_registry_holds_the_core_data_sets():
    data = load_data("synthetic", "test", 8)
    assert len(data) == 128


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10", "stl10+unlabeled"])
def test_torchvision_set_missing_without_download_says_how_to_fix(tmp_path, registry, name):
    stem = name.split("+")[0]
    with pytest.raises(DataError, match=f"{stem} not found in .*--download.*--data-root"):
        load_data(name, "train", 32, root=tmp_path, registry=registry)


def test_plugin_factories_are_called_with_the_documented_arguments(tmp_path, registry):
    calls = []

    def tiny(split, image_size, root, download):
        calls.append((split, image_size, root, download))
        return ImageData(torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8),
                         torch.tensor([0, 1]), ["a", "b"])

    reg = Registry("dataset")
    reg.add(Entry("dataset", "tiny", tiny, "sslzoo-tiny", "1", __name__, ""))
    reg.add(Entry("dataset", "broken", lambda *a: [1, 2], "sslzoo-broken", "1", __name__, ""))
    assert len(load_data("tiny", "test", 16, root=tmp_path, download=True, registry=reg)) == 2
    assert calls == [("test", 16, tmp_path, True)]
    with pytest.raises(PluginError, match="'broken' from 'sslzoo-broken' returned list"):
        load_data("broken", "train", 16, registry=reg)


def test_a_file_or_a_bad_split_is_a_clear_error(tmp_path, registry):
    image = _save(tmp_path / "one.png")
    with pytest.raises(DataError, match="is a file; --data takes a data set name or a folder"):
        load_data(str(image), "train", 8, registry=registry)
    with pytest.raises(DataError, match="digits has no split 'val'; choose from train, test"):
        load_data("digits", "val", 8, registry=registry)


# ------------------------------------------------------------------------------ loaders

@pytest.fixture(scope="module")
def small() -> ImageData:
    n = 50
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 4, 4).contiguous()
    return ImageData(images, torch.arange(n) % 5, [str(c) for c in range(5)])


def _epoch(loader, epoch: int) -> list[int]:
    loader.set_epoch(epoch)
    return torch.cat([idx for _, idx, _ in loader]).tolist()


def test_device_loader_gives_each_index_once_with_matching_images_and_labels(small):
    loader = DeviceLoader(small, 8, "cpu", drop_last=False)
    assert len(loader) == 7
    seen = []
    for x, idx, y in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 4, 4)
        assert torch.allclose(x[:, 0, 0, 0] * 255, idx.float())
        assert torch.equal(y, idx % 5)
        seen += idx.tolist()
    assert sorted(seen) == list(range(50))


def test_device_loader_order_depends_on_seed_and_epoch_only(small):
    a, b = DeviceLoader(small, 8, "cpu"), DeviceLoader(small, 8, "cpu")
    assert len(a) == 6 and len(_epoch(a, 0)) == 48
    assert _epoch(a, 3) == _epoch(b, 3)
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(a, 0) != _epoch(DeviceLoader(small, 8, "cpu", seed=1), 0)
    assert _epoch(DeviceLoader(small, 8, "cpu", shuffle=False), 5)[:8] == list(range(8))


def test_skip_resumes_the_same_sequence(small):
    loader = DeviceLoader(small, 8, "cpu")
    full = _epoch(loader, 2)
    loader.skip(4)
    assert _epoch(loader, 2) == full[32:]
    assert _epoch(loader, 2) == full  # skip applies to one pass only


@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_shards_are_disjoint_equal_and_cover_the_epoch(small, drop_last):
    shards = [_epoch(DeviceLoader(small, 4, "cpu", drop_last=drop_last, rank=r, world_size=3,
                                  seed=7), 1) for r in range(3)]
    per_rank = 16 if drop_last else 17  # 50 // 12 batches of 4, or ceil(50 / 3) samples
    assert [len(s) for s in shards] == [per_rank] * 3
    everything = sum(shards, [])
    if drop_last:
        assert len(set(everything)) == 48
    else:
        assert set(everything) == set(range(50)) and len(everything) == 51
    # Rank r takes samples r::3 of the same permutation a single process sees.
    single = _epoch(DeviceLoader(small, 4, "cpu", drop_last=False, seed=7), 1)
    interleaved = [shards[i % 3][i // 3] for i in range(3 * per_rank)]
    assert interleaved == (single + single)[:3 * per_rank]


def test_batch_larger_than_data_is_a_clear_error(small):
    with pytest.raises(DataError, match="fewer than one batch.*--batch-size"):
        DeviceLoader(small, 64, "cpu")
    assert len(DeviceLoader(small, 64, "cpu", drop_last=False)) == 1


def test_channels_last_and_sample_images(small):
    x, _, _ = next(iter(DeviceLoader(small, 8, "cpu", channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    picked = sample_images(small, 10, seed=3)
    assert picked.shape == (10, 3, 4, 4) and picked.dtype == torch.uint8
    assert len(set(picked[:, 0, 0, 0].tolist())) == 10
    assert torch.equal(picked, sample_images(small, 10, seed=3))
    assert len(sample_images(small, 500)) == 50


def test_require_labels_keeps_only_labelled_samples(small):
    labels = small.labels.clone()
    labels[:10] = -1
    mixed = ImageData(small.images, labels, small.classes)
    kept = require_labels(mixed)
    assert len(kept) == 40 and (kept.labels >= 0).all()


def test_stratified_split_rounds_per_class_and_keeps_singletons_and_unlabelled_in_train():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] + [-1] * 4)
    train, test = stratified_split(labels, seed=5)
    assert sorted(labels[test].tolist()) == [0, 0, 1]  # round(2.0), round(0.6), round(0.2)
    assert sorted(train.tolist() + test.tolist()) == list(range(len(labels)))
    assert set(range(13, 18)) <= set(train.tolist())
    assert torch.equal(test, stratified_split(labels, seed=5)[1])
    assert not torch.equal(test, stratified_split(labels, seed=6)[1])
