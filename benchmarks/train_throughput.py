"""Training throughput of every built-in method through the real engine, in images/s.

Each method trains ``--warmup + --steps`` steps on the embedded digits with the same
backbone, image size and batch size; the median of the per-step rates that the engine
logs to ``metrics.jsonl`` after the warm-up is reported (images of the batch per
second; methods that make several views or tiles of an image count it once).

    python benchmarks/train_throughput.py --backbone small_resnet18 --image-size 32
    python benchmarks/train_throughput.py --device cuda --batch-size 256 --compile
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sslzoo.build import resolve
from sslzoo.engine import train
from sslzoo.plugins import default_plugins

#: the digits hold 1,438 training images; these keep each method's defaults otherwise
SMALL_DATA = {"instdisc": {"nce_k": 1024}}


def measure(method: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    steps = args.warmup + args.steps
    per_epoch = 1438 // args.batch_size
    config = dict(SMALL_DATA.get(method, {}))
    if method == "moco":   # a queue below the data set size, a multiple of the batch
        config["queue_size"] = max(args.batch_size, 1024 // args.batch_size * args.batch_size)
    spec = resolve({"method": method, "data": "digits", "backbone": args.backbone,
                    "image_size": args.image_size, "batch_size": args.batch_size,
                    "epochs": math.ceil(steps / per_epoch), "max_steps": steps,
                    "log_every": 1, "device": args.device, "compile": args.compile,
                    "precision": args.precision, "seed": 0, "out": str(out / method)},
                   config)
    start = time.perf_counter()
    run = train(spec, quiet=True)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r][args.warmup:]
    rate = statistics.median(rates)
    return {"images_per_s": rate, "s_per_step": args.batch_size / rate, "wall_s": wall}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("methods", nargs="*", help="methods to time [default: all built-in]")
    p.add_argument("--backbone", default="small_resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=6, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plugins = default_plugins()
    names = args.methods or [e.name for e in plugins.methods.entries() if e.plugin == "sslzoo"]
    print(f"{args.backbone}, {args.image_size} px, batch {args.batch_size}, device "
          f"{args.device}, precision {args.precision}, compile {args.compile}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    print("| method | images/s | s/step | wall s (incl. start-up) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            r = measure(name, args, Path(tmp))
            print(f"| {name} | {r['images_per_s']:.1f} | {r['s_per_step']:.2f} | "
                  f"{r['wall_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
