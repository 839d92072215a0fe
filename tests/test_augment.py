from __future__ import annotations

import dataclasses

import pytest
import torch

from sslzoo.augment import (AUGMENTS, CropFlipAugment, InstDiscAugment, MoCoV1Augment,
                            MoCoV2Augment, NoAugment, SimCLRAugment, ViewAugment, ViewConfig)
from sslzoo.config import build, describe
from sslzoo.errors import ConfigError
from tests.tiny import only


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, params=["fused", "kornia"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with each implementation of the view pipelines."""
    real = ViewAugment.__init__

    def init(self: ViewAugment, config: object = None, image_size: int = 32) -> None:
        config = config if config is not None else type(self).Config()
        real(self, dataclasses.replace(config, backend=request.param), image_size)
    monkeypatch.setattr(ViewAugment, "__init__", init)
    return request.param


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cls", AUGMENTS, ids=lambda c: c.name)
def test_every_pipeline_keeps_size_and_range(cls: type[ViewAugment], images: torch.Tensor) -> None:
    out = cls(image_size=32)(images)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cls", AUGMENTS, ids=lambda c: c.name)
@pytest.mark.parametrize("in_size", [24, 40])
def test_output_size_is_image_size_whatever_the_input(cls: type[ViewAugment], in_size: int) -> None:
    out = cls(image_size=32)(torch.rand(4, 3, in_size, in_size + 8))
    assert out.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("cls", AUGMENTS, ids=lambda c: c.name)
def test_single_channel_images(cls: type[ViewAugment]) -> None:
    out = cls(image_size=16)(torch.rand(4, 1, 16, 16))
    assert out.shape == (4, 1, 16, 16)


@pytest.mark.parametrize("cls", [SimCLRAugment, MoCoV1Augment, MoCoV2Augment, CropFlipAugment],
                         ids=lambda c: c.name)
def test_one_call_draws_independent_parameters_per_image(cls: type[ViewAugment]) -> None:
    # Asymmetric content so that every crop offset and flip changes the pixels.
    image = torch.linspace(0, 1, 3 * 32 * 32).reshape(1, 3, 32, 32) ** 2
    out = cls(image_size=32)(image.repeat(16, 1, 1, 1))
    distinct = {tuple(v.tolist()) for v in out.flatten(1)[:, ::37]}
    assert len(distinct) >= 12  # crop-flip has 9x9x2 outcomes; collisions are rare


@pytest.mark.parametrize("cls", AUGMENTS, ids=lambda c: c.name)
def test_deterministic_under_manual_seed(cls: type[ViewAugment], images: torch.Tensor) -> None:
    augment = cls(image_size=32)
    torch.manual_seed(123)
    first = augment(images)
    torch.manual_seed(123)
    assert torch.equal(first, augment(images))


def test_hflip_prob_one_is_an_exact_flip(images: torch.Tensor) -> None:
    assert torch.equal(ViewAugment(only(hflip_prob=1.0))(images), images.flip(-1))


def test_everything_off_is_the_identity(images: torch.Tensor) -> None:
    out = ViewAugment(only())(images)
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()
    assert torch.equal(NoAugment(image_size=32)(images), images)


def test_grayscale_prob_one_gives_equal_channels(images: torch.Tensor) -> None:
    out = ViewAugment(only(grayscale_prob=1.0))(images)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    gray = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    assert torch.allclose(out[:, 0], gray, atol=1e-3)


def test_jitter_prob_zero_and_one(images: torch.Tensor) -> None:
    assert torch.equal(ViewAugment(only(jitter_prob=0.0, brightness=0.8))(images), images)
    dark = images * 0.5 + 0.01  # a factor of at most 1.8 never reaches 1
    out = ViewAugment(only(jitter_prob=1.0, brightness=0.8, contrast=0.0, saturation=0.0,
                           hue=0.0))(dark)
    # brightness multiplies every image by its own factor
    factor = out.flatten(1)[:, 0] / dark.flatten(1)[:, 0]
    assert torch.allclose(out, dark * factor.view(-1, 1, 1, 1), atol=1e-5)
    assert ((factor >= 0.2 - 1e-5) & (factor <= 1.8 + 1e-5)).all()
    assert factor.unique().numel() == len(images)


def test_blur_prob_one_smooths_and_keeps_the_mean() -> None:
    x = torch.rand(4, 3, 32, 32)
    out = ViewAugment(only(blur_prob=1.0, blur_sigma=(1.5, 2.0)))(x)
    assert out.diff(dim=-1).abs().mean() < x.diff(dim=-1).abs().mean() * 0.8
    assert torch.allclose(out.mean(), x.mean(), atol=0.01)


def test_blur_kernel_is_ten_percent_of_the_image_and_odd() -> None:
    assert ViewAugment(only(blur_prob=0.5), image_size=32).blur_kernel == 3
    assert ViewAugment(only(blur_prob=0.5), image_size=96).blur_kernel == 9
    assert ViewAugment(only(blur_prob=0.5), image_size=224).blur_kernel == 23  # SimCLR's code


def test_solarize_prob_one_inverts_bright_pixels(images: torch.Tensor) -> None:
    out = ViewAugment(only(solarize_prob=1.0))(images)
    expected = torch.where(images >= 0.5, 1 - images, images)
    assert torch.allclose(out, expected, atol=1e-6)


def test_padded_crop_shifts_by_at_most_the_padding() -> None:
    x = torch.rand(16, 3, 32, 32) * 0.5 + 0.5  # no zeros, so padding shows as zeros
    out = ViewAugment(only(crop="padded", crop_padding=0.125))(x)
    zero_cols = (out == 0).all(dim=1).all(dim=1).sum(dim=-1)
    assert zero_cols.max() <= 4
    assert (zero_cols > 0).any()


def test_uint8_input_is_scaled(images: torch.Tensor) -> None:
    as_bytes = (images * 255).round().to(torch.uint8)
    out = ViewAugment(only())(as_bytes)
    assert out.dtype == torch.float32
    assert torch.allclose(out, as_bytes.float() / 255)


def test_runs_under_autocast(images: torch.Tensor) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SimCLRAugment(image_size=32)(images)
    assert out.dtype == torch.float32


def test_rejects_a_batch_without_channels() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        SimCLRAugment()(torch.rand(32, 32))


@pytest.mark.parametrize("changes, message", [
    (dict(crop_scale=(0.5, 0.2)), "crop_scale must be"),
    (dict(crop_scale=(0.0, 1.0)), "crop_scale must be"),
    (dict(crop_scale=(0.2, 1.5)), "crop_scale must be"),
    (dict(crop_ratio=(1.5, 0.5)), "crop_ratio must be"),
    (dict(blur_sigma=(2.0, 0.1)), "blur_sigma must be"),
    (dict(hflip_prob=1.5), "hflip_prob must be <= 1"),
    (dict(grayscale_prob=-0.1), "grayscale_prob must be >= 0"),
    (dict(hue=0.7), "hue must be <= 0.5"),
    (dict(brightness=-1.0), "brightness must be >= 0"),
    (dict(crop="random"), "crop must be one of"),
])
def test_invalid_config_is_a_config_error(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SimCLRAugment.Config(**changes)


def test_interval_error_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError, match=r"--set aug\.crop_scale=0\.2,1\.0"):
        MoCoV2Augment.Config(crop_scale=(0.9, 0.1))


def test_config_builds_from_cli_strings() -> None:
    config = build(SimCLRAugment.Config, {"grayscale_prob": "0", "crop_scale": "0.2,1"})
    assert config.grayscale_prob == 0.0 and config.crop_scale == (0.2, 1.0)
    assert SimCLRAugment(config).grayscale is None
    with pytest.raises(ConfigError):
        build(SimCLRAugment.Config, {"crop_scale": "0.9,0.1"})


def test_paper_defaults() -> None:
    simclr = SimCLRAugment.Config()
    assert (simclr.crop_scale, simclr.jitter_prob, simclr.grayscale_prob, simclr.blur_prob) == \
        ((0.08, 1.0), 0.8, 0.2, 0.5)
    assert (simclr.brightness, simclr.contrast, simclr.saturation, simclr.hue) == \
        (0.8, 0.8, 0.8, 0.2)
    v1 = MoCoV1Augment.Config()
    assert (v1.crop_scale, v1.jitter_prob, v1.hue, v1.blur_prob, v1.grayscale_first) == \
        ((0.2, 1.0), 1.0, 0.4, 0.0, True)
    assert dataclasses.asdict(InstDiscAugment.Config()) == dataclasses.asdict(v1)
    v2 = MoCoV2Augment.Config()
    assert (v2.crop_scale, v2.jitter_prob, v2.hue, v2.blur_prob, v2.blur_sigma) == \
        ((0.2, 1.0), 0.8, 0.1, 0.5, (0.1, 2.0))
    light = CropFlipAugment.Config()
    assert (light.crop, light.hflip_prob, light.jitter_prob, light.blur_prob) == \
        ("padded", 0.5, 0.0, 0.0)


def test_registered_pipelines_have_names_docs_and_help() -> None:
    names = [cls.name for cls in AUGMENTS]
    assert names == ["simclr", "moco-v1", "moco-v2", "instdisc", "crop-flip", "none"]
    for cls in AUGMENTS:
        assert cls.__doc__ and issubclass(cls.Config, ViewConfig)
        assert all(info.help for info in describe(cls.Config))


def test_pipelines_are_registered_as_builtins() -> None:
    from sslzoo import builtins

    registered: list[type] = []
    builtins.register_augments(register=registered.append)
    assert registered == AUGMENTS


def _poses(image: torch.Tensor) -> list[torch.Tensor]:
    """The 8 images of the square's symmetry group (4 rotations, each flipped or not)."""
    return [torch.rot90(im, k, dims=(-2, -1)) for im in (image, image.flip(-1)) for k in range(4)]


def test_vflip_and_rot90_draw_per_sample_at_their_rates_and_reach_all_8_poses():
    from sslzoo.augment import NoAugment

    torch.manual_seed(0)
    image = torch.arange(16.0).reshape(1, 1, 4, 4) / 16         # no symmetry of its own
    batch = image.repeat(4000, 1, 1, 1)
    poses = torch.stack(_poses(image[0]))                        # (8, 1, 4, 4)

    def pose_index(views):
        match = (views[:, None] == poses[None]).flatten(2).all(-1)   # (B, 8)
        assert match.any(1).all(), "every view is one of the 8 poses"
        return match.float().argmax(1)

    vflip = NoAugment(NoAugment.Config(vflip_prob=0.3), image_size=4)(batch)
    vflipped = (vflip == image.flip(-2)).flatten(1).all(1).float().mean()
    assert abs(vflipped - 0.3) < 0.03
    rot = NoAugment(NoAugment.Config(rot90_prob=0.6), image_size=4)(batch)
    turned = pose_index(rot)
    assert abs((turned != 0).float().mean() - 0.6) < 0.03
    assert set(turned.tolist()) == {0, 1, 2, 3}
    counts = torch.bincount(turned, minlength=8)[1:4].float()   # 90/180/270 equally often
    assert (counts / counts.sum() - 1 / 3).abs().max() < 0.04
    both = NoAugment(NoAugment.Config(hflip_prob=0.5, rot90_prob=0.75), image_size=4)(batch)
    freq = torch.bincount(pose_index(both), minlength=8).float() / len(batch)
    assert (freq > 0).all() and (freq - 1 / 8).abs().max() < 0.03


def test_rotation_and_vertical_flip_leave_pixel_values_exact():
    from sslzoo.augment import NoAugment

    x = torch.rand(64, 3, 8, 8)
    out = NoAugment(NoAugment.Config(vflip_prob=0.5, rot90_prob=1.0), image_size=8)(x)
    assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_the_backend_fixture_reaches_every_pipeline(backend: str) -> None:
    assert all(cls(image_size=8).config.backend == backend for cls in AUGMENTS)


def test_interval_message_names_the_condition_that_failed():
    from sslzoo.augment import SimCLRAugment

    with pytest.raises(ConfigError, match=r"a <= b fails for \(0\.9, 0\.5\)"):
        SimCLRAugment.Config(crop_scale=(0.9, 0.5))
