from __future__ import annotations

import torch

from sslzoo import distributed
from tests.dist_helpers import run_distributed


def _gather_ranks(rank: int, world_size: int) -> dict:
    x = torch.full((2, 3), float(rank), requires_grad=True)
    g = distributed.gather_with_grad(x)
    (g * torch.arange(len(g)).view(-1, 1)).sum().backward()
    return {"rank": distributed.rank(), "world": distributed.world_size(), "gathered": g.detach(),
            "grad": x.grad}


def test_gather_with_grad_sums_gradients_of_every_copy():
    r0, r1 = run_distributed(_gather_ranks)
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert torch.equal(r0["gathered"][:, 0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    # d/dx of sum(row_index * g) summed over the two ranks' identical losses
    assert torch.equal(r0["grad"][:, 0], 2 * torch.tensor([0.0, 1.0]))
    assert torch.equal(r1["grad"][:, 0], 2 * torch.tensor([2.0, 3.0]))
