"""The CPU levers one by one: glibc allocator, channels_last, bf16 autocast.

Each configuration is one ``sslzoo train METHOD`` process (``simclr`` unless ``--methods``
names others) on the embedded digits (timm ``resnet18`` by default); configurations (all,
or the ``--configs`` keys) alternate in turn, ``--repeats`` times, so that machine noise
falls on all of them. Every configuration names its memory format, so the table does not
depend on the ``--channels-last auto`` default. Reported per configuration: the median images/s of
the steps after ``--warmup``, and from ``wait4`` the process's peak resident memory,
minor page faults and kernel (system) CPU seconds, the figures the allocator moves.

    python benchmarks/cpu_levers.py --image-size 32 --batch-size 64 --steps 5 --repeats 2
    python benchmarks/cpu_levers.py --methods rotation,jigsaw --configs fp32,fp32-cl
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from versus_lightly import run_child, sslzoo_step_s  # noqa: E402

OFF = ["--channels-last", "off"]
ON = ["--channels-last", "on"]
#: key -> (name, extra `sslzoo train` options); the first chosen is the ratios' baseline
CONFIGS = {
    "fp32": ("fp32, allocator tuned", ["--precision", "fp32", *OFF]),
    "glibc": ("fp32, glibc defaults (--no-cpu-tuning)",
              ["--precision", "fp32", "--no-cpu-tuning", *OFF]),
    "fp32-cl": ("fp32 + --channels-last on", ["--precision", "fp32", *ON]),
    "bf16": ("bf16 autocast", ["--precision", "bf16", *OFF]),
    "bf16-cl": ("bf16 autocast + --channels-last on", ["--precision", "bf16", *ON]),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps per run")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--methods", default="simclr", help="comma-separated methods")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma-separated, from {','.join(CONFIGS)}")
    args = p.parse_args(argv)
    keys = args.configs.split(",")
    if unknown := [k for k in keys if k not in CONFIGS]:
        p.error(f"unknown --configs {','.join(unknown)}; choose from {','.join(CONFIGS)}")
    methods = args.methods.split(",")
    runs: dict[tuple[str, str], list[dict[str, float]]] = {
        (m, k): [] for m in methods for k in keys}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for j, (method, key) in enumerate(runs):
                name, extra = CONFIGS[key]
                out = Path(tmp) / f"{i}-{j}"
                cmd = [sys.executable, "-m", "sslzoo", "train", method, "--data", "digits",
                       "--backbone", args.backbone, "--image-size", str(args.image_size),
                       "--batch-size", str(args.batch_size), "--epochs", "100",
                       "--max-steps", str(args.warmup + args.steps), "--log-every", "1",
                       "--device", "cpu", "--out", str(out), *extra]
                wall, usage = run_child(cmd)
                step_s = sslzoo_step_s(out, args.batch_size)[args.warmup:]
                r = {"images_per_s": args.batch_size / statistics.median(step_s),
                     "rss_mib": usage.ru_maxrss / 1024, "minflt": usage.ru_minflt,
                     "sys_s": usage.ru_stime, "wall_s": wall}
                runs[method, key].append(r)
                print(f"  run {i} {method} {name}: {r['images_per_s']:.1f} images/s, "
                      f"{r['rss_mib']:.0f} MiB, {r['minflt']} minor faults, "
                      f"{r['sys_s']:.1f} sys s", file=sys.stderr, flush=True)
    print(f"{args.methods}, {args.backbone}, {args.image_size} px, batch {args.batch_size}, "
          f"digits, CPU; median of {args.repeats} alternated runs x {args.steps} steps")
    from sslzoo.cpu import cpu_supports_bf16

    print("this CPU: " + ("native bf16 (AVX512-BF16 or AMX)" if cpu_supports_bf16()
                          else "no native bf16 (bf16 is emulated)"))
    many = len(methods) > 1
    print(f"| {'method | ' if many else ''}configuration | images/s | vs {CONFIGS[keys[0]][0]} "
          "| peak RSS MiB | minor faults | kernel CPU s |")
    print("|---" * (6 + many) + "|")
    for method in methods:
        base = statistics.median(r["images_per_s"] for r in runs[method, keys[0]])
        for key in keys:
            rs = runs[method, key]
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            print(f"| {method + ' | ' if many else ''}{CONFIGS[key][0]} | "
                  f"{med['images_per_s']:.1f} | {med['images_per_s'] / base:.2f}x | "
                  f"{med['rss_mib']:.0f} | {med['minflt']:.0f} | {med['sys_s']:.1f} |")


if __name__ == "__main__":
    main()
