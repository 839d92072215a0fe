"""Non-finite losses and gradients caught without a host-device sync inside the training step.

:class:`NonFiniteGuard` keeps, on the training device, a step counter, the number of
steps whose loss or gradients were not finite and the step numbers of the first
``limit + 1`` of them.
Each step adds to these with tensor operations only; the host reads them
(:meth:`NonFiniteGuard.check`) when it syncs anyway: when metrics are logged and before a
checkpoint is written or the kNN monitor runs. So a non-finite loss never reaches a saved
checkpoint, and the error names the step it happened at.

With ``limit > 0`` (``--skip-nonfinite N``) a step whose loss is not finite must leave no
trace: :meth:`NonFiniteGuard.protect` snapshots the weights, buffers (queues, memory
banks, BatchNorm statistics) and optimiser state before the step and puts them back on
the device with ``torch.where`` when the loss was not finite, so momentum buffers and
Adam moments are not corrupted either. Optimiser state that a step creates lazily (the
first step) cannot be put back on the device; that step checks the flag on the host once
and drops the new state if the loss was not finite.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor


class NonFiniteGuard:
    """Device-side record of non-finite losses; ``limit`` of them may be skipped.

    Args:
        limit: how many non-finite steps a run may skip (0: the first one stops it).
        device: the training device.
        step: the step the run starts from (a resumed run's).
        seen: step numbers of non-finite steps already skipped (from a checkpoint).
    """

    def __init__(self, limit: int, device: torch.device, step: int = 0,
                 seen: Iterable[int] = ()) -> None:
        self.limit, self.device = limit, device
        self.seen = list(seen)
        self.step = torch.tensor(step, dtype=torch.long, device=device)
        self.count = torch.tensor(len(self.seen), dtype=torch.long, device=device)
        self.slots = torch.arange(limit + 1, device=device)
        steps = (self.seen + [0] * (limit + 1))[:limit + 1]
        self.steps = torch.tensor(steps, dtype=torch.long, device=device)  # (limit + 1,)
        self.ok = torch.ones((), dtype=torch.bool, device=device)

    def observe(self, loss: Tensor, grads: list[Tensor] | None = None) -> Tensor:
        """Record this step's loss and, when given, its gradients; returns the device flag
        ``loss and gradients are finite`` (no sync).

        The gradients matter on their own: a finite loss can come with a non-finite
        gradient (seen with bf16 autocast on the CPU, in a convolution's weight gradient),
        which would put NaN into the weights without the loss ever showing it.
        """
        ok = torch.isfinite(loss.detach()).all()
        if grads:
            norms = torch.stack(torch._foreach_norm([g.detach() for g in grads]))
            ok = ok & torch.isfinite(norms).all()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = ok.to(torch.int32)     # every rank skips the same steps
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            ok = flag.bool()
        self.step.add_(1)
        bad = ~ok
        self.steps.copy_(torch.where((self.slots == self.count) & bad, self.step, self.steps))
        self.count.add_(bad.long())
        self.ok = ok
        return ok

    def check(self) -> tuple[list[int], int | None]:
        """Sync once: ``(steps newly found non-finite, the step beyond the limit or None)``."""
        values = torch.cat([self.count.view(1), self.steps]).tolist()
        count, steps = int(values[0]), [int(v) for v in values[1:]]
        known = len(self.seen)
        new = steps[known:min(count, self.limit)]
        self.seen += new
        over = steps[self.limit] if count > self.limit else None
        return new, over

    @contextlib.contextmanager
    def protect(self, tensors: list[Tensor], optimizer: torch.optim.Optimizer) -> Iterator[None]:
        """Undo on the device everything the step inside did if its loss was not finite.

        ``tensors``: weights and buffers the step may change; the optimiser's state is
        added. A no-op when ``limit`` is 0 (the run stops on the first one anyway).
        """
        if self.limit == 0:
            yield
            return
        state_before = set(optimizer.state)
        guarded = tensors + [v for s in optimizer.state.values() for v in s.values()
                             if isinstance(v, Tensor)]
        saved = [t.detach().clone() for t in guarded]
        yield
        ok = self.ok
        with torch.no_grad():
            for t, old in zip(guarded, saved):
                t.copy_(torch.where(ok, t, old))
        created = [p for p in optimizer.state if p not in state_before]
        if created and not bool(ok):   # lazily created state: one host check, first step only
            for p in created:
                del optimizer.state[p]
