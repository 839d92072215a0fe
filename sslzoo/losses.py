"""Contrastive losses shared by methods and third-party plugins.

Shapes are commented as ``(N, D)``: N samples of D-dimensional embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sslzoo import distributed
from sslzoo.errors import ConfigError


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5, *, gather: bool = True) -> Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

    Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020, Eq. (1): for a positive pair (i, j) of the 2N views,
    ``l(i, j) = -log exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t)``, and the
    loss is the mean of ``l`` over all 2N ordered positive pairs.

    Args:
        z1: embeddings of the first views, ``(N, D)``; row i pairs with row i of ``z2``.
        z2: embeddings of the second views, ``(N, D)``.
        temperature: the temperature ``t``.
        gather: under torch.distributed, use every rank's views as negatives (the
            gradient flows back to each rank), so the loss equals the single-process
            loss on the global batch.

    Returns:
        The mean loss over this process's 2N anchors (a scalar).
    """
    _check_temperature(temperature)
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    if gather and distributed.world_size() > 1:
        z1_all, z2_all = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)
        offset = distributed.rank() * n
    else:
        z1_all, z2_all, offset = z1, z2, 0
    total = z1_all.shape[0]
    keys = torch.cat([z1_all, z2_all])                      # (2M, D), M = global batch
    anchors = torch.cat([z1, z2])                           # (2N, D)
    logits = anchors @ keys.T / temperature                 # (2N, 2M)
    rows = torch.arange(n, device=z1.device) + offset       # anchor positions in keys
    self_idx = torch.cat([rows, rows + total])
    pos_idx = torch.cat([rows + total, rows])
    logits[torch.arange(2 * n, device=z1.device), self_idx] = float("-inf")
    return F.cross_entropy(logits, pos_idx)


def info_nce(query: Tensor, positive_key: Tensor, negative_keys: Tensor | None = None,
             temperature: float = 0.07, *, normalize: bool = True) -> Tensor:
    """InfoNCE with explicit negatives (CPC, MoCo).

    van den Oord et al., "Representation Learning with Contrastive Predictive Coding",
    2018, Eq. (4); in MoCo's form (He et al., CVPR 2020, Eq. (1)):
    ``L_q = -log exp(q.k+/t) / (exp(q.k+/t) + sum_{k-} exp(q.k-/t))``.

    Args:
        query: ``(N, D)``.
        positive_key: ``(N, D)``, row i is the positive of query i.
        negative_keys: ``(K, D)`` negatives shared by all queries, ``(N, K, D)`` per
            query, or None to use the other rows of ``positive_key`` as negatives.
        temperature: the temperature ``t``.
        normalize: L2-normalise queries and keys first (cosine similarity).

    Returns:
        The mean loss over the N queries.
    """
    _check_temperature(temperature)
    if query.ndim != 2 or positive_key.shape != query.shape:
        raise ValueError(f"query and positive_key must both be (N, D), got "
                         f"{tuple(query.shape)} and {tuple(positive_key.shape)}")
    q, k = query.float(), positive_key.float()
    if normalize:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    if negative_keys is None:
        logits = q @ k.T                                    # (N, N), positives on the diagonal
        labels = torch.arange(len(q), device=q.device)
        return F.cross_entropy(logits / temperature, labels)
    neg = negative_keys.float()
    if normalize:
        neg = F.normalize(neg, dim=-1)
    pos = (q * k).sum(dim=-1, keepdim=True)                 # (N, 1)
    if neg.ndim == 2:
        negs = q @ neg.T                                    # (N, K)
    elif neg.ndim == 3 and neg.shape[0] == q.shape[0]:
        negs = torch.einsum("nd,nkd->nk", q, neg)           # (N, K)
    else:
        raise ValueError(f"negative_keys must be (K, D) or (N, K, D), got {tuple(neg.shape)}")
    logits = torch.cat([pos, negs], dim=1) / temperature    # (N, 1 + K)
    labels = torch.zeros(len(q), dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)
