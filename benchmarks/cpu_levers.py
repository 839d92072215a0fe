"""The CPU levers one by one: glibc allocator, channels_last, bf16 autocast.

Each configuration is one ``sslzoo train simclr`` process on the embedded digits (timm
``resnet18`` by default); configurations alternate in turn, ``--repeats`` times, so that
machine noise falls on all of them. Reported per configuration: the median images/s of
the steps after ``--warmup``, and from ``wait4`` the process's peak resident memory,
minor page faults and kernel (system) CPU seconds, the figures the allocator moves.

    python benchmarks/cpu_levers.py --image-size 32 --batch-size 64 --steps 5 --repeats 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from versus_lightly import run_child, sslzoo_step_s  # noqa: E402

#: name -> extra `sslzoo train` options (the first is the baseline of the ratios)
CONFIGS = {
    "fp32, allocator tuned": ["--precision", "fp32"],
    "fp32, glibc defaults (--no-cpu-tuning)": ["--precision", "fp32", "--no-cpu-tuning"],
    "fp32 + --channels-last on": ["--precision", "fp32", "--channels-last", "on"],
    "bf16 autocast": ["--precision", "bf16"],
    "bf16 autocast + --channels-last on": ["--precision", "bf16", "--channels-last", "on"],
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps per run")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for j, (name, extra) in enumerate(CONFIGS.items()):
                out = Path(tmp) / f"{i}-{j}"
                cmd = [sys.executable, "-m", "sslzoo", "train", "simclr", "--data", "digits",
                       "--backbone", args.backbone, "--image-size", str(args.image_size),
                       "--batch-size", str(args.batch_size), "--epochs", "100",
                       "--max-steps", str(args.warmup + args.steps), "--log-every", "1",
                       "--device", "cpu", "--out", str(out), *extra]
                wall, usage = run_child(cmd)
                step_s = sslzoo_step_s(out, args.batch_size)[args.warmup:]
                r = {"images_per_s": args.batch_size / statistics.median(step_s),
                     "rss_mib": usage.ru_maxrss / 1024, "minflt": usage.ru_minflt,
                     "sys_s": usage.ru_stime, "wall_s": wall}
                runs[name].append(r)
                print(f"  run {i} {name}: {r['images_per_s']:.1f} images/s, "
                      f"{r['rss_mib']:.0f} MiB, {r['minflt']} minor faults, "
                      f"{r['sys_s']:.1f} sys s", file=sys.stderr, flush=True)
    print(f"simclr, {args.backbone}, {args.image_size} px, batch {args.batch_size}, "
          f"digits, CPU; median of {args.repeats} alternated runs x {args.steps} steps")
    from sslzoo.cpu import cpu_supports_bf16

    print("this CPU: " + ("native bf16 (AVX512-BF16 or AMX)" if cpu_supports_bf16()
                          else "no native bf16 (bf16 is emulated)"))
    print("| configuration | images/s | vs fp32 | peak RSS MiB | minor faults | "
          "kernel CPU s |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(r["images_per_s"] for r in runs[next(iter(CONFIGS))])
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"| {name} | {med['images_per_s']:.1f} | {med['images_per_s'] / base:.2f}x | "
              f"{med['rss_mib']:.0f} | {med['minflt']:.0f} | {med['sys_s']:.1f} |")


if __name__ == "__main__":
    main()
