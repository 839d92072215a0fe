"""The Augment interface: batched augmentation on the training device.

An augment draws independent random parameters for every sample of a batch and applies
them in one batched call on the batch's device (kornia.augmentation does exactly this),
so no image is augmented on the CPU one at a time. Named pipelines are registered like
methods; their parameters form a ``Config`` dataclass that users set with
``--set aug.NAME=VALUE`` or the ``[augment]`` table of a config file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from sslzoo.config import format_value, hp, validate
from sslzoo.errors import ConfigError
from sslzoo.views import FusedViews, resize


class Augment(nn.Module):
    """Base class of augmentation pipelines.

    ``forward`` takes float images in ``[0, 1]`` of shape ``(B, C, H, W)`` on any device
    and returns the augmented batch (or, for pretext tasks, whatever the method trains
    on, e.g. images and labels). Calls run without gradients and outside autocast.

    Attributes:
        name: the registered name (``sslzoo list --kind augments``).
        Config: dataclass of the pipeline's parameters, each made with
            :func:`sslzoo.config.hp`.
    """

    name: ClassVar[str] = ""

    @dataclass
    class Config:
        pass

    def __init__(self, config: Any = None, image_size: int = 32) -> None:
        super().__init__()
        self.config = config if config is not None else type(self).Config()
        self.image_size = image_size

    @torch.compiler.disable  # random per-sample parameters: nothing for torch.compile to fuse
    def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            return super().__call__(x, *args, **kwargs)


# --------------------------------------------------------------------------------------
# View pipelines: random crop, flip and colour distortion, as SimCLR and MoCo use them.
# --------------------------------------------------------------------------------------

_CROPS = ("resized", "padded", "none")
_BACKENDS = ("fused", "kornia")


def _check_interval(config: Any, name: str, low: float, high: float | None) -> None:
    """``getattr(config, name)`` must be an interval ``(a, b)``, ``low < a <= b <= high``;
    the message names the condition that failed."""
    a, b = getattr(config, name)
    checks = [(f"a > {low:g}", low < a), ("a <= b", a <= b)]
    if high is not None:
        checks.append((f"b <= {high:g}", b <= high))
    failed = [text for text, ok in checks if not ok]
    if failed:
        bounds = f"{low:g} < a <= b" + (f" <= {high:g}" if high is not None else "")
        default = format_value(type(config).__dataclass_fields__[name].default)
        raise ConfigError(f"{name} must be (a, b) with {bounds}, but {' and '.join(failed)} "
                          f"fails for {(a, b)!r}; set it with --set aug.{name}={default}")


@dataclass
class ViewConfig:
    """Parameters of :class:`ViewAugment`; the defaults are SimCLR's (Chen et al. 2020)."""

    crop: Literal["resized", "padded", "none"] = hp(
        "resized", "random crop: 'resized' (RandomResizedCrop), 'padded' (pad, then crop "
        "image_size) or 'none' (only resize to image_size)", choices=_CROPS)
    crop_scale: tuple[float, float] = hp(
        (0.08, 1.0), "area range of a 'resized' crop, as a fraction of the image", gt=0, le=1)
    crop_ratio: tuple[float, float] = hp(
        (3 / 4, 4 / 3), "aspect-ratio (w/h) range of a 'resized' crop", gt=0)
    crop_padding: float = hp(
        0.125, "zero padding of a 'padded' crop, as a fraction of image_size (4 px at 32)",
        ge=0, le=1)
    hflip_prob: float = hp(0.5, "probability of a horizontal flip", ge=0, le=1)
    vflip_prob: float = hp(0.0, "probability of a vertical flip (images without a canonical "
                           "orientation: microscopy, satellite, medical)", ge=0, le=1)
    rot90_prob: float = hp(0.0, "probability of a rotation by 90, 180 or 270 degrees (chosen "
                           "uniformly); 0.75 with hflip_prob=0.5 makes all 8 poses equally "
                           "likely", ge=0, le=1)
    jitter_prob: float = hp(0.8, "probability of colour jitter", ge=0, le=1)
    brightness: float = hp(0.8, "brightness jitter: factor drawn from [max(0, 1-b), 1+b]", ge=0)
    contrast: float = hp(0.8, "contrast jitter: factor drawn from [max(0, 1-c), 1+c]", ge=0)
    saturation: float = hp(0.8, "saturation jitter: factor drawn from [max(0, 1-s), 1+s]", ge=0)
    hue: float = hp(0.2, "hue jitter: shift drawn from [-h, h] turns", ge=0, le=0.5)
    grayscale_prob: float = hp(0.2, "probability of converting to grayscale", ge=0, le=1)
    grayscale_first: bool = hp(
        False, "convert to grayscale before colour jitter (InstDisc and MoCo v1 code order)")
    blur_prob: float = hp(0.5, "probability of Gaussian blur", ge=0, le=1)
    blur_sigma: tuple[float, float] = hp((0.1, 2.0), "range of the blur's sigma, in pixels", gt=0)
    blur_kernel_frac: float = hp(
        0.1, "blur kernel size as a fraction of image_size (rounded down to an odd size, "
        "at least 3)", gt=0, le=1)
    solarize_prob: float = hp(0.0, "probability of solarizing (pixels >= 0.5 become 1 - x)",
                              ge=0, le=1)
    backend: Literal["fused", "kornia"] = hp(
        "fused", "implementation: 'fused' (sslzoo.views: parameters drawn on the device, "
        "one grid_sample for crop, flips and turns, no host sync) or 'kornia' "
        "(kornia.augmentation, one module per operation)", choices=_BACKENDS)

    def __post_init__(self) -> None:
        _check_interval(self, "crop_scale", 0, 1)
        _check_interval(self, "crop_ratio", 0, None)
        _check_interval(self, "blur_sigma", 0, None)
        validate(self, where="--set aug.")


def _override(name: str, default: Any, help: str) -> Any:
    """The :class:`ViewConfig` field ``name`` with another default and help, same bounds."""
    meta = ViewConfig.__dataclass_fields__[name].metadata
    return hp(default, help, gt=meta["gt"], ge=meta["ge"], lt=meta["lt"], le=meta["le"],
              choices=meta["choices"])


class ViewAugment(Augment):
    """One random view per image: crop, flip, colour jitter, grayscale, blur, solarize.

    Every operation draws its parameters independently for each image of the batch and
    runs batched on the batch's device; an operation whose probability or strength is 0
    is left out. The order is SimCLR's: crop and resize, flip, colour jitter (with
    probability ``jitter_prob``), grayscale, blur, solarize (``grayscale_first`` swaps
    jitter and grayscale). Images come in and go out as float in ``[0, 1]``,
    ``(B, C, H, W)`` -> ``(B, C, image_size, image_size)``, unnormalised. Call the augment
    twice for two views.

    Vertical flips and 90-degree rotations (``vflip_prob``, ``rot90_prob``, off by
    default as in the papers) follow the horizontal flip; with them all 8 poses of the
    square's symmetry group occur, for images that have no canonical orientation.

    Two implementations draw the same distributions (``aug.backend``):

    * ``fused`` (default), :class:`sslzoo.views.FusedViews`: every parameter drawn on the
      device, crop, flips and turns as one ``grid_sample``, per-image blur kernels in one
      depthwise convolution; a constant number of tensor operations per call whatever
      the batch size, and no host sync. Measured in ``benchmarks/RESULTS.md``.
    * ``kornia``: one ``kornia.augmentation`` module per operation.

    Two differences from torchvision's per-image pipelines, shared by both: colour
    jitter applies its four adjustments in one random order per batch (torchvision draws
    one per image; the factors are still per image), and a 'resized' crop is resampled
    without antialiasing. Single-channel images skip saturation and hue, as torchvision
    does. The fused crop samples the full image, so a crop smaller than the output blends
    its outermost half pixel with the neighbouring pixels where kornia repeats its edge.

    Args:
        config: a :class:`ViewConfig` (the class's ``Config``); defaults when ``None``.
        image_size: side of the square output.
    """

    Config = ViewConfig

    def __init__(self, config: Any = None, image_size: int = 32) -> None:
        super().__init__(config, image_size)
        if image_size < 1:
            raise ConfigError(f"image_size must be >= 1, got {image_size}")
        c, size = self.config, (image_size, image_size)
        validate(c, where="--set aug.")
        crop: nn.Module | None = None
        if c.crop == "resized":
            crop = K.RandomResizedCrop(size, scale=c.crop_scale, ratio=c.crop_ratio,
                                      align_corners=False)
        elif c.crop == "padded" and round(c.crop_padding * image_size) > 0:
            crop = K.RandomCrop(size, padding=round(c.crop_padding * image_size))
        self.crop = crop
        self.flip = K.RandomHorizontalFlip(p=c.hflip_prob) if c.hflip_prob > 0 else None
        self.vflip = K.RandomVerticalFlip(p=c.vflip_prob) if c.vflip_prob > 0 else None
        self.rot90 = RandomRot90(c.rot90_prob) if c.rot90_prob > 0 else None
        strengths = (c.brightness, c.contrast, c.saturation, c.hue)
        self.jitter = (K.ColorJitter(*strengths, p=c.jitter_prob)
                       if c.jitter_prob > 0 and any(strengths) else None)
        # torchvision leaves saturation and hue alone on single-channel images.
        self.jitter_gray = (K.ColorJitter(c.brightness, c.contrast, 0.0, 0.0, p=c.jitter_prob)
                            if c.jitter_prob > 0 and (c.brightness or c.contrast) else None)
        self.grayscale = K.RandomGrayscale(p=c.grayscale_prob) if c.grayscale_prob > 0 else None
        self.blur_kernel = max(3, 2 * (int(c.blur_kernel_frac * image_size) // 2) + 1)
        self.blur = (K.RandomGaussianBlur((self.blur_kernel,) * 2, c.blur_sigma, p=c.blur_prob)
                     if c.blur_prob > 0 else None)
        self.solarize = (K.RandomSolarize(thresholds=(0.5, 0.5), additions=(0.0, 0.0),
                                          p=c.solarize_prob) if c.solarize_prob > 0 else None)
        self.fused = FusedViews(c, image_size, self.blur_kernel)

    def forward(self, x: Tensor) -> Tensor:
        """One augmented view of every image.

        Args:
            x: images ``(B, C, H, W)``, float in ``[0, 1]`` (uint8 is scaled by 1/255).

        Returns:
            ``(B, C, image_size, image_size)`` float in ``[0, 1]``: float64 for float64
            input, float32 otherwise.
        """
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects images (B, C, H, W), got shape "
                             f"{tuple(x.shape)}")
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        x = x.to(dtype) / 255 if x.dtype == torch.uint8 else x.to(dtype)
        if self.config.backend == "fused":
            return self.fused(x)
        if self.crop is None or self.config.crop == "padded":
            x = self._resize(x)
        if self.crop is not None:
            x = self.crop(x)
        for op in (self.flip, self.vflip, self.rot90):
            if op is not None:
                x = op(x)
        jitter = self.jitter if x.shape[1] == 3 else self.jitter_gray
        colour = [jitter, self.grayscale]
        for op in (colour[::-1] if self.config.grayscale_first else colour):
            if op is not None:
                x = op(x)
        for op in (self.blur, self.solarize):
            if op is not None:
                x = op(x)
        return x.clamp_(0, 1)

    def _resize(self, x: Tensor) -> Tensor:
        return resize(x, self.image_size).clone()

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, config={self.config}"


class RandomRot90(nn.Module):
    """Rotate each image of a batch, with probability ``p``, by 90, 180 or 270 degrees
    (drawn uniformly and independently per image), exactly, with ``torch.rot90``.

    kornia's ``RandomRotation90`` resamples through an affine warp and draws the number
    of turns from a rounded continuous range (so the end values come half as often);
    square images need neither.

    Args:
        p: probability that an image is rotated.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, S, S); turns: (B,) in {0, 1, 2, 3}, 0 with probability 1 - p
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rot90 needs square images, got {tuple(x.shape[-2:])}")
        rotate = torch.rand(len(x), device=x.device) < self.p
        turns = torch.randint(1, 4, (len(x),), device=x.device) * rotate
        out = x.clone()
        for k in (1, 2, 3):   # selected with where, not boolean indexing: no host sync
            out = torch.where((turns == k).view(-1, 1, 1, 1), torch.rot90(x, k, dims=(-2, -1)), out)
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SimCLRAugment(ViewAugment):
    """SimCLR's augmentation: resized crop, flip, strong colour distortion and blur.

    Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020, Appendix A.

    Random crop with resize and flip, colour distortion and Gaussian blur: a
    RandomResizedCrop of area (0.08, 1) and aspect ratio (3/4, 4/3), flip with p=0.5,
    colour jitter of strength s=1 -- the paper's PyTorch pseudo-code,
    ``RandomApply([ColorJitter(0.8*s, 0.8*s, 0.8*s, 0.2*s)], p=0.8)`` and
    ``RandomGrayscale(p=0.2)`` -- and Gaussian blur: "We blur the image 50% of the time
    using a Gaussian kernel. We randomly sample σ ∈ [0.1, 2.0], and the
    kernel size is set to be 10% of the image height/width". These are the ImageNet
    settings; the official code's CIFAR-10 command uses strength 0.5 and no blur:
    ``--set aug.brightness=0.4 --set aug.contrast=0.4 --set aug.saturation=0.4
    --set aug.hue=0.1 --set aug.blur_prob=0``.
    """

    name: ClassVar[str] = "simclr"

    @dataclass
    class Config(ViewConfig):
        pass


class MoCoV1Augment(ViewAugment):
    """MoCo v1's augmentation, which is InstDisc's: crop, grayscale, jitter, flip.

    He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
    CVPR 2020; the pipeline of Wu et al. 2018.

    The official code (facebookresearch/moco, ``main_moco.py``): "RandomResizedCrop(224,
    scale=(0.2, 1.)), RandomGrayscale(p=0.2), ColorJitter(0.4, 0.4, 0.4, 0.4),
    RandomHorizontalFlip()" -- the jitter always applied, grayscale before it, no blur.
    """

    name: ClassVar[str] = "moco-v1"

    @dataclass
    class Config(ViewConfig):
        crop_scale: tuple[float, float] = _override(
            "crop_scale", (0.2, 1.0), "area range of a 'resized' crop (MoCo v1: scale=(0.2, 1.))")
        jitter_prob: float = _override("jitter_prob", 1.0, "probability of colour jitter "
                                       "(MoCo v1: always)")
        brightness: float = _override("brightness", 0.4, "brightness jitter (MoCo v1: 0.4)")
        contrast: float = _override("contrast", 0.4, "contrast jitter (MoCo v1: 0.4)")
        saturation: float = _override("saturation", 0.4, "saturation jitter (MoCo v1: 0.4)")
        hue: float = _override("hue", 0.4, "hue jitter in turns (MoCo v1: 0.4)")
        grayscale_first: bool = _override(
            "grayscale_first", True, "grayscale before colour jitter (MoCo v1 code order)")
        blur_prob: float = _override("blur_prob", 0.0, "probability of Gaussian blur "
                                     "(MoCo v1: none)")


class InstDiscAugment(MoCoV1Augment):
    """InstDisc's augmentation: crop, grayscale, colour jitter and flip.

    Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination", CVPR 2018.

    The official code (zhirongw/lemniscate.pytorch, ``main.py``): "RandomResizedCrop(224,
    scale=(0.2,1.)), RandomGrayscale(p=0.2), ColorJitter(0.4, 0.4, 0.4, 0.4),
    RandomHorizontalFlip()" -- the pipeline MoCo v1 later reused.
    """

    name: ClassVar[str] = "instdisc"


class MoCoV2Augment(ViewAugment):
    """MoCo v2's augmentation: SimCLR's pipeline with MoCo's crop scale and jitter.

    Chen et al., "Improved Baselines with Momentum Contrastive Learning",
    arXiv:2003.04297, 2020.

    The official code (facebookresearch/moco, ``--aug-plus``): "RandomResizedCrop(224,
    scale=(0.2, 1.)), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
    RandomGrayscale(p=0.2), RandomApply([GaussianBlur([.1, 2.])], p=0.5),
    RandomHorizontalFlip()" ("MoCo v2's aug: similar to SimCLR"). PIL's blur has no kernel
    size; here it is 10% of the image side, as in SimCLR.
    """

    name: ClassVar[str] = "moco-v2"

    @dataclass
    class Config(ViewConfig):
        crop_scale: tuple[float, float] = _override(
            "crop_scale", (0.2, 1.0), "area range of a 'resized' crop (MoCo v2: scale=(0.2, 1.))")
        brightness: float = _override("brightness", 0.4, "brightness jitter (MoCo v2: 0.4)")
        contrast: float = _override("contrast", 0.4, "contrast jitter (MoCo v2: 0.4)")
        saturation: float = _override("saturation", 0.4, "saturation jitter (MoCo v2: 0.4)")
        hue: float = _override("hue", 0.1, "hue jitter in turns (MoCo v2: 0.1)")


class CropFlipAugment(ViewAugment):
    """Light augmentation for pretext tasks: a padded random crop and a horizontal flip.

    The standard CIFAR augmentation that RotNet's official code (Gidaris et al., ICLR
    2018, gidariss/FeatureLearningRotNet) trains its rotation pretext task with:
    "RandomCrop(32, padding=4), RandomHorizontalFlip()". The padding scales with the image
    (4 px at 32). Pretext tasks (rotation, jigsaw, colorization, inpainting) learn from
    the image content itself, so colour distortion stays off.
    """

    name: ClassVar[str] = "crop-flip"

    @dataclass
    class Config(ViewConfig):
        crop: Literal["resized", "padded", "none"] = _override(
            "crop", "padded", "random crop: 'resized', 'padded' or 'none' (default: padded)")
        jitter_prob: float = _override("jitter_prob", 0.0, "probability of colour jitter")
        grayscale_prob: float = _override("grayscale_prob", 0.0,
                                          "probability of converting to grayscale")
        blur_prob: float = _override("blur_prob", 0.0, "probability of Gaussian blur")


class NoAugment(ViewAugment):
    """No augmentation: images are only resized to ``image_size`` when they differ.

    Any operation can still be switched on, e.g. ``--set aug.hflip_prob=0.5``.
    """

    name: ClassVar[str] = "none"

    @dataclass
    class Config(ViewConfig):
        crop: Literal["resized", "padded", "none"] = _override(
            "crop", "none", "random crop: 'resized', 'padded' or 'none' (default: none)")
        hflip_prob: float = _override("hflip_prob", 0.0, "probability of a horizontal flip")
        jitter_prob: float = _override("jitter_prob", 0.0, "probability of colour jitter")
        grayscale_prob: float = _override("grayscale_prob", 0.0,
                                          "probability of converting to grayscale")
        blur_prob: float = _override("blur_prob", 0.0, "probability of Gaussian blur")


AUGMENTS: list[type[Augment]] = [SimCLRAugment, MoCoV1Augment, MoCoV2Augment, InstDiscAugment,
                                 CropFlipAugment, NoAugment]
