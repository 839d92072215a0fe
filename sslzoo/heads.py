"""Projection heads shared by the contrastive methods."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

#: Batch norm after a head's output layer: none, without affine parameters, or with a
#: learnt scale but no shift (SimCLR's official ``BatchNormRelu(center=False)``).
LastNorm = Literal["none", "plain", "scale"]


class ScaleBatchNorm1d(nn.BatchNorm1d):
    """Batch norm with a learnt per-feature scale and no shift (``beta`` fixed at 0)."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=True)
        self.register_parameter("bias", None)


class ProjectionHead(nn.Sequential):
    """An MLP ``dims[0] -> ... -> dims[-1]``: Linear (+BN) + ReLU between layers.

    SimCLR (Chen et al., ICML 2020, Sec. 2.1): "a MLP with one hidden layer to obtain
    z_i = g(h_i) = W(2) sigma(W(1) h_i) where sigma is a ReLU non-linearity". Its
    official code (google-research/simclr, ``ProjectionHead``) builds every layer as a
    bias-free linear layer followed by batch norm, the hidden layers as wide as the
    backbone's features and the output layer's batch norm without a shift
    (``use_bias=False, use_bn=True``): ``batch_norm=True, last_norm="scale"`` here.
    SimCLR v2 uses three layers. MoCo v2 (Chen et al. 2020): a 2-layer MLP head (hidden
    width that of the backbone in the official code, with ReLU), no BN. A single pair
    ``(in, out)`` gives a linear projection (InstDisc).

    A linear layer followed by batch norm has no bias (the norm's shift replaces it).

    Args:
        dims: widths, input first; at least two.
        batch_norm: batch norm after each hidden linear layer.
        last_norm: batch norm after the output layer: ``"none"``, ``"plain"`` (no
            affine parameters) or ``"scale"`` (a learnt scale, no shift).
    """

    def __init__(self, dims: Sequence[int], *, batch_norm: bool = True,
                 last_norm: LastNorm = "none") -> None:
        if len(dims) < 2:
            raise ValueError(f"a projection head needs at least two widths, got {list(dims)}")
        if last_norm not in ("none", "plain", "scale"):
            raise ValueError(f"last_norm must be none, plain or scale, got {last_norm!r}")
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(dims) - 2
            normed = last_norm != "none" if last else batch_norm
            layers.append(nn.Linear(d_in, d_out, bias=not normed))
            if not last:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.ReLU(inplace=True))
            elif last_norm == "plain":
                layers.append(nn.BatchNorm1d(d_out, affine=False))
            elif last_norm == "scale":
                layers.append(ScaleBatchNorm1d(d_out))
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:  # (N, dims[0]) -> (N, dims[-1])
        return super().forward(x)
