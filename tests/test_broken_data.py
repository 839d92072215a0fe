"""A folder seeded with every kind of broken or unusual image file: decodable ones become
RGB, the rest are skipped and reported by count and path; --strict-data stops at the
first; unusable folders exit 2 with one line."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageOps

from sslzoo.cli import cli
from sslzoo.data import load_folder, read_image, to_rgb
from sslzoo.errors import DataError

GOOD = 6
BROKEN = {"truncated.jpg", "zero.jpg", "text.jpg", "dangling-link.jpg", "pipe.jpg"}
DECODABLE = {"cmyk.jpg", "gray16.png", "palette.png", "rgba.png", "exif-rotated.jpg"}


def _exif_rotated(path) -> None:
    """16 wide x 8 high, red left half, stored with EXIF orientation 6 (rotate 90 CW)."""
    img = Image.new("RGB", (16, 8), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif, quality=95)


def make_broken_folder(root):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(GOOD):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / f"good{i}.jpg")
    full = root / "full.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    (root / "truncated.jpg").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("these are notes, not a picture\n")
    os.symlink(root / "no-such-file.jpg", root / "dangling-link.jpg")   # cannot be opened
    os.mkfifo(root / "pipe.jpg")                                         # would block a reader
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    Image.fromarray(np.full((20, 20), 32768, dtype=np.uint16)).save(root / "gray16.png")
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0])
    palette.save(root / "palette.png")
    Image.new("RGBA", (20, 20), (10, 20, 30, 0)).save(root / "rgba.png")
    _exif_rotated(root / "exif-rotated.jpg")
    return root


def test_decodable_kinds_become_rgb_and_broken_ones_are_skipped_with_paths(tmp_path):
    folder = make_broken_folder(tmp_path / "imgs")
    with pytest.warns(UserWarning, match="skipped 5 unreadable image"):
        data = load_folder(folder, "train", 16)
    assert len(data) == GOOD + len(DECODABLE) and data.images.shape[1:] == (3, 16, 16)
    assert sorted(os.path.basename(p) for p, _ in data.skipped) == sorted(BROKEN)
    reasons = {os.path.basename(p): why for p, why in data.skipped}
    assert reasons["zero.jpg"] == "empty file" and reasons["text.jpg"] == "not an image"
    assert reasons["pipe.jpg"] == "not a regular file"
    assert "truncated" in reasons["truncated.jpg"]


def test_odd_formats_convert_to_rgb_faithfully(tmp_path):
    folder = make_broken_folder(tmp_path / "imgs")
    gray16 = read_image(folder / "gray16.png", 8)
    assert torch.all(gray16 == 128)                      # 32768 / 257, not clipped to 255
    cmyk = read_image(folder / "cmyk.jpg", 8).float().mean((1, 2))
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60   # C=0 M=Y=255: red
    assert torch.equal(read_image(folder / "palette.png", 8)[:, 0, 0], torch.tensor([0, 200, 0],
                                                                                  dtype=torch.uint8))
    with Image.open(folder / "exif-rotated.jpg") as raw:
        upright = to_rgb(raw)
        assert upright.size == (8, 16)                   # transposed to upright
        assert np.array_equal(np.asarray(upright), np.asarray(ImageOps.exif_transpose(raw)))
    top = np.asarray(upright)[:8].mean((0, 1))
    assert top[0] > 200 and top[2] < 60                  # the red half is on top after 90 CW


def test_strict_data_stops_at_the_first_broken_file(tmp_path):
    folder = make_broken_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match=r"--strict-data: cannot use .*\.jpg \("):
        load_folder(folder, "train", 16, strict=True)


def _train(*args):
    base = ["train", "simclr", "--backbone", "test_efficientnet", "--image-size", "16",
            "--max-steps", "1", "--device", "cpu", "--set", "proj_hidden_dim=8",
            "--set", "proj_dim=8"]
    return CliRunner().invoke(cli, [*base, *args])


def test_training_on_the_broken_folder_reports_skipped_files(tmp_path):
    folder = make_broken_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    result = _train("--data", str(folder), "--batch-size", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "skipped 5 file(s) that cannot be read as images" in result.stderr
    skipped = json.loads((out / "config.json").read_text())["skipped_files"]
    assert skipped["count"] == 5
    assert {os.path.basename(s["path"]) for s in skipped["first"]} == BROKEN
    strict = _train("--data", str(folder), "--batch-size", "4", "--out", str(tmp_path / "s"),
                    "--strict-data")
    assert strict.exit_code == 2 and "--strict-data" in strict.stderr
    assert len(strict.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["empty folder", "missing path", "path is a file",
                                  "fewer good images than one batch"])
def test_unusable_data_exits_2_with_one_line(tmp_path, case):
    if case == "empty folder":
        (tmp_path / "d").mkdir()
    elif case == "path is a file":
        (tmp_path / "d").write_text("x")
    elif case == "fewer good images than one batch":
        make_broken_folder(tmp_path / "d")               # 11 usable images
    result = _train("--data", str(tmp_path / "d"), "--batch-size", "12",
                    "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
