"""torch.distributed helpers that fall back to single-process behaviour.

Every function works whether or not a process group is initialised, so methods and
losses call them unconditionally.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the process that writes logs, metrics and checkpoints."""
    return rank() == 0


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping gradients.

    The backward pass sums the gradients of every rank's copy, so a loss computed on
    the gathered tensor trains each rank's share (SimCLR's global negatives).
    """
    if world_size() == 1:
        return x
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x), dim=0)


@torch.no_grad()
def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, without gradients."""
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def broadcast_(x: Tensor, src: int = 0) -> Tensor:
    """Make ``x`` equal to rank ``src``'s copy, in place."""
    if world_size() > 1:
        dist.broadcast(x, src)
    return x


def all_reduce_mean(x: Tensor) -> Tensor:
    """Average ``x`` across ranks (a new tensor)."""
    if world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size()


def gather_object(obj: object) -> list[object]:
    """Every rank's value of a picklable object, in rank order (on every rank)."""
    if world_size() == 1:
        return [obj]
    out: list[object] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any of them."""
    if world_size() == 1:
        return flag
    t = torch.tensor([float(flag)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def init_from_env(device: str = "auto") -> "torch.device":
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK).

    NCCL on CUDA, gloo on the CPU. Without torchrun's variables this only picks the
    device: CUDA when available (and not ``device="cpu"``), else the CPU.
    """
    import os

    from sslzoo.errors import ConfigError

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but CUDA is not available; "
                          "use --device cpu or auto")
    use_cuda = device != "cpu" and torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not is_distributed():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s value of a picklable object, on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]
