"""Pretrain a method briefly and compare its frozen features with random initialisation.

Prints one Markdown table row: method, backbone, steps, training seconds, the last
pretext metric, and kNN / linear-probe top-1 of the pretrained backbone next to the
same backbone at random initialisation (same seed, same architecture).

    python benchmarks/quality.py simclr --epochs 10
    python benchmarks/quality.py rotation --epochs 10 --set head_hidden=0
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from sslzoo.build import resolve, split_overrides
from sslzoo.config import parse_assignments
from sslzoo.engine import train
from sslzoo.evaluation import evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("method")
    p.add_argument("--data", default="digits")
    p.add_argument("--backbone", default="small_resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out-dir", default="benchmarks/runs")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data_name = Path(args.data).name or "data"  # an image folder's path -> its name
    out = Path(args.out_dir) / f"{args.method}-{data_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    method_sets, aug_sets = split_overrides(parse_assignments(args.sets))
    train_values = {"method": args.method, "data": args.data, "backbone": args.backbone,
                    "image_size": args.image_size, "epochs": args.epochs,
                    "max_steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr,
                    "seed": args.seed, "out": str(out), "log_every": 1}
    spec = resolve({k: v for k, v in train_values.items() if v is not None}, method_sets, aug_sets)
    start = time.perf_counter()
    run = train(spec, quiet=True)
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "loss" in r][-1]
    metric = f"acc {last['acc']:.3f}" if "acc" in last else f"loss {last['loss']:.3f}"
    trained = evaluate(run)
    baseline = evaluate(run, random_init=True)
    command = "python benchmarks/quality.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print("| method | backbone | data | steps | seconds | pretext (last) | kNN random | kNN | "
          "linear random | linear | command |")
    print(f"| {args.method} | {args.backbone} | {args.data} | {last['step']} | {seconds:.0f} | "
          f"{metric} | {baseline['knn_top1']:.3f} | {trained['knn_top1']:.3f} | "
          f"{baseline['linear_top1']:.3f} | {trained['linear_top1']:.3f} | `{command}` |")


if __name__ == "__main__":
    main()
