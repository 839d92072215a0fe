"""Momentum encoders, a FIFO queue of keys, and shuffling batch norm.

He, Fan, Wu, Xie and Girshick, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020 (https://arxiv.org/abs/1911.05722), and the official code
(facebookresearch/moco, ``moco/builder.py``):

- :func:`momentum_update`, Eq. (2): "theta_k <- m theta_k + (1 - m) theta_q", applied to
  the parameters (not the batch-norm buffers) as the official code does.
- :class:`KeyQueue`, Sec. 3.2: "the current mini-batch is enqueued to the dictionary, and
  the oldest mini-batch in the queue is removed".
- :func:`batch_shuffle` / :func:`batch_unshuffle`, Sec. 3.3 "Shuffling BN": "we shuffle
  the sample order in the current mini-batch for the key encoder before distributing it
  among GPUs (and shuffle back after encoding)". Under torch.distributed this is the
  official ``_batch_shuffle_ddp`` / ``_batch_unshuffle_ddp``; on one process it is a
  plain random permutation.
- :func:`convert_split_batch_norm`, :func:`split_batch_norm` and
  :func:`forward_bn_groups`: on one process, batch norm that normalises each of G
  sub-batches with its own statistics, simulating G GPUs as the official single-GPU
  CIFAR-10 demo's ``SplitBatchNorm`` does. The layers are converted once (like
  ``nn.SyncBatchNorm.convert_sync_batchnorm``) and switched on for a forward pass by
  a context manager, so nothing is patched and ``torch.compile`` traces them.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from sslzoo import distributed


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float | Tensor) -> None:
    """``theta_target <- m * theta_target + (1 - m) * theta_online``, in place.

    MoCo's Eq. (2); ``m = 0.999`` in the paper ("a relatively large momentum (e.g.,
    m = 0.999, our default) works much better than a smaller value"). Only parameters
    are updated: buffers such as batch-norm running statistics are the target's own.

    Args:
        online: the encoder trained by back-propagation (MoCo's query encoder).
        target: a copy of ``online`` (same parameters in the same order).
        m: momentum in ``[0, 1]``; 1 leaves ``target`` unchanged, 0 copies ``online``.
            A scalar tensor on the device (a schedule such as BYOL's computed there) is
            used without reading it on the host, so its range is the caller's to keep.

    Raises:
        ValueError: a float ``m`` outside ``[0, 1]`` or ``target`` not shaped like ``online``.
    """
    if not isinstance(m, Tensor) and not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {m}")
    src, dst = list(online.parameters()), list(target.parameters())
    if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src, dst)):
        raise ValueError("the target encoder must be a copy of the online encoder "
                         f"({len(dst)} vs {len(src)} parameter tensors, or shapes differ)")
    if isinstance(m, Tensor):   # target + (1 - m) (online - target), with no host read
        weight = (1 - m).to(dst[0].dtype) if dst else m
        torch._foreach_lerp_(dst, src, [weight] * len(dst))   # the tensor-list overload
        return
    torch._foreach_mul_(dst, m)
    torch._foreach_add_(dst, src, alpha=1.0 - m)


class KeyQueue(nn.Module):
    """A FIFO queue of ``size`` key vectors, the dictionary of negatives of MoCo.

    The official code initialises the queue with random unit vectors ("self.queue =
    nn.functional.normalize(torch.randn(dim, K), dim=0)") and replaces the oldest
    mini-batch at a pointer that wraps around; it requires the queue size to be a
    multiple of the number of keys enqueued at once ("assert self.K % batch_size == 0").
    Both the keys and the pointer are persistent buffers, so checkpoints resume exactly.

    Args:
        size: number of keys ``K``.
        dim: key width ``D``.

    Attributes:
        keys: ``(K, D)`` float32; row ``i`` is one key.
        ptr: ``()`` long, the row where the next batch of keys is written.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"a key queue needs size >= 1 and dim >= 1, got {size} x {dim}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @property
    def dim(self) -> int:
        return self.keys.shape[1]

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        """Enqueue ``keys`` ``(N, D)`` in place of the ``N`` oldest keys.

        Raises:
            ValueError: ``N`` does not divide the queue size, or ``keys`` is not ``(N, D)``.
        """
        n = keys.shape[0]
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be (N, {self.dim}), got {tuple(keys.shape)}")
        if self.size % n:
            raise ValueError(f"the queue size {self.size} must be a multiple of the number of "
                             f"keys enqueued at once, got {n}")
        rows = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size   # (N,)
        self.keys.index_copy_(0, rows, keys.detach().to(self.keys.dtype))
        self.ptr.copy_((self.ptr + n) % self.size)

    @torch.no_grad()
    def sync_(self, src: int = 0) -> None:
        """Copy rank ``src``'s keys and pointer to every rank (call once before training:
        DDP with ``broadcast_buffers=False`` does not synchronise buffers)."""
        distributed.broadcast_(self.keys, src)
        distributed.broadcast_(self.ptr, src)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


@torch.no_grad()
def batch_shuffle(x: Tensor) -> tuple[Tensor, Tensor]:
    """Shuffle the global batch across processes; each keeps its share of the result.

    Every process passes its own ``(B, ...)`` (all the same ``B``). The ``W * B`` samples
    of the ``W`` processes are gathered, permuted by one random permutation drawn on
    rank 0 and broadcast, and process ``r`` receives rows ``r*B .. (r+1)*B - 1`` of the
    permuted batch. On one process this is ``x[perm]``.

    Returns:
        The shuffled share ``(B, ...)`` and the index ``(W*B,)`` that
        :func:`batch_unshuffle` needs to restore the order.
    """
    x_all = distributed.gather(x)                                   # (W*B, ...)
    perm = torch.randperm(x_all.shape[0], device=x.device)
    distributed.broadcast_(perm, src=0)
    return x_all[_share(perm, x.shape[0])], torch.argsort(perm)


@torch.no_grad()
def batch_unshuffle(x: Tensor, unshuffle: Tensor) -> Tensor:
    """Undo :func:`batch_shuffle`: each process gets back the rows of its own inputs.

    Args:
        x: this process's ``(B, ...)`` results for its shuffled share.
        unshuffle: the index :func:`batch_shuffle` returned.
    """
    x_all = distributed.gather(x)                                   # (W*B, ...)
    return x_all[_share(unshuffle, x.shape[0])]


def _share(index: Tensor, batch: int) -> Tensor:
    """This rank's ``batch`` entries of a global ``(W*B,)`` index."""
    return index.view(-1, batch)[distributed.rank()]


def _split_batch_norm(bn: _BatchNorm, x: Tensor, groups: int) -> Tensor:
    """``bn`` applied to each of ``groups`` sub-batches with that sub-batch's statistics.

    Sub-batch ``g`` holds samples ``g*N/G .. (g+1)*N/G - 1``: a slice along the batch is
    a free view in either memory format, where the official demo's reshape
    ``(N, C, *) -> (N/G, G*C, *)`` (samples ``g, g + G, ...``) would copy a channels_last
    tensor twice. Which samples share a group does not matter: the batch is in random
    order. The running statistics move by the mean of the G groups' updates, as in the
    official demo's ``SplitBatchNorm``.
    """
    n = x.shape[0]
    if n % groups:
        raise ValueError(f"a batch of {n} cannot be split into {groups} equal groups")
    factor = 0.0 if bn.momentum is None else bn.momentum
    track = bn.training and bn.track_running_stats and bn.running_mean is not None
    if track and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    outs, stats = [], []
    for part in x.chunk(groups):                                    # (N/G, C, *) each
        mean = bn.running_mean.clone() if track else None           # this group's update
        var = bn.running_var.clone() if track else None
        outs.append(F.batch_norm(part, mean, var, bn.weight, bn.bias, True, factor, bn.eps))
        stats.append((mean, var))
    if track:
        with torch.no_grad():
            bn.running_mean.copy_(torch.stack([m for m, _ in stats]).mean(0))
            bn.running_var.copy_(torch.stack([v for _, v in stats]).mean(0))
    return torch.cat(outs)                                          # (N, C, *)


class _SplitMixin:
    """Batch norm over ``groups`` sub-batches while training; plain batch norm while
    ``groups`` is 1 (the default) and in eval mode."""

    groups: int = 1

    def forward(self, x: Tensor) -> Tensor:
        if self.groups == 1 or (not self.training and self.running_mean is not None):
            return super().forward(x)  # type: ignore[misc]
        return _split_batch_norm(self, x, self.groups)  # type: ignore[arg-type]


class SplitBatchNorm1d(_SplitMixin, nn.BatchNorm1d):
    """``BatchNorm1d`` that :func:`split_batch_norm` can switch to per-group statistics."""


class SplitBatchNorm2d(_SplitMixin, nn.BatchNorm2d):
    """``BatchNorm2d`` that :func:`split_batch_norm` can switch to per-group statistics."""


class SplitBatchNorm3d(_SplitMixin, nn.BatchNorm3d):
    """``BatchNorm3d`` that :func:`split_batch_norm` can switch to per-group statistics."""


_SPLIT = {nn.BatchNorm1d: SplitBatchNorm1d, nn.BatchNorm2d: SplitBatchNorm2d,
          nn.BatchNorm3d: SplitBatchNorm3d}


def convert_split_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every plain ``BatchNorm1d/2d/3d`` in ``module`` by its split version.

    Like ``nn.SyncBatchNorm.convert_sync_batchnorm``: the new layers share the old
    layers' parameters and buffers, so the state dict keeps its keys, and they behave
    exactly as before until :func:`split_batch_norm` sets their ``groups``. Other
    batch-norm classes (with a ``forward`` of their own) are left as they are.

    Returns:
        ``module`` (converted in place), or its replacement if it is itself a batch norm.
    """
    cls = _SPLIT.get(type(module))
    if cls is not None:
        bn: _BatchNorm = module  # type: ignore[assignment]
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        if bn.affine:
            new.weight, new.bias = bn.weight, bn.bias
        new.running_mean, new.running_var = bn.running_mean, bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
        return new.train(bn.training)
    for name, child in module.named_children():
        converted = convert_split_batch_norm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _split_layers(module: nn.Module) -> list[_SplitMixin] | None:
    """The split batch-norm layers of ``module``; None if it has other batch norms."""
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    if not all(isinstance(m, _SplitMixin) for m in layers):
        return None
    return layers  # type: ignore[return-value]


@contextlib.contextmanager
def split_batch_norm(module: nn.Module, groups: int) -> Iterator[nn.Module]:
    """Within the block, the batch-norm layers of ``module`` (converted with
    :func:`convert_split_batch_norm`) normalise ``groups`` sub-batches separately, as
    ``groups`` GPUs would (see :func:`_split_batch_norm`).

    Raises:
        ValueError: ``module`` holds batch norms that were not converted.
    """
    layers = _split_layers(module)
    if layers is None:
        raise ValueError("split_batch_norm needs the batch norms converted by "
                         "convert_split_batch_norm; forward_bn_groups handles any module")
    for bn in layers:
        bn.groups = groups
    try:
        yield module
    finally:
        for bn in layers:
            bn.groups = 1


def forward_bn_groups(module: nn.Module, x: Tensor, groups: int) -> Tensor:
    """``module(x)`` with batch-norm statistics computed per group of ``N / groups``.

    One pass with :func:`split_batch_norm` when every batch norm of ``module`` was
    converted by :func:`convert_split_batch_norm`; otherwise (e.g. timm's
    ``BatchNormAct2d``) one pass per group, which gives the same outputs (running
    statistics then move once per group).

    Raises:
        ValueError: ``len(x)`` is not a multiple of ``groups``.
    """
    if groups == 1:
        return module(x)
    if x.shape[0] % groups:
        raise ValueError(f"a batch of {x.shape[0]} cannot be split into {groups} equal groups")
    if _split_layers(module) is not None:
        with split_batch_norm(module, groups):
            return module(x)
    return torch.cat([module(part) for part in x.chunk(groups)])   # the same groups
