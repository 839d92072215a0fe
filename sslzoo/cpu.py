"""CPU levers the engine pulls when it trains on the CPU.

* :func:`keep_freed_memory`: glibc's allocator returns large blocks to the kernel as soon
  as they are freed (blocks above ``M_MMAP_THRESHOLD`` are ``mmap``-ed and ``munmap``-ed;
  the heap top is trimmed past ``M_TRIM_THRESHOLD``), so a network's activation buffers
  are page-faulted in again at every step. ``mallopt(M_MMAP_MAX, 0)`` and a trim
  threshold of 2 GiB keep freed memory in the process for the next step, at the price of
  a resident set that stays at its peak instead of shrinking between steps. The same as
  ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` in the environment.
* :func:`cpu_supports_bf16`: whether the CPU has native bf16 arithmetic (AVX512-BF16 or
  AMX), which :func:`sslzoo.engine.resolve_precision` consults.
* :func:`convert_small_input_convs`: under CPU bf16 autocast, torch 2.14's CPU
  convolution computes the weight gradient from uninitialised memory (values up to 1e38,
  or inf) for some inputs no larger than the kernel, e.g. a 1x1 map into a 3x3 stride-2
  convolution: ResNet's last stage on jigsaw's 4 px tiles. Every convolution whose input
  is no larger than its kernel (in height or width) runs in fp32 instead; on such maps of
  a few pixels the fp32 kernel is the faster one (``benchmarks/RESULTS.md``).

Measured in ``benchmarks/RESULTS.md`` ("CPU levers").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: the largest value mallopt takes for the trim threshold (an int)
TRIM_THRESHOLD = 2 ** 31 - 1


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (musl and others lack it)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_kept = False


def keep_freed_memory() -> bool:
    """Stop glibc returning freed memory to the kernel (process-wide, from now on).

    Returns:
        True if the allocator was tuned (now or by an earlier call); False where the C
        library is not glibc, which is left alone.
    """
    global _kept
    if _kept:
        return True
    libc = _glibc()
    if libc is None:
        return False
    _kept = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                    TRIM_THRESHOLD))
    return _kept


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_supports_bf16(flags: frozenset[str] | None = None) -> bool:
    """True on CPUs with native bf16 dot products: AVX512-BF16 or AMX-BF16."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


class SmallInputConv2d(nn.Conv2d):
    """``nn.Conv2d`` that leaves CPU autocast for inputs no larger than its kernel.

    Same parameters, buffers and state-dict keys as the ``nn.Conv2d`` it replaces
    (:func:`convert_small_input_convs` swaps the class in place); only the forward
    differs, and only on the CPU under autocast for such small inputs.
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        kh, kw = self.kernel_size
        if (input.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and (input.shape[-2] <= kh or input.shape[-1] <= kw)):
            with torch.autocast("cpu", enabled=False):
                return super()._conv_forward(input.float(), weight.float(),
                                             None if bias is None else bias.float())
        return super()._conv_forward(input, weight, bias)


def convert_small_input_convs(module: nn.Module) -> int:
    """Make every plain ``nn.Conv2d`` of ``module`` a :class:`SmallInputConv2d`, in place.

    The engine calls it for runs under CPU bf16 autocast. Subclasses of ``nn.Conv2d``
    with a forward of their own are left alone.

    Returns:
        How many convolutions were converted.
    """
    count = 0
    for m in module.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = SmallInputConv2d
            count += 1
    return count


__all__ = ["SmallInputConv2d", "convert_small_input_convs", "cpu_flags", "cpu_supports_bf16",
           "keep_freed_memory"]
