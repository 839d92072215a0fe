"""A memory bank: one L2-normalised embedding per training sample.

Wu, Xiong, Yu and Lin, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018 (https://arxiv.org/abs/1805.01978), Sec. 3.1: "we maintain a
feature memory bank V for storing them [...] f_i is updated to V at the corresponding
instance entry f_i -> v_i", every f_i being a unit vector; the official code
(zhirongw/lemniscate.pytorch, ``lib/NCEAverage.py``) mixes old and new with momentum 0.5
and re-normalises: ``v_i <- normalize(m v_i + (1 - m) f_i)``.

The bank is a persistent buffer, so checkpoints hold it and resume it exactly. Under
torch.distributed every rank applies the update of the *global* batch (indices and
features gathered from all ranks), so the banks stay identical on all ranks.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslzoo import distributed


class MemoryBank(nn.Module):
    """``size`` unit vectors of width ``dim`` updated with momentum.

    Initialisation follows the paper, "We initialize all the representations in the
    memory bank V as random unit vectors" (Sec. 3.1): the official code draws each entry
    uniformly from ``[-stdv, stdv]`` with ``stdv = 1 / sqrt(dim / 3)`` (unit norm in
    expectation) and leaves it there; we draw the same way and normalise, so every row is
    exactly a unit vector from the start.

    Args:
        size: number of rows (training samples).
        dim: embedding width.
        momentum: weight ``m`` of the old entry in the update (0 replaces it).

    Attributes:
        bank: ``(size, dim)`` float32 persistent buffer.
    """

    def __init__(self, size: int, dim: int, momentum: float = 0.5) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"a memory bank needs size >= 1 and dim >= 1, got {size} x {dim}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"memory bank momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        stdv = 1.0 / math.sqrt(dim / 3)
        bank = torch.rand(size, dim).mul_(2 * stdv).sub_(stdv)       # (size, dim)
        self.register_buffer("bank", F.normalize(bank, dim=1))

    @property
    def size(self) -> int:
        return self.bank.shape[0]

    @property
    def dim(self) -> int:
        return self.bank.shape[1]

    def forward(self, index: Tensor) -> Tensor:
        """The stored vectors of ``index`` (any shape ``S``): ``(*S, dim)``, no gradient."""
        return self.bank[index]

    def sample(self, *shape: int) -> Tensor:
        """Row indices drawn uniformly with replacement, of the given shape.

        InstDisc's noise distribution is uniform, ``P_n = 1/n`` (Sec. 3.2); like the
        official code, a sample's own row may be drawn among its noise samples.
        """
        return torch.randint(0, self.size, shape, device=self.bank.device)

    @torch.no_grad()
    def update(self, index: Tensor, features: Tensor, *, gather: bool = True) -> None:
        """``bank[i] <- normalize(m * bank[i] + (1 - m) * f)`` for every ``(i, f)``.

        Args:
            index: ``(B,)`` rows to update.
            features: ``(B, dim)`` new embeddings of those rows (InstDisc passes the
                L2-normalised features of the current step).
            gather: under torch.distributed, apply the updates of every rank (all ranks
                must pass the same ``B``), keeping the banks identical everywhere.

        A row that appears several times (DistributedSampler pads the last batch with
        repeats) is updated once, from its last occurrence, on every rank alike; no
        step of it reads the device from the host.
        """
        if index.ndim != 1 or features.shape != (index.shape[0], self.dim):
            raise ValueError(f"update expects index (B,) and features (B, {self.dim}), got "
                             f"{tuple(index.shape)} and {tuple(features.shape)}")
        if gather:
            index = distributed.gather(index.contiguous())
            features = distributed.gather(features.detach().contiguous())
        features = _last_occurrence_features(index, features.detach())
        old = self.bank[index]                                        # (B, dim)
        new = old.mul(self.momentum).add_(features.to(old.dtype), alpha=1.0 - self.momentum)
        self.bank.index_copy_(0, index, F.normalize(new, dim=1))

    @torch.no_grad()
    def sync_(self, src: int = 0) -> None:
        """Copy rank ``src``'s bank to every rank (call once before training)."""
        distributed.broadcast_(self.bank, src)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, momentum={self.momentum}"


def _last_occurrence_features(index: Tensor, features: Tensor) -> Tensor:
    """At every position of ``index``, the features of that index's last occurrence.

    Repeated rows then carry identical updates, so writing all ``B`` of them gives the same
    bank in any order. Fixed shapes throughout (a stable sort, no ``unique``), so nothing
    waits for the device to learn how many rows are distinct.
    """
    ordered, order = torch.sort(index, stable=True)                   # (B,), (B,)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    run = torch.cumsum(starts, 0) - 1                                 # run of each sorted entry
    last_in_run = torch.full_like(order, -1).scatter_reduce_(0, run, order, reduce="amax")
    last = torch.empty_like(order).scatter_(0, order, last_in_run[run])  # (B,)
    return features[last]
