"""Training throughput of every registered method, full path against model-only, in images/s.

For each method one :class:`sslzoo.engine.Trainer` is set up on the embedded digits with
the same backbone, image size and batch size, then two step loops alternate in blocks of
``--block`` steps, ``--rounds`` times, in the same process:

* **full**: the engine's step on the loader's next batch: the batch drawn from the
  data, its augmentation on the device, forward, backward, optimiser, ``on_step_end``;
* **model-only**: the same step on one pre-made batch whose augmented views were
  recorded once and are replayed (the method's :class:`~sslzoo.augment.Augment` is
  swapped for a replay of its recorded outputs), so no data or augmentation is done.
  The method's own pretext transforms (rotating, tiling, masking) stay in the step.

Each step is timed on its own (CUDA synchronised); the first ``--warmup`` steps of each
loop are dropped and the medians are reported with the ratio full / model-only (1.0: the
data path costs nothing). Images of the batch per second: a method that makes 2 views,
4 rotations or 9 tiles of an image counts it once.

On CUDA, ``--sync-steps`` further full steps (data, augmentation and step, untimed) run
under ``torch.cuda.set_sync_debug_mode("warn")``, and the table reports how many times
per step the host waited for the device (0 is the goal: the step only queues kernels).

    python benchmarks/train_throughput.py --backbone small_resnet18 --image-size 32
    python benchmarks/train_throughput.py --device cuda --batch-size 256 --precision bf16
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslzoo.build import resolve
from sslzoo.engine import Trainer
from sslzoo.plugins import default_plugins

#: the digits hold 1,438 training images; these keep each method's defaults otherwise
SMALL_DATA = {"instdisc": {"nce_k": 1024}}


class Recorder(nn.Module):
    """Calls the wrapped augment and keeps a detached copy of each output."""

    def __init__(self, augment: nn.Module) -> None:
        super().__init__()
        self.augment, self.outputs = augment, []

    def forward(self, x: torch.Tensor) -> Any:
        out = self.augment(x)
        self.outputs.append(tuple(o.detach().clone() for o in out) if isinstance(out, tuple)
                            else out.detach().clone())
        return out


class Replay(nn.Module):
    """Returns recorded augment outputs in turn instead of augmenting."""

    def __init__(self, outputs: list[Any]) -> None:
        super().__init__()
        self.outputs, self.i = outputs, 0

    def forward(self, x: torch.Tensor) -> Any:
        out = self.outputs[self.i % len(self.outputs)]
        self.i += 1
        return out


def build_trainer(method: str, args: argparse.Namespace, out: Path) -> Trainer:
    config = dict(SMALL_DATA.get(method, {}))
    if method == "moco":   # a queue below the data set size, a multiple of the batch
        config["queue_size"] = max(args.batch_size, 1024 // args.batch_size * args.batch_size)
    spec = resolve({"method": method, "data": "digits", "backbone": args.backbone,
                    "image_size": args.image_size, "batch_size": args.batch_size,
                    "epochs": 1000, "device": args.device, "compile": args.compile,
                    "precision": args.precision, "seed": 0, "out": str(out / method),
                    **({"cpu_tuning": args.cpu_tuning} if args.cpu_tuning else {})},
                   config)
    trainer = Trainer(spec, quiet=True)
    trainer._setup()
    return trainer


def timed(step: Callable[[], Any], n: int, device: torch.device) -> list[float]:
    """Seconds of each of ``n`` calls of ``step``."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def host_syncs(step: Callable[[], Any], n: int, device: torch.device) -> float:
    """How many times per call ``step`` makes the host wait for the CUDA device (NaN
    elsewhere): torch warns on every synchronising operation in "warn" mode."""
    if device.type != "cuda" or n <= 0:
        return float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(n):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / n


def measure(method: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    trainer = build_trainer(method, args, out)
    batches = iter(())

    def full_step() -> None:
        nonlocal batches
        try:
            images, index, _ = next(batches)
        except StopIteration:
            batches = iter(trainer.loader)
            images, index, _ = next(batches)
        trainer._step(images, index)

    images, index, _ = next(iter(trainer.loader))
    real = trainer.method.augment
    recorder = Recorder(real)
    trainer.method.augment = recorder
    trainer._step(images, index)                # records one step's augmented views
    replay = Replay(recorder.outputs)

    def model_step() -> None:
        trainer.method.augment = replay
        try:
            trainer._step(images, index)
        finally:
            trainer.method.augment = real

    full: list[float] = []
    model: list[float] = []
    for _ in range(args.rounds):
        full += timed(full_step, args.block, trainer.device)[args.warmup:]
        model += timed(model_step, args.block, trainer.device)[args.warmup:]
    b = args.batch_size
    full_rate, model_rate = b / statistics.median(full), b / statistics.median(model)
    syncs = host_syncs(full_step, args.sync_steps, trainer.device)
    return {"full": full_rate, "model": model_rate, "ratio": full_rate / model_rate,
            "syncs": syncs,
            "peak_cuda_mib": (torch.cuda.max_memory_allocated(trainer.device) / 2 ** 20
                              if trainer.device.type == "cuda" else float("nan"))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("methods", nargs="*", help="methods to time [default: every registered one]")
    p.add_argument("--backbone", default="small_resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--block", type=int, default=4, help="steps per block (one loop)")
    p.add_argument("--rounds", type=int, default=2, help="alternated blocks of each loop")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps of each block")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--cpu-tuning", choices=["auto", "off"], help="the engine's CPU levers")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--sync-steps", type=int, default=4,
                   help="CUDA: full steps run to count host-device syncs (0: skip)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plugins = default_plugins()
    names = args.methods or [e.name for e in plugins.methods.entries()]
    print(f"{args.backbone}, {args.image_size} px, batch {args.batch_size}, device "
          f"{args.device}, precision {args.precision}, compile {args.compile}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} x "
          f"{args.block - args.warmup} timed steps per loop")
    print("| method | full images/s | model-only images/s | full / model-only | peak CUDA MiB "
          "| host syncs / step |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            r = measure(name, args, Path(tmp))
            peak, syncs = r["peak_cuda_mib"], r["syncs"]
            print(f"| {name} | {r['full']:.1f} | {r['model']:.1f} | {r['ratio']:.2f} | "
                  f"{'n/a' if peak != peak else f'{peak:.0f}'} | "
                  f"{'n/a' if syncs != syncs else f'{syncs:.2f}'} |", flush=True)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()
