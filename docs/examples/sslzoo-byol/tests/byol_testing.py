"""Tiny stand-ins for the BYOL tests, built from sslzoo's public API only."""
from __future__ import annotations

import torch
from torch import Tensor, nn

import sslzoo
from sslzoo_byol import BYOL

SIZE = 8


class TinyBackbone(sslzoo.Backbone):
    """Conv + BN + ReLU: (B, 3, 8, 8) -> (B, 8, 4, 4), pooled to 8 features."""

    def __init__(self) -> None:
        super().__init__()
        self.num_features = 8
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())

    def forward_features(self, x: Tensor) -> Tensor:
        return self.net(x)


class FixedViews(sslzoo.Augment):
    """Two fixed, different views: the image and its horizontal mirror."""

    name = "test-fixed-views"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.clone(), x.flip(-1)


def make_byol(total_steps: int = 10, augment: sslzoo.Augment | None = None, **config) -> BYOL:
    small = {"proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 16, **config}
    torch.manual_seed(0)
    return BYOL(TinyBackbone(), BYOL.Config(**small), augment or FixedViews(),
                sslzoo.DataInfo(64, SIZE, total_steps=total_steps))


def run_two_processes(fn, *args):
    """``fn(rank, *args)`` in two CPU processes joined by a gloo group, as torchrun would
    start them; returns both ranks' results. ``fn`` must be defined at module level."""
    import os
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker, args=(fn, tmp, args), nprocs=2, join=True,
                           start_method="spawn")
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in (0, 1)]


def _worker(rank, fn, tmp, args):
    import os

    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # meet through a file, so parallel test runs never race for a TCP port
    dist.init_process_group("gloo", init_method="file://" + os.path.join(tmp, "store"),
                            rank=rank, world_size=2)
    try:
        torch.save(fn(rank, *args), os.path.join(tmp, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
