"""Soak: many tiny CPU training steps with checkpoints every 50 and the kNN monitor on,
recording resident memory and open file descriptors at the start and end.

    python benchmarks/soak.py --steps 2000

Prints one line per sample and a summary; growth well beyond the first samples' noise
would point at a leak (tensors kept alive, files left open by checkpointing or logging).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def rss_mib() -> float:
    """Resident set size of this process in MiB (psutil when installed, else /proc)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2 ** 20
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--samples", type=int, default=10, help="memory samples over the run")
    args = parser.parse_args()

    import torch

    from sslzoo.build import resolve
    from sslzoo.engine import Trainer

    torch.set_num_threads(1)
    small = {"simclr": {"proj_hidden_dim": 16, "proj_dim": 8},
             "moco": {"dim": 8, "mlp_hidden_dim": 16, "queue_size": 64},
             "instdisc": {"proj_dim": 8, "nce_k": 16}}[args.method]
    every = max(1, args.steps // args.samples)
    rows: list[tuple[int, float, int]] = []

    def sample(state) -> None:
        if state.step == 1 or state.step % every == 0:
            rows.append((state.step, rss_mib(), open_fds()))
            print(f"step {state.step:6d}  rss {rows[-1][1]:8.1f} MiB  fds {rows[-1][2]}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        spec = resolve({"method": args.method, "data": "synthetic", "backbone": "test_efficientnet",
                        "image_size": 16, "batch_size": 16, "epochs": 10 ** 6,
                        "max_steps": args.steps, "checkpoint_every": 50, "keep": 2,
                        "eval_every": 1, "log_every": 10, "device": "cpu",
                        "out": str(Path(tmp) / "run")}, small)
        t0 = time.perf_counter()
        Trainer(spec, callbacks=[sample], quiet=True).fit()
        elapsed = time.perf_counter() - t0
    (s0, r0, f0), (s1, r1, f1) = rows[0], rows[-1]
    later = rows[len(rows) // 2:]
    print(f"{args.method}: {args.steps} steps in {elapsed:.0f}s; rss {r0:.1f} -> {r1:.1f} MiB "
          f"(second half {min(r for _, r, _ in later):.1f}..{max(r for _, r, _ in later):.1f}); "
          f"open fds {f0} -> {f1}")


if __name__ == "__main__":
    main()
