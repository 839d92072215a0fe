"""The core's backbones: torchvision ResNets, small-image ResNets and any timm model.

``BACKBONES`` maps each built-in name to ``(factory, summary)``; :mod:`sslzoo.builtins`
registers them through the ``register_backbones`` hook like any plugin would.
:func:`create_backbone` resolves a registered name first and falls back to timm, so
every ``timm.list_models()`` name works too (``resnet10t``, ``timm/vit_tiny_patch16_224``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import timm
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from sslzoo.backbone import Backbone
from sslzoo.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from sslzoo.registry import Registry

BackboneFactory = Callable[..., Backbone]

TIMM_PREFIX = "timm/"


class TorchvisionResNet(Backbone):
    """A torchvision ResNet without its classifier.

    Submodules keep torchvision's names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``),
    which are also timm's ResNet names, so a state dict loads into either library once
    ``fc`` is added back.

    Args:
        resnet: a ``torchvision.models.ResNet``; its ``fc`` is dropped.
        in_chans: input channels of ``resnet.conv1``.
    """

    def __init__(self, resnet: ResNet, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1, self.bn1 = resnet.conv1, resnet.bn1
        self.relu, self.maxpool = resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        self.num_features = self.feature_channels = resnet.fc.in_features
        self.in_chans = in_chans

    def forward_features(self, x: Tensor) -> Tensor:
        """Output of ``layer4``: ``(B, num_features, H/32, W/32)`` (``H/8`` for the small stem)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        """Globally average-pooled ``layer4`` features ``(B, num_features)``."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.forward_features(x), 1), 1)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """``stem`` (conv1, bn, relu, max-pool) and ``stage1`` ... ``stage4`` (layer1-4)."""
        return ("stem", "stage1", "stage2", "stage3", "stage4")

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        """The stem's map and the output of each of ``layer1`` ... ``layer4``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {"stem": x}
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), 1):
            x = out[f"stage{i}"] = layer(x)
        return out


class TimmBackbone(Backbone):
    """Any timm model, created with ``num_classes=0`` so that its forward is pooled.

    :meth:`forward_features` always returns a spatial map ``(B, C, h, w)``: channels-last
    maps (Swin) are permuted, and transformer tokens ``(B, N, C)`` lose their prefix
    tokens (class, register tokens) and are laid out on the patch grid.

    Attributes:
        num_features: width of :meth:`forward` (timm's ``head_hidden_size``).
        feature_channels: channels of :meth:`forward_features` (timm's
            ``num_features``); it differs from ``num_features`` only for models whose
            head has its own hidden layer, such as MobileNetV3.
    """

    def __init__(self, model: nn.Module, in_chans: int = 3) -> None:
        super().__init__()
        self.model = model
        self.feature_channels = int(model.num_features)
        self.num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.in_chans = in_chans

    def forward_features(self, x: Tensor) -> Tensor:
        """Spatial feature map ``(B, feature_channels, h, w)``."""
        y = self.model.forward_features(x)
        if y.ndim == 3:
            return self._tokens_to_map(y)
        fmt = str(getattr(self.model, "output_fmt", "NCHW"))
        if y.ndim == 4 and fmt in ("NHWC", "Format.NHWC"):
            return y.permute(0, 3, 1, 2)
        return y

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, num_features)``, exactly as timm computes them."""
        return self.model(x)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """``stage1`` ... ``stageN``, one per entry of timm's ``feature_info`` (models
        with ``forward_intermediates``), else ``final`` alone."""
        info = getattr(self.model, "feature_info", None)
        if not hasattr(self.model, "forward_intermediates") or not info:
            return ("final",)
        return tuple(f"stage{i}" for i in range(1, len(info) + 1))

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        """timm's ``forward_intermediates`` maps (NCHW), named by :attr:`stage_names`."""
        names = self.stage_names
        if names == ("final",):
            return {"final": self.forward_features(x)}
        maps = self.model.forward_intermediates(x, intermediates_only=True)
        return {name: m if m.ndim == 4 else self._tokens_to_map(m) for name, m in zip(names, maps)}

    def _tokens_to_map(self, tokens: Tensor) -> Tensor:
        # tokens: (B, prefix + h*w, C) -> (B, C, h, w)
        tokens = tokens[:, int(getattr(self.model, "num_prefix_tokens", 0)):]
        b, n, c = tokens.shape
        h, w = self._grid(n)
        return tokens.transpose(1, 2).reshape(b, c, h, w)

    def _grid(self, n: int) -> tuple[int, int]:
        grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)
        if grid is not None and int(grid[0]) * int(grid[1]) == n:
            return int(grid[0]), int(grid[1])
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"cannot lay out {n} tokens on a square grid; "
                             "use a square input whose side is a multiple of the patch size")
        return side, side


def _adapt_stem(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """``conv`` rebuilt for ``in_chans`` inputs; pretrained weights are adapted as timm does."""
    if in_chans == conv.in_channels:
        return conv
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(timm.models.adapt_input_conv(in_chans, conv.weight))
    return new


def _torchvision_resnet(arch: str) -> BackboneFactory:
    def factory(in_chans: int = 3, pretrained: bool = False) -> Backbone:
        resnet = getattr(torchvision.models, arch)(weights="DEFAULT" if pretrained else None)
        resnet.conv1 = _adapt_stem(resnet.conv1, in_chans)
        return TorchvisionResNet(resnet, in_chans)

    factory.__name__ = f"tv_{arch}"
    factory.__doc__ = f"torchvision {arch} (ImageNet stem: 7x7/2 conv + max-pool)."
    return factory


def _small_resnet(arch: str | None, block: type[nn.Module], layers: list[int]) -> BackboneFactory:
    def factory(in_chans: int = 3, pretrained: bool = False) -> Backbone:
        if pretrained and arch is None:
            raise ConfigError(f"small_resnet{_depth(block, layers)} has no pretrained weights; "
                              "use pretrained=False or small_resnet18/34/50")
        if pretrained:
            # ImageNet weights for every layer except the stem, which has a new shape.
            resnet = getattr(torchvision.models, arch)(weights="DEFAULT")
        else:
            resnet = ResNet(block, layers)  # type: ignore[arg-type]
        # SimCLR (Chen et al. 2020), Appendix B.9: "we replace the first 7x7 Conv of
        # stride 2 with 3x3 Conv of stride 1, and also remove the first max pooling
        # operation".
        resnet.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
        resnet.maxpool = nn.Identity()  # type: ignore[assignment]
        return TorchvisionResNet(resnet, in_chans)

    depth = _depth(block, layers)
    factory.__name__ = f"small_resnet{depth}"
    factory.__doc__ = (f"ResNet-{depth} for small images (3x3 stride-1 stem, no max-pool; "
                       "SimCLR's CIFAR variant).")
    return factory


def _depth(block: type[nn.Module], layers: list[int]) -> int:
    return sum(layers) * (3 if block is Bottleneck else 2) + 2


BACKBONES: dict[str, tuple[BackboneFactory, str]] = {
    "tv_resnet18": (_torchvision_resnet("resnet18"), "torchvision ResNet-18 (ImageNet stem)"),
    "tv_resnet34": (_torchvision_resnet("resnet34"), "torchvision ResNet-34 (ImageNet stem)"),
    "tv_resnet50": (_torchvision_resnet("resnet50"), "torchvision ResNet-50 (ImageNet stem)"),
    "small_resnet10": (_small_resnet(None, BasicBlock, [1, 1, 1, 1]),
                       "ResNet-10 with a 3x3 stride-1 stem and no max-pool; fast on CPU"),
    "small_resnet18": (_small_resnet("resnet18", BasicBlock, [2, 2, 2, 2]),
                       "ResNet-18 for 32-96 px images (SimCLR's CIFAR stem)"),
    "small_resnet34": (_small_resnet("resnet34", BasicBlock, [3, 4, 6, 3]),
                       "ResNet-34 for 32-96 px images (SimCLR's CIFAR stem)"),
    "small_resnet50": (_small_resnet("resnet50", Bottleneck, [3, 4, 6, 3]),
                       "ResNet-50 for 32-96 px images (SimCLR's CIFAR stem)"),
}


def create_backbone(name: str, *, in_chans: int = 3, pretrained: bool = False,
                    registry: Registry | None = None, **timm_kwargs: Any) -> Backbone:
    """Build a backbone by name: a registered one, else any timm model.

    Args:
        name: a registered backbone (``small_resnet18``) or a timm model name, optionally
            prefixed ``timm/`` (``timm/resnet10t``) to skip the registry.
        in_chans: input channels.
        pretrained: load pretrained weights (downloads them on first use).
        registry: where registered names are looked up; by default the backbones of
            every installed plugin.
        **timm_kwargs: passed to ``timm.create_model`` (``img_size=32`` for a ViT);
            the ones left as ``None`` are dropped, as timm does.

    Raises:
        UnknownNameError: neither a registered name nor a timm model; the message
            suggests the closest names of both.
    """
    if registry is None:
        from sslzoo.plugins import default_plugins

        registry = default_plugins().backbones
    timm_kwargs = {k: v for k, v in timm_kwargs.items() if v is not None}
    if not name.startswith(TIMM_PREFIX) and name in registry:
        if timm_kwargs:
            raise ConfigError(f"backbone {name!r} takes no options ({', '.join(timm_kwargs)}); "
                              "only timm models do")
        return registry.get(name).obj(in_chans=in_chans, pretrained=pretrained)
    timm_name = name.removeprefix(TIMM_PREFIX)
    if timm.is_model(timm_name):
        model = timm.create_model(timm_name, num_classes=0, in_chans=in_chans,
                                  pretrained=pretrained, **timm_kwargs)
        return TimmBackbone(model, in_chans)
    raise UnknownNameError("backbone", name, [*registry.names(), *timm.list_models()],
                           hint="any timm model name works too (timm.list_models())")

