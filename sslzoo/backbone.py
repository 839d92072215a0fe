"""The Backbone interface: images to pooled features and to spatial feature maps."""
from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """An encoder that turns images ``(B, C, H, W)`` into features.

    Subclasses set ``num_features`` and implement :meth:`forward_features`; the default
    :meth:`forward` average-pools the spatial map. Evaluation and export use the
    backbone alone, so everything a method adds on top (projection heads, decoders)
    lives in the method.

    Attributes:
        num_features: width of the pooled features of :meth:`forward`.
        feature_channels: channels of the spatial map of :meth:`forward_features`;
            ``num_features`` unless a subclass sets it (a model whose pooling head has
            its own layer, such as timm's MobileNetV3, pools to a different width).
        in_chans: number of input channels the backbone was built for.
    """

    num_features: int
    in_chans: int = 3

    @property
    def feature_channels(self) -> int:
        return int(self.__dict__.get("_feature_channels", self.num_features))

    @feature_channels.setter
    def feature_channels(self, value: int) -> None:
        self.__dict__["_feature_channels"] = int(value)

    def forward_features(self, x: Tensor) -> Tensor:
        """Spatial feature maps ``(B, feature_channels, h, w)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, num_features)``."""
        return self.forward_features(x).mean(dim=(-2, -1))
