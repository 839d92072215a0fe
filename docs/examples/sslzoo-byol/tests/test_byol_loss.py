"""BYOL's normalised MSE (Eq. 2) and its cosine form, against a slow per-sample loop."""
from __future__ import annotations

import math

import pytest
import torch

from sslzoo_byol import byol_loss


def slow_byol_loss(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Eq. 2 sample by sample: || q/||q|| - z/||z|| ||^2, averaged over the batch."""
    total = q.new_zeros(())
    for qi, zi in zip(q, z):
        diff = qi / qi.norm() - zi / zi.norm()
        total = total + sum(d * d for d in diff)
    return total / len(q)


def test_loss_matches_the_papers_formula_sample_by_sample():
    torch.manual_seed(0)
    q, z = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    assert torch.allclose(byol_loss(q, z).double(), slow_byol_loss(q, z), atol=1e-6)


def test_loss_is_two_minus_twice_the_cosine_and_ignores_scale():
    torch.manual_seed(0)
    q, z = torch.randn(9, 4), torch.randn(9, 4)
    cos = torch.nn.functional.cosine_similarity(q, z, dim=1)
    assert torch.allclose(byol_loss(q, z), (2 - 2 * cos).mean(), atol=1e-6)
    assert torch.allclose(byol_loss(3.0 * q, 0.5 * z), byol_loss(q, z), atol=1e-6)


@pytest.mark.parametrize("other, expected", [(1.0, 0.0), (-1.0, 4.0)])
def test_aligned_and_opposite_vectors_give_zero_and_four(other, expected):
    q = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    assert math.isclose(byol_loss(q, other * q).item(), expected, abs_tol=1e-5)


def test_orthogonal_vectors_give_two():
    q, z = torch.eye(4)[:2], torch.eye(4)[2:]
    assert math.isclose(byol_loss(q, z).item(), 2.0, abs_tol=1e-6)


def test_gradient_reaches_the_prediction_only_and_matches_the_reference():
    torch.manual_seed(0)
    q = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    byol_loss(q, z).backward()
    assert z.grad is None
    q_ref = q.detach().clone().requires_grad_(True)
    slow_byol_loss(q_ref, z.detach()).backward()
    assert torch.allclose(q.grad, q_ref.grad.to(q.grad.dtype), atol=1e-6)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        byol_loss(torch.randn(4, 3), torch.randn(4, 2))
