"""SimCLR epochs per minute on a CIFAR-size in-memory set (synthetic 32 px images).

``--images`` synthetic 32 px images (50,000 like CIFAR-10's training set) are registered
as the data set ``cifar-size`` and SimCLR trains on them through the real engine
(``small_resnet18``: the ResNet-18 with the CIFAR stem). The median per-step rate after
``--warmup`` logged steps gives images/s and epochs per minute, and the projected minutes
for ``--epochs-target`` epochs.

    python benchmarks/epochs_per_minute.py --device cuda --batch-size 512 --steps 60
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from functools import partial
from pathlib import Path

import torch

from sslzoo.build import resolve
from sslzoo.data import synthetic
from sslzoo.engine import train
from sslzoo.plugins import default_plugins
from sslzoo.registry import Entry


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=60, help="logged steps in all")
    p.add_argument("--warmup", type=int, default=10, help="untimed first steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--backbone", default="small_resnet18")
    p.add_argument("--epochs-target", type=int, default=200)
    args = p.parse_args(argv)
    plugins = default_plugins()
    factory = partial(synthetic, sizes=(args.images, 128))
    plugins.datasets.add(Entry("dataset", "cifar-size", lambda split, size, root, download:
                               factory(split, size), "benchmarks", "0", __name__,
                               f"{args.images} synthetic images"))
    with tempfile.TemporaryDirectory() as tmp:
        spec = resolve({"method": "simclr", "data": "cifar-size", "backbone": args.backbone,
                        "image_size": 32, "batch_size": args.batch_size, "epochs": 1000,
                        "max_steps": args.steps, "log_every": 1, "device": args.device,
                        "precision": args.precision, "compile": args.compile,
                        "compile_mode": args.compile_mode, "out": str(Path(tmp) / "run")},
                       plugins=plugins)
        run = train(spec, plugins=plugins, quiet=True)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rate = statistics.median([r["images_per_s"] for r in rows if "images_per_s" in r]
                             [args.warmup:])
    per_min = rate * 60 / args.images
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"| simclr {args.backbone} 32 px batch {args.batch_size} {args.precision} "
          f"compile {args.compile} ({args.compile_mode}) on {name} | {rate:.1f} images/s | "
          f"{per_min:.2f} epochs/min | {args.epochs_target / per_min:.1f} min for "
          f"{args.epochs_target} epochs |")


if __name__ == "__main__":
    main()
