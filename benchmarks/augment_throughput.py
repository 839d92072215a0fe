"""Throughput of every registered augment pipeline, in images per second.

Each pipeline augments one batch of random images ``--iters`` times after a warm-up;
the median time per call gives the rate. Example::

    python benchmarks/augment_throughput.py --batch-size 256 --image-size 32
    python benchmarks/augment_throughput.py --batch-size 64 --image-size 96 --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from sslzoo.augment import Augment
from sslzoo.plugins import default_plugins


def measure(augment: Augment, x: torch.Tensor, iters: int, warmup: int = 3) -> float:
    """Median images per second of ``augment(x)`` over ``iters`` calls."""
    times = []
    for i in range(warmup + iters):
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        augment(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32, help="input and output side")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--only", nargs="*", help="pipeline names to run (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    x = torch.rand(args.batch_size, args.channels, args.image_size, args.image_size,
                   device=args.device)
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} "
          f"size={args.image_size}px torch={torch.__version__}")
    registry = default_plugins().augments
    for name in args.only or registry.names():
        augment = registry.get(name).obj(image_size=args.image_size).to(args.device)
        rate = measure(augment, x, args.iters)
        print(f"{name:12s} {rate:12,.0f} images/s")


if __name__ == "__main__":
    main()
