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

Measured in ``benchmarks/RESULTS.md`` ("CPU levers").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from pathlib import Path

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


__all__ = ["cpu_flags", "cpu_supports_bf16", "keep_freed_memory"]
