"""Throughput of every registered augment pipeline, in images per second, per backend.

Each pipeline augments one batch of random images ``--iters`` times after a warm-up;
the median time per call gives the rate, and the median over ``--rounds`` alternated
measurements is reported. Every view pipeline runs with each
``aug.backend`` (``fused``, ``kornia``), and the table gives their ratio and the number of
tensor operations one call dispatches (each is at least one kernel launch on a GPU, where
a step at 32 px lasts milliseconds). Example::

    python benchmarks/augment_throughput.py --batch-size 256 --image-size 32
    python benchmarks/augment_throughput.py --batch-size 512 --image-size 32 --device cuda

On a CPU shared with other jobs, wall-clock rates say more about the load than about
the code; ``--threads 1 --clock cpu`` counts the CPU time the process itself used
instead, which stays close to the rate of an idle single core.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sslzoo.augment import Augment, ViewConfig
from sslzoo.plugins import default_plugins

BACKENDS = ("fused", "kornia")


class _CountOps(TorchDispatchMode):
    """Counts the ATen operations dispatched inside the ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(augment: Augment, x: torch.Tensor) -> int:
    """ATen operations in one ``augment(x)`` call."""
    with _CountOps() as counter:
        augment(x)
    return counter.count


def measure(augment: Augment, x: torch.Tensor, iters: int, warmup: int = 3,
            clock: str = "wall") -> float:
    """Median images per second of ``augment(x)`` over ``iters`` calls.

    ``clock="cpu"`` times with the process's CPU time instead of the wall clock.
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    times = []
    for i in range(warmup + iters):
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        start = now()
        augment(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(now() - start)
    return len(x) / max(statistics.median(times), 1e-9)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32, help="input and output side")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternated measurements of the two backends (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall clock, or CPU time of this process (CPU device only)")
    parser.add_argument("--only", nargs="*", help="pipeline names to run (default: all)")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu measures CPU work; use it with --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    x = torch.rand(args.batch_size, args.channels, args.image_size, args.image_size,
                   device=args.device)
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} "
          f"size={args.image_size}px clock={args.clock} torch={torch.__version__}")
    registry = default_plugins().augments
    print(f"| pipeline | {' | '.join(f'{b} images/s' for b in BACKENDS)} | fused / kornia "
          f"| {' | '.join(f'{b} ops/call' for b in BACKENDS)} |")
    print("|---|" + "---:|" * (2 * len(BACKENDS) + 1))
    for name in args.only or registry.names():
        cls = registry.get(name).obj
        if not issubclass(cls.Config, ViewConfig):       # a plugin's own pipeline
            augment = cls(image_size=args.image_size).to(args.device)
            rate = measure(augment, x, args.iters, clock=args.clock)
            print(f"| {name} | {rate:,.0f} | | | {count_ops(augment, x)} | |", flush=True)
            continue
        augments = [cls(dataclasses.replace(cls.Config(), backend=backend),
                        image_size=args.image_size).to(args.device) for backend in BACKENDS]
        samples: list[list[float]] = [[] for _ in BACKENDS]
        for _ in range(args.rounds):               # alternated, so noise falls on both
            for augment, rates_of in zip(augments, samples):
                rates_of.append(measure(augment, x, args.iters, clock=args.clock))
        rates = [statistics.median(r) for r in samples]
        ops = [count_ops(augment, x) for augment in augments]
        print(f"| {name} | {' | '.join(f'{r:,.0f}' for r in rates)} | "
              f"{rates[0] / rates[1]:.2f} | {' | '.join(map(str, ops))} |", flush=True)


if __name__ == "__main__":
    main()
