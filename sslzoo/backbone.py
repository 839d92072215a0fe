"""The Backbone interface: images to pooled features and to spatial feature maps."""
from __future__ import annotations

from torch import Tensor, nn

#: Name of the last spatial map, the one :meth:`Backbone.forward_features` returns.
FINAL_STAGE = "final"


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
        stage_names: names of the intermediate maps :meth:`forward_stages` returns, from
            the input side to the output side (``stage1`` ... ``stage4`` for a ResNet);
            a backbone without named stages has only ``final``.
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

    @property
    def stage_names(self) -> tuple[str, ...]:
        return (FINAL_STAGE,)

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        """Every stage's spatial map ``(B, C_i, h_i, w_i)``, keyed by :attr:`stage_names`.

        Evaluation pools them to probe intermediate layers (RotNet's conv-block-2
        features, Zhang et al.'s conv1-conv5 probes). The default has one stage, the
        map of :meth:`forward_features`.
        """
        return {FINAL_STAGE: self.forward_features(x)}
