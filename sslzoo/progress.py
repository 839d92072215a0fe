"""What training reports as it goes: metrics.jsonl (and TensorBoard), and progress.

:class:`MetricLog` averages step metrics and appends them to ``metrics.jsonl``, with
the same scalars in TensorBoard event files under ``--logger tensorboard``;
:class:`Progress` draws a tqdm bar (loss, learning rate, images/s, ETA) on a terminal
and prints plain lines with an ETA otherwise.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sslzoo import distributed
from sslzoo.errors import ConfigError

if TYPE_CHECKING:
    from sslzoo.engine import TrainState


class MetricLog:
    """Averages step metrics on the device and appends them to ``metrics.jsonl``; with
    ``tensorboard`` (a folder), also writes every number of every row as a TensorBoard
    scalar at the row's step."""

    def __init__(self, path: Path, enabled: bool = True, tensorboard: Path | None = None) -> None:
        self.path, self.enabled = path, enabled
        self.sums: dict[str, Tensor] = {}
        self.pending = 0
        self.t0 = time.perf_counter()
        self.writer = tensorboard_writer(tensorboard) if enabled and tensorboard else None

    def add(self, out: dict[str, Tensor]) -> None:
        for k, v in out.items():
            self.sums[k] = self.sums[k] + v.float() if k in self.sums else v.float()
        self.pending += 1

    def flush(self, state: TrainState, lr: float, batch_size: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        row: dict[str, Any] = {"step": state.step, "epoch": state.epoch, "lr": lr}
        if self.sums:  # averaged over this interval's steps and over all ranks
            keys = sorted(self.sums)
            means = distributed.all_reduce_mean(torch.stack([self.sums[k] for k in keys]))
            row.update({k: (v / max(self.pending, 1)).item() for k, v in zip(keys, means)})
        row["images_per_s"] = self.pending * batch_size * distributed.world_size() / max(elapsed, 1e-9)
        self.sums, self.pending, self.t0 = {}, 0, time.perf_counter()
        self.write(row)
        return row

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, global_step=row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def tensorboard_writer(folder: Path) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``folder``.

    Raises:
        ConfigError: tensorboard is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--logger tensorboard needs the tensorboard package: "
                          "pip install 'sslzoo[tensorboard]'") from None
    return SummaryWriter(str(folder), flush_secs=10)


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    m, sec = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def eta_seconds(step: int, first_step: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the pace of the steps taken since ``first_step`` (None: no pace yet)."""
    done = step - first_step
    return (total - step) * elapsed / done if done > 0 and elapsed > 0 else None


def metrics_text(metrics: dict[str, float]) -> str:
    """``loss 1.234 lr 0.03 512 img/s``: the method's metrics, the rate and the throughput."""
    extras = " ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                      if k not in ("step", "epoch", "lr", "images_per_s"))
    return (f"{extras} lr {metrics.get('lr', 0):.3g} "
            f"{metrics.get('images_per_s', 0):.0f} img/s").strip()


def progress_line(step: int, total: int, metrics: dict[str, float], eta: float | None) -> str:
    """The plain line printed when stderr is not a terminal."""
    return (f"step {step}/{total} epoch {metrics.get('epoch', 0)} {metrics_text(metrics)} "
            f"eta {format_duration(eta)}")


class Progress:
    """Progress on stderr: a tqdm bar with loss, lr, images/s and ETA on a terminal;
    otherwise a plain line (with ETA) at most every 5 seconds and at the last step."""

    BAR_FORMAT = ("{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                  "[{elapsed} elapsed, ETA {remaining}{postfix}]")

    def __init__(self, total: int, enabled: bool = True, stream: Any = None) -> None:
        self.total, self.enabled = total, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.last_print = 0.0
        self.first_step = 0
        self.bar: Any = None

    def start(self, step: int) -> None:
        self.first_step = step
        self.t0 = time.perf_counter()
        if self.enabled and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=step, file=self.stream, unit="step",
                            dynamic_ncols=True, bar_format=self.BAR_FORMAT)

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(metrics_text(metrics), refresh=False)
            self.bar.update(step - self.bar.n)
            return
        now = time.perf_counter()
        if now - self.last_print < 5 and step != self.total:
            return
        self.last_print = now
        eta = eta_seconds(step, self.first_step, self.total, now - self.t0)
        print(progress_line(step, self.total, metrics, eta), file=self.stream, flush=True)

    def close(self, state: TrainState) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elapsed = time.perf_counter() - self.t0
        done = "stopped" if state.stop else "finished"
        print(f"{done} at step {state.step} after {elapsed:.1f}s; run directory {state.run_dir}",
              file=self.stream, flush=True)
