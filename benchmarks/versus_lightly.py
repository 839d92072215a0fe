"""SimCLR and MoCo v2 side by side: ``sslzoo train`` against the same training written with lightly.

Both sides train the same timm ``resnet18`` (``num_classes=0``) at the same image size
and batch, two views per image, on the same real image folder, with the same optimizer
(SimCLR: timm's LARS, lr 0.3 x B/256, weight decay 1e-6; MoCo v2: SGD, lr 0.03 x B/256,
momentum 0.9, weight decay 1e-4, queue ``--queue-size``, key momentum 0.999, T = 0.2)
and the same heads (SimCLR: 2048-d hidden layer with batch norm, 128-d output; MoCo v2:
2048-d hidden layer without batch norm, 128-d output). The lightly side is lightly's own
recipe: ``SimCLRTransform`` / ``MoCoV2Transform`` on PIL images in DataLoader workers,
``SimCLRProjectionHead`` / ``MoCoProjectionHead``, ``NTXentLoss`` (with a memory bank for
MoCo), ``update_momentum``; the sslzoo side is the ``sslzoo train`` command with its
defaults (data decoded once, augmentation batched on the device).

Each run is its own process, the frameworks alternate (sslzoo, lightly, sslzoo, ...) so
that machine noise falls on both, and every step's wall time is recorded; the first
``--warmup`` steps (start-up, first allocations) are dropped and the median images/s of
the rest is reported with the ratio and each process's peak resident memory
(``ru_maxrss`` from ``wait4``: the largest of the process and its DataLoader workers).

lightly is installed only for this benchmark (``pip install -e .[bench]``); the package
and its tests never import it. A folder of real photographs (crops of scikit-learn's
sample images) is written when ``--data`` is not given.

CPU (a few minutes)::

    python benchmarks/versus_lightly.py --image-size 64 --batch-size 128 --steps 8 --repeats 2

GPU (full settings)::

    python benchmarks/versus_lightly.py --device cuda --image-size 224 --batch-size 256 \\
        --steps 50 --warmup 10 --repeats 3 --num-workers 8 --data /path/to/imagenet-subset
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------- lightly side

def lightly_run(args: argparse.Namespace) -> None:
    """Train with lightly in this process; write per-step seconds to ``args.result``."""
    import copy

    import timm
    import torch
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead, SimCLRProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import MoCoV2Transform, SimCLRTransform
    from timm.optim import Lars

    torch.manual_seed(0)
    device = torch.device(args.device)
    backbone = timm.create_model("resnet18", num_classes=0).to(device)
    size, b = args.image_size, args.batch_size
    if args.method == "simclr":
        transform = SimCLRTransform(input_size=size)
        head = SimCLRProjectionHead(backbone.num_features, 2048, 128, batch_norm=True).to(device)
        criterion = NTXentLoss(temperature=0.5)
        params = list(backbone.parameters()) + list(head.parameters())
        optimizer = Lars(params, lr=0.3 * b / 256, momentum=0.9, weight_decay=1e-6)
    else:
        transform = MoCoV2Transform(input_size=size)
        head = MoCoProjectionHead(backbone.num_features, 2048, 128).to(device)
        key_backbone, key_head = copy.deepcopy(backbone), copy.deepcopy(head)
        deactivate_requires_grad(key_backbone)
        deactivate_requires_grad(key_head)
        criterion = NTXentLoss(temperature=0.2, memory_bank_size=(args.queue_size, 128))
        params = list(backbone.parameters()) + list(head.parameters())
        optimizer = torch.optim.SGD(params, lr=0.03 * b / 256, momentum=0.9, weight_decay=1e-4)
    dataset = torchvision.datasets.ImageFolder(args.data, transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=b, shuffle=True, drop_last=True, num_workers=args.num_workers,
        pin_memory=device.type == "cuda", persistent_workers=args.num_workers > 0)
    steps, times = args.warmup + args.steps, []
    t0 = time.perf_counter()
    while len(times) < steps:
        for (x0, x1), _ in loader:
            x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
            if args.method == "simclr":
                z0, z1 = head(backbone(x0)), head(backbone(x1))
            else:
                update_momentum(backbone, key_backbone, m=0.999)
                update_momentum(head, key_head, m=0.999)
                z0 = head(backbone(x0))
                with torch.no_grad():
                    z1 = key_head(key_backbone(x1))
            loss = criterion(z0, z1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            times.append(now - t0)
            t0 = now
            if len(times) == steps:
                break
    Path(args.result).write_text(json.dumps({"step_s": times}))


# -------------------------------------------------------------------------- sslzoo side

def sslzoo_command(args: argparse.Namespace, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "sslzoo", "train", args.method, "--data", args.data,
           "--backbone", "resnet18", "--image-size", str(args.image_size),
           "--batch-size", str(args.batch_size), "--max-steps", str(args.warmup + args.steps),
           "--epochs", "1000", "--log-every", "1", "--device", args.device, "--out", str(out)]
    if args.method == "moco":
        cmd += ["--set", f"queue_size={args.queue_size}"]
    return cmd + list(args.sslzoo_args)


def sslzoo_step_s(out: Path, batch_size: int) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [batch_size / r["images_per_s"] for r in rows if "images_per_s" in r]


# ---------------------------------------------------------------------------- the driver

def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, Any]:
    """Run ``cmd``; (wall seconds, its ``resource.struct_rusage`` from ``wait4``)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    err = proc.stderr.read().decode() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{err[-2000:]}")
    return time.perf_counter() - start, usage


def one_run(framework: str, args: argparse.Namespace, tmp: Path, i: int) -> dict[str, float]:
    out = tmp / f"{framework}-{args.method}-{i}"
    if framework == "sslzoo":
        wall, usage = run_child(sslzoo_command(args, out))
        step_s = sslzoo_step_s(out, args.batch_size)
    else:
        result = tmp / f"{out.name}.json"
        cmd = [sys.executable, __file__, "--lightly-child", "--result", str(result),
               "--method", args.method, "--data", args.data, "--device", args.device,
               "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--queue-size", str(args.queue_size), "--num-workers", str(args.num_workers)]
        wall, usage = run_child(cmd)
        step_s = json.loads(result.read_text())["step_s"]
    timed = step_s[args.warmup:]
    return {"images_per_s": args.batch_size / statistics.median(timed),
            "rss_mib": usage.ru_maxrss // 1024,
            "wall_s": wall}


def photo_folder(out: Path, per_photo: int) -> tuple[str, int]:
    """A labelled folder of ``per_photo`` crops of each of scikit-learn's two sample
    photographs (``benchmarks/photo_crops.py``'s training split); (its path, the count)."""
    sys.path.insert(0, str(HERE))
    from photo_crops import write_crops

    n = write_crops(out, per_split={"train": per_photo})
    return str(out / "train"), n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="simclr,moco", help="comma-separated: simclr, moco")
    p.add_argument("--data", help="image folder (labelled subfolders); default: photo crops")
    p.add_argument("--crops-per-photo", type=int, default=1600,
                   help="crops of each of the 2 photos (8 labels) when --data is not given")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=8, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps per run")
    p.add_argument("--repeats", type=int, default=2, help="alternated runs per framework")
    p.add_argument("--queue-size", type=int, default=4096, help="MoCo queue / memory bank")
    p.add_argument("--num-workers", type=int, default=2, help="lightly DataLoader workers")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sslzoo-args", nargs=argparse.REMAINDER, default=[],
                   help="extra `sslzoo train` options (last on the line)")
    p.add_argument("--lightly-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.lightly_child:
        lightly_run(args)
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.data is None:
            args.data, n = photo_folder(tmp / "photos", args.crops_per_photo)
            print(f"wrote {n} photo crops to a temporary folder")
        print(f"timm resnet18, {args.image_size} px, batch {args.batch_size}, two views, "
              f"device {args.device}, {args.steps} timed steps after {args.warmup}, "
              f"{args.repeats} alternated runs each; sslzoo options: "
              f"{' '.join(args.sslzoo_args) or '(defaults)'}")
        print("| method | sslzoo images/s | lightly images/s | ratio | sslzoo peak RSS MiB "
              "| lightly peak RSS MiB |")
        print("|---|---|---|---|---|---|")
        for method in args.methods.split(","):
            args.method = method
            runs: dict[str, list[dict[str, float]]] = {"sslzoo": [], "lightly": []}
            for i in range(args.repeats):
                for framework in ("sslzoo", "lightly"):
                    r = one_run(framework, args, tmp, i)
                    runs[framework].append(r)
                    print(f"  {method} {framework} run {i}: {r['images_per_s']:.1f} images/s, "
                          f"{r['rss_mib']} MiB, {r['wall_s']:.0f} s", file=sys.stderr, flush=True)
            med = {k: statistics.median(r["images_per_s"] for r in v) for k, v in runs.items()}
            rss = {k: max(r["rss_mib"] for r in v) for k, v in runs.items()}
            print(f"| {method} | {med['sslzoo']:.1f} | {med['lightly']:.1f} | "
                  f"{med['sslzoo'] / med['lightly']:.2f}x | {rss['sslzoo']} | {rss['lightly']} |",
                  flush=True)


if __name__ == "__main__":
    main()
