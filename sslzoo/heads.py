"""Projection heads shared by the contrastive methods."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class ProjectionHead(nn.Sequential):
    """An MLP ``dims[0] -> ... -> dims[-1]``: Linear (+BN) + ReLU between layers.

    SimCLR (Chen et al., ICML 2020, Sec. 2.1): "a MLP with one hidden layer to obtain
    z_i = g(h_i) = W(2) sigma(W(1) h_i) where sigma is a ReLU non-linearity"; the
    official code puts batch norm after every linear layer (SimCLR v2 uses three layers).
    MoCo v2 (Chen et al. 2020): a 2-layer MLP head (hidden 2048-d, with ReLU), no BN.
    A single pair ``(in, out)`` gives a linear projection (InstDisc).

    Args:
        dims: widths, input first; at least two.
        batch_norm: batch norm after each hidden linear layer.
        last_batch_norm: batch norm (without affine) after the output layer too.
    """

    def __init__(self, dims: Sequence[int], *, batch_norm: bool = True,
                 last_batch_norm: bool = False) -> None:
        if len(dims) < 2:
            raise ValueError(f"a projection head needs at least two widths, got {list(dims)}")
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(dims) - 2
            layers.append(nn.Linear(d_in, d_out, bias=not (batch_norm and not last)))
            if not last:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.ReLU(inplace=True))
            elif last_batch_norm:
                layers.append(nn.BatchNorm1d(d_out, affine=False))
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:  # (N, dims[0]) -> (N, dims[-1])
        return super().forward(x)
