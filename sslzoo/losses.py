"""Contrastive losses shared by methods and third-party plugins.

Shapes are commented as ``(N, D)``: N samples of D-dimensional embeddings.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sslzoo import distributed
from sslzoo.errors import ConfigError


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")


def _in_fp32(loss: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Compute ``loss`` in float32 even under autocast: low-precision logits divided by a
    small temperature (0.07) lose the differences the loss is made of."""
    @functools.wraps(loss)
    def wrapper(*args: Any, **kwargs: Any) -> Tensor:
        with torch.autocast(args[0].device.type, enabled=False):
            return loss(*args, **kwargs)
    return wrapper


@_in_fp32
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


@_in_fp32
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


def info_nce_candidates(query: Tensor, candidates: Tensor, positive_index: Tensor,
                        temperature: float = 1.0, *, normalize: bool = False
                        ) -> tuple[Tensor, Tensor]:
    """InfoNCE where every query scores one shared set of candidates that holds its positive.

    van den Oord et al., "Representation Learning with Contrastive Predictive Coding",
    2018, Eq. (4): ``L_N = -E[log f_k(x_{t+k}, c_t) / sum_{x_j in X} f_k(x_j, c_t)]``
    with the log-bilinear score ``f_k(x, c) = exp(z^T W_k c)`` (Eq. (3)). For images
    (Sec. 3.3) "the negative samples ... are taken from other patches in the image and
    other images in the mini-batch": the candidate set ``X`` is every patch encoding of
    the batch, positive included, which is this loss with ``query = W_k c``. The
    defaults (no normalisation, temperature 1) are the paper's score.

    Unlike :func:`info_nce`, the positive is not passed separately: it is the
    candidate at ``positive_index``, and no candidate is counted twice. The scores are
    computed in float32 even under autocast.

    Args:
        query: ``(N, D)``, e.g. predictions ``W_k c_t``.
        candidates: ``(M, D)``, shared by all queries.
        positive_index: ``(N,)`` long, the row of ``candidates`` that is query i's positive.
        temperature: divides every score.
        normalize: L2-normalise queries and candidates first (cosine similarity).

    Returns:
        The mean loss over the N queries, and the fraction of queries whose positive
        scores highest among the M candidates (detached), both scalars.
    """
    _check_temperature(temperature)
    if query.ndim != 2 or candidates.ndim != 2 or query.shape[1] != candidates.shape[1]:
        raise ValueError(f"query and candidates must be (N, D) and (M, D), got "
                         f"{tuple(query.shape)} and {tuple(candidates.shape)}")
    if positive_index.shape != query.shape[:1]:
        raise ValueError(f"positive_index must be ({len(query)},), got {tuple(positive_index.shape)}")
    with torch.autocast(query.device.type, enabled=False):
        q, k = query.float(), candidates.float()
        if normalize:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        logits = q @ k.T / temperature                      # (N, M)
        loss = F.cross_entropy(logits, positive_index)
        acc = (logits.detach().argmax(dim=1) == positive_index).float().mean()
    return loss, acc


def nce_loss(log_p_data: Tensor, log_p_noise: Tensor, noise_prob: float) -> Tensor:
    """Noise-contrastive estimation of a non-parametric softmax (InstDisc).

    Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination", CVPR 2018, Sec. 3.2 (after Gutmann and Hyvarinen 2010): with the
    model probability ``P(i|v) = exp(v^T f_i / t) / Z`` (Eq. (4)) and uniform noise
    ``P_n = 1/n``, "the posterior probability of sample i with feature v being from the
    data distribution (denoted by D = 1) is h(i, v) = P(i|v) / (P(i|v) + m P_n(i))"
    (Eq. (6), ``m`` = K noise samples per data sample), and the loss is
    ``J_NCE = -E_{P_d}[log h(i, v)] - m E_{P_n}[log(1 - h(i, v'))]`` (Eq. (7)).

    As the official ``NCECriterion`` (zhirongw/lemniscate.pytorch), each data sample
    comes with its own K noise samples and the sum over the batch is divided by the
    batch size. Computed in log space: ``log h = -softplus(log(K P_n) - log P)`` and
    ``log(1 - h) = -softplus(log P - log(K P_n))``, which needs no epsilon.

    Args:
        log_p_data: ``(N,)`` ``log P(i|v)`` of each sample's own (data) entry.
        log_p_noise: ``(N, K)`` ``log P(j|v)`` of the K noise entries of each sample.
        noise_prob: ``P_n(j)``, the noise probability of one entry (``1/n``).

    Returns:
        ``-(sum_i log h_i + sum_{i,k} log(1 - h_ik)) / N``, a scalar.
    """
    if log_p_noise.ndim != 2 or log_p_data.shape != log_p_noise.shape[:1]:
        raise ValueError(f"log_p_data must be (N,) and log_p_noise (N, K), got "
                         f"{tuple(log_p_data.shape)} and {tuple(log_p_noise.shape)}")
    if not 0 < noise_prob <= 1:
        raise ValueError(f"noise_prob must be in (0, 1], got {noise_prob}")
    log_k_pn = torch.tensor(log_p_noise.shape[1] * noise_prob, device=log_p_noise.device).log()
    data_term = F.softplus(log_k_pn - log_p_data.float())          # -log h,       (N,)
    noise_term = F.softplus(log_p_noise.float() - log_k_pn)        # -log(1 - h),  (N, K)
    return (data_term.sum() + noise_term.sum()) / log_p_data.shape[0]


def invariance_spreading_loss(z1: Tensor, z2: Tensor, temperature: float = 0.1, *,
                              detach_keys: bool = True, gather: bool = True) -> Tensor:
    """Invariance and spreading loss over a batch of instances (InvaSpread).

    Ye, Zhang, Yuen and Chang, "Unsupervised Embedding Learning via Invariant and
    Spreading Instance Feature", CVPR 2019, Eq. (5): with the instance softmax
    ``P(i|x) = exp(f_i^T f / t) / sum_k exp(f_k^T f / t)`` over the batch,
    ``J = -sum_i log P(i|x^_i) - sum_i sum_{j != i} log(1 - P(i|x_j))``.

    Follows the official code (mangye16/Unsupervised_Embedding_Learning,
    ``BatchAverage.py``, ``negM = 1``), which differs from the equation in three ways:
    both views are queries, and each query's softmax runs over the other 2N - 1
    embeddings of the batch (its own excluded), so the positive term is
    ``log P(i'|x_i)`` for the other view ``i'`` and the spreading term covers every
    other embedding; the keys are detached (``feat.data``), so gradients reach only the
    queries; and the sum is divided by the number of queries, 2N.

    Args:
        z1: ``(N, D)`` embeddings of the first views ("original" images).
        z2: ``(N, D)`` embeddings of the second views; row i pairs with row i of ``z1``.
        temperature: the temperature ``t`` (paper: 0.1).
        detach_keys: stop gradients through the keys, as the official code does.
        gather: under torch.distributed, take the keys from every rank, so that the
            mean of the ranks' losses (and DDP's averaged gradients) equal the
            single-process loss on the global batch.

    Returns:
        The loss summed over this process's 2N queries and their candidates, divided
        by 2N (a scalar).
    """
    _check_temperature(temperature)
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    with torch.autocast(z1.device.type, enabled=False):
        queries = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
        q1, q2 = queries.chunk(2)
        k1, k2 = (q1.detach(), q2.detach()) if detach_keys else (q1, q2)
        offset = 0
        if gather and distributed.world_size() > 1:
            collect = distributed.gather if detach_keys else distributed.gather_with_grad
            k1, k2, offset = collect(k1), collect(k2), distributed.rank() * n
        m = k1.shape[0]
        keys = torch.cat([k1, k2])                                  # (2M, D)
        logits = queries @ keys.T / temperature                     # (2N, 2M)
        rows = torch.arange(2 * n, device=z1.device)
        own = torch.arange(n, device=z1.device) + offset
        self_idx = torch.cat([own, own + m])                        # each query's own key
        pos_idx = torch.cat([own + m, own])                         # its other view
        logits = logits.index_put((rows, self_idx), torch.tensor(float("-inf"), device=z1.device))
        log_p = F.log_softmax(logits, dim=1)                        # (2N, 2M)
        positive = log_p[rows, pos_idx]                             # (2N,)
        # log(1 - P) of every other key; the query's own key has P = 0 and adds 0
        p = log_p.exp().index_put((rows, pos_idx), torch.zeros((), device=z1.device))
        spreading = torch.log1p(-p.clamp(max=1.0 - 1e-6))           # (2N, 2M)
        return -(positive.sum() + spreading.sum()) / (2 * n)
