"""Throughput of every registered augment pipeline, in images per second.

Each pipeline augments one batch of random images ``--iters`` times after a warm-up;
the median time per call gives the rate. Example::

    python benchmarks/augment_throughput.py --batch-size 256 --image-size 32
    python benchmarks/augment_throughput.py --batch-size 64 --image-size 96 --device cuda

On a CPU shared with other jobs, wall-clock rates say more about the load than about
the code; ``--threads 1 --clock cpu`` counts the CPU time the process itself used
instead, which stays close to the rate of an idle single core.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from sslzoo.augment import Augment
from sslzoo.plugins import default_plugins


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
    for name in args.only or registry.names():
        augment = registry.get(name).obj(image_size=args.image_size).to(args.device)
        rate = measure(augment, x, args.iters, clock=args.clock)
        print(f"{name:12s} {rate:12,.0f} images/s")


if __name__ == "__main__":
    main()
