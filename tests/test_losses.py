"""The shared contrastive losses against slow loops written from the papers' formulas."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslzoo.errors import ConfigError
from sslzoo.losses import info_nce, nt_xent
from tests.dist_helpers import run_distributed


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """SimCLR Eq. (1), averaged over all 2N ordered positive pairs."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2]).double()]
    n2, n = len(z), len(z1)
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        num = math.exp(float(z[i] @ z[j]) / t)
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k != i)
        total += -math.log(num / den)
    return total / n2


def info_nce_reference(q: torch.Tensor, k: torch.Tensor, negs: torch.Tensor, t: float) -> float:
    """MoCo Eq. (1): -log exp(q.k+/t) / (exp(q.k+/t) + sum exp(q.k-/t)), mean over queries."""
    total = 0.0
    for i in range(len(q)):
        qi = F.normalize(q[i].double(), dim=0)
        pos = math.exp(float(qi @ F.normalize(k[i].double(), dim=0)) / t)
        neg_set = negs if negs.ndim == 2 else negs[i]
        neg = sum(math.exp(float(qi @ F.normalize(n.double(), dim=0)) / t) for n in neg_set)
        total += -math.log(pos / (pos + neg))
    return total / len(q)


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_nt_xent_matches_the_papers_formula(t):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert nt_xent(z1, z2, t).item() == pytest.approx(nt_xent_reference(z1, z2, t), rel=1e-5)


def test_nt_xent_closed_form_for_identical_orthogonal_pairs():
    # Views equal and pairs orthogonal: every anchor sees its positive at similarity 1
    # and 2N - 2 negatives at similarity 0, so l = -log(e^(1/t) / (e^(1/t) + 2N - 2)).
    n, t = 4, 0.5
    z = torch.eye(n)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2))
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_is_invariant_to_scale_and_gradients_flow():
    z1 = torch.randn(4, 8, requires_grad=True)
    z2 = torch.randn(4, 8, requires_grad=True)
    loss = nt_xent(z1, z2, 0.5)
    assert loss.item() == pytest.approx(nt_xent(3 * z1, 0.5 * z2, 0.5).item(), rel=1e-5)
    loss.backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


@pytest.mark.parametrize("shared", [True, False])
def test_info_nce_matches_the_papers_formula(shared):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    negs = torch.randn(9, 7, generator=g) if shared else torch.randn(5, 9, 7, generator=g)
    assert info_nce(q, k, negs, 0.07).item() == pytest.approx(
        info_nce_reference(q, k, negs, 0.07), rel=1e-5)


def test_info_nce_without_negatives_uses_the_other_positives():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    expected = sum(info_nce_reference(q[i:i + 1], k[i:i + 1], torch.cat([k[:i], k[i + 1:]]), 0.2)
                   for i in range(4)) / 4
    assert info_nce(q, k, None, 0.2).item() == pytest.approx(expected, rel=1e-5)


def test_losses_reject_a_non_positive_temperature():
    z = torch.randn(2, 3)
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        nt_xent(z, z, 0.0)
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        info_nce(z, z, z, -1.0)


def _nt_xent_on_shards(rank: int, world_size: int, z1: torch.Tensor, z2: torch.Tensor) -> dict:
    n = len(z1) // world_size
    a = z1[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    b = z2[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    loss = nt_xent(a, b, 0.5)
    # DDP averages gradients over ranks; the all-reduced mean of the local losses is the loss
    (loss / world_size).backward()
    return {"loss": loss.detach(), "g1": a.grad, "g2": b.grad}


def test_nt_xent_over_two_processes_equals_one_process_on_the_global_batch():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    full1, full2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    full = nt_xent(full1, full2, 0.5)
    full.backward()
    r0, r1 = run_distributed(_nt_xent_on_shards, z1, z2)
    assert ((r0["loss"] + r1["loss"]) / 2).item() == pytest.approx(full.item(), rel=1e-5)
    # the gradient all_gather sends back is summed over ranks: each rank gets its share
    torch.testing.assert_close(torch.cat([r0["g1"], r1["g1"]]), full1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.cat([r0["g2"], r1["g2"]]), full2.grad, rtol=1e-4, atol=1e-6)


def test_losses_compute_in_float32_under_autocast():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = nt_xent(z1, z2, 0.07), info_nce(z1, z2, z2, 0.07)
    assert a.dtype == torch.float32 and b.dtype == torch.float32
    assert a.item() == pytest.approx(nt_xent(z1, z2, 0.07).item(), rel=1e-6)
    assert b.item() == pytest.approx(info_nce(z1, z2, z2, 0.07).item(), rel=1e-6)
