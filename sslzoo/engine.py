"""One training loop for every method.

Device auto-selection, bf16 autocast on CUDA, channels_last, optional torch.compile,
linear warm-up + cosine learning rate, gradient clipping, seeds, metrics.jsonl, atomic
checkpoints that resume exactly, a kNN monitor, and DDP under torchrun.

The step itself never waits for the device: non-finite losses are counted on the device
(:mod:`sslzoo.numerics`) and read when metrics are logged and before anything is saved,
so a broken state never reaches a checkpoint. Checkpoints (:mod:`sslzoo.checkpoint`) are
durable and rotated; a run killed at any moment resumes to exactly the weights of an
uninterrupted one.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sslzoo import checkpoint, distributed
from sslzoo.cpu import convert_small_input_convs, cpu_supports_bf16, keep_freed_memory
from sslzoo.build import RunSpec, build_method
from sslzoo.errors import CheckpointError, ConfigError, DataError, TrainingError
from sslzoo.method import DataInfo, Method, peak_learning_rate
from sslzoo.numerics import NonFiniteGuard
from sslzoo.plugins import Plugins, default_plugins
from sslzoo.progress import MetricLog, Progress

__all__ = ["Trainer", "TrainState", "TrainingError", "build_optimizer", "lr_lambda", "train"]


@dataclass
class TrainState:
    """Where training stands; handed to callbacks after every step."""

    run_dir: Path
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    total_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    stop: bool = False          # set (e.g. by SIGINT) to checkpoint and stop after this step
    interrupted: bool = False


def default_run_dir(method: str) -> Path:
    return Path("runs") / f"{method}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _kernel_options(cls: type, device: torch.device) -> dict[str, bool]:
    """``fused=True`` on CUDA, ``foreach=True`` elsewhere, where ``cls`` takes them."""
    params = inspect.signature(cls).parameters
    if device.type == "cuda" and "fused" in params:
        return {"fused": True}
    return {"foreach": True} if "foreach" in params else {}


def build_optimizer(method: Method, peak_lr: float,
                    device: torch.device | None = None) -> torch.optim.Optimizer:
    """The optimiser the method's Config names, over its parameter groups.

    On CUDA the fused kernels of SGD, Adam and AdamW update all parameters in one launch;
    elsewhere (and for timm's LARS) the foreach kernels update them a list at a time.
    """
    c = method.config
    device = device or next(method.parameters()).device
    groups = method.parameter_groups()
    for group in groups:  # timm's convention: a group may run at a multiple of the rate
        if "lr_scale" in group:
            group["lr"] = peak_lr * group["lr_scale"]
    if c.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=peak_lr, momentum=c.momentum,
                               weight_decay=c.weight_decay, nesterov=getattr(c, "nesterov", False),
                               **_kernel_options(torch.optim.SGD, device))
    if c.optimizer == "lars":
        from timm.optim import Lars

        return Lars(groups, lr=peak_lr, momentum=c.momentum, weight_decay=c.weight_decay,
                    **_kernel_options(Lars, torch.device("cpu")))
    betas = (c.momentum, getattr(c, "beta2", 0.999))
    cls = torch.optim.Adam if c.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=peak_lr, betas=betas, weight_decay=c.weight_decay,
               **_kernel_options(cls, device))


def convert_sync_batch_norm(method: Method) -> Method:
    """``--sync-bn``: SyncBatchNorm in every child module but ``method.sync_bn_exclude``."""
    for name, child in list(method.named_children()):
        if name not in method.sync_bn_exclude:
            setattr(method, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return method


def use_sync_bn(method: Method, requested: bool | None,
                device: torch.device | None = None) -> bool:
    """``--sync-bn/--no-sync-bn`` when given, else the method's ``global_bn`` default.

    torch's SyncBatchNorm runs on CUDA only: on another device the method's default
    falls back to per-process batch norm, and an explicit ``--sync-bn`` is an error.
    """
    cuda = device is None or device.type == "cuda"
    if requested and not cuda:
        raise ConfigError(f"--sync-bn needs CUDA (torch's SyncBatchNorm runs on GPUs only), "
                          f"but training runs on {device}; drop --sync-bn")
    if requested is not None:
        return requested
    return method.global_bn and cuda


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str,
              milestones: tuple[float, ...] = (), gamma: float = 0.1) -> Callable[[int], float]:
    """Linear warm-up from ~0 to 1, then cosine decay to 0, step drops, or constant.

    Step drops happen once ``step >= milestone * total_steps`` (milestones are fractions
    of the whole run, warm-up included, like a paper's epoch numbers).
    """
    if schedule == "step" and list(milestones) != sorted(milestones):
        raise ConfigError(f"lr_milestones must be increasing, got {tuple(milestones)}; e.g. "
                          "--set lr_milestones=0.6,0.8")
    drops = [m * total_steps for m in milestones]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "step":
            return gamma ** sum(step >= d for d in drops)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32).

    ``auto`` is bf16 on CUDA devices that support it and fp32 on the CPU. On CPUs with
    native bf16 (AVX512-BF16 or AMX) ``--precision bf16`` measured 1.5-2.1x the fp32 step
    rate, but it is not the default there: torch's CPU bf16 convolution computed some
    weight gradients from uninitialised memory (jigsaw's NaN on the digits; worked around
    by :func:`sslzoo.cpu.convert_small_input_convs`), and fp32 keeps a run's results
    independent of the CPU it ran on (``benchmarks/RESULTS.md``, "CPU levers").
    """
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs CUDA; use bf16 or fp32 on the CPU")
    if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        warnings.warn("--precision bf16 on a CPU without AVX512-BF16 or AMX: bf16 is emulated "
                      "there and usually slower than fp32", stacklevel=2)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def resolve_channels_last(mode: str) -> bool:
    """Whether images and model use the channels_last memory format.

    ``auto`` is on, on CUDA and on the CPU alike: on the CPU channels_last measured
    1.04-1.14x the step rate in fp32 and 1.00-1.13x under bf16 autocast for every method
    at the default backbone and size (``benchmarks/RESULTS.md``, "CPU levers").
    """
    return mode != "off"


class Trainer:
    """Trains one :class:`RunSpec`; ``Trainer(spec).fit()`` returns the run directory."""

    def __init__(self, spec: RunSpec, *, resume: bool = False, plugins: Plugins | None = None,
                 callbacks: list[Callable[[TrainState], None]] | None = None,
                 quiet: bool = False) -> None:
        self.spec, self.resume, self.quiet = spec, resume, quiet
        self.plugins = plugins or default_plugins()
        self.callbacks = list(callbacks or [])

    # -- set-up -------------------------------------------------------------------------
    def _setup(self) -> None:
        from sslzoo.data import SkippedFilesWarning, load_data, sample_images
        from sslzoo.loaders import make_loader
        from sslzoo.runs import check_loads_back

        t = self.spec.train
        check_loads_back(self.spec, self.plugins)   # what trains must load: fail at step 0
        self.device = distributed.init_from_env(t.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.autocast_dtype = resolve_precision(t.precision, self.device)
        cuda = self.device.type == "cuda"
        if self.device.type == "cpu" and t.cpu_tuning:
            keep_freed_memory()    # before the data and the model are allocated
        self.channels_last = resolve_channels_last(t.channels_last)
        if cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        run_dir = Path(t.out) if t.out else default_run_dir(t.method)
        self.state = TrainState(run_dir=Path(distributed.broadcast_object(str(run_dir))))

        from sslzoo.cache import default_cache_dir

        with warnings.catch_warnings():   # skipped files are reported once, below
            warnings.simplefilter("ignore", SkippedFilesWarning)
            self.data = self._build(lambda: load_data(
                t.data, "train", t.image_size, root=t.data_root, download=t.download,
                registry=self.plugins.datasets, strict=t.strict_data,
                cache_dir=default_cache_dir() if t.decoded_cache else None))
        skipped = list(getattr(self.data, "skipped", ()))
        try:
            self.loader = make_loader(self.data, t.batch_size, self.device, shuffle=True,
                                      drop_last=True, seed=t.seed, rank=self.rank,
                                      world_size=self.world, num_workers=t.num_workers,
                                      channels_last=self.channels_last)
        except DataError as exc:
            if not skipped:
                raise
            raise DataError(f"{exc} ({len(skipped)} broken file(s) were skipped, e.g. "
                            f"{skipped[0][0]})") from None
        _report_skipped(self.data, quiet=self.quiet or not distributed.is_main())
        steps_per_epoch = len(self.loader)
        total = t.epochs * steps_per_epoch
        self.state.total_steps = min(total, t.max_steps) if t.max_steps else total

        torch.manual_seed(t.seed)                  # identical initial weights on every rank
        info = DataInfo(len(self.data), t.image_size, total_steps=self.state.total_steps)
        self.method = self._build(lambda: build_method(self.spec, info, self.plugins)).to(self.device)
        if self.channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        if self.device.type == "cpu" and self.autocast_dtype is torch.bfloat16:
            convert_small_input_convs(self.method)   # see sslzoo.cpu: wrong bf16 gradients
        self.method.prepare(sample_images(self.data, 10_000, seed=t.seed).to(self.device))
        model: nn.Module = self.method
        if self.world > 1:
            if use_sync_bn(self.method, t.sync_bn, self.device):
                convert_sync_batch_norm(self.method)
            with warnings.catch_warnings():
                # methods keep their buffers (queues, memory banks) identical across ranks
                # themselves; broadcasting them every step would be wasted bandwidth
                warnings.simplefilter("ignore", FutureWarning)
                model = nn.parallel.DistributedDataParallel(
                    model, device_ids=[self.device.index] if cuda else None,
                    broadcast_buffers=False)
        self.model = torch.compile(model, mode=t.compile_mode) if t.compile else model

        c = self.spec.method_config
        global_batch = t.batch_size * self.world
        self.peak_lr = t.lr if t.lr is not None else peak_learning_rate(c, global_batch)
        self.optimizer = build_optimizer(self.method, self.peak_lr, self.device)
        warmup = min(round(c.warmup_epochs * steps_per_epoch), self.state.total_steps // 2)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.state.total_steps, warmup, c.schedule,
                                      c.lr_milestones, c.lr_gamma))
        self.step_lr = self.scheduler.get_last_lr()[0]
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.autocast_dtype is torch.float16)
        if distributed.is_main():
            self._check_output_dir()
        torch.manual_seed(t.seed + 7919 * self.rank)  # augmentation differs across ranks
        self.guard = NonFiniteGuard(t.skip_nonfinite, self.device)
        if self.resume and self._has_checkpoint():
            self._load_checkpoint()
        elif distributed.is_main():
            self._write_config()

    def _build(self, make: Callable[[], Any]) -> Any:
        """``make()``, with sizes too large to allocate reported as a settings error."""
        try:
            return make()
        except (RuntimeError, MemoryError, OverflowError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise ConfigError(f"cannot build the run with {_given_settings(self.spec)} "
                              f"({type(exc).__name__}: {first}); use smaller sizes") from None

    def _check_output_dir(self) -> None:
        """Writable, with room for two checkpoints (plus ``--keep`` step files), before
        any work starts; removes temporary files a killed write left behind."""
        ckpt_dir = self.state.run_dir / "checkpoints"
        checkpoint.remove_temporaries(ckpt_dir)
        checkpoint.remove_temporaries(self.state.run_dir)
        model_bytes = sum(t.numel() * t.element_size() for t in self.method.state_dict().values())
        trainable = sum(p.numel() * p.element_size() for p in self.method.parameters()
                        if p.requires_grad)
        per_checkpoint = model_bytes + 2 * trainable + (1 << 20)  # optimiser moments, metadata
        checkpoint.check_room(self.state.run_dir, per_checkpoint, count=2 + self.spec.train.keep)

    def _has_checkpoint(self) -> bool:
        """Resuming a run killed before its first checkpoint starts it again from step 0."""
        run_dir = self.state.run_dir
        if (run_dir / "checkpoints" / checkpoint.LAST).exists():
            return True
        if not (run_dir / "config.json").exists():
            raise CheckpointError(f"--resume: no checkpoint at {run_dir / 'checkpoints' / 'last.pt'}; "
                                  "start the run without --resume, or point --out at an existing "
                                  "run directory")
        if not self.quiet and distributed.is_main():
            print(f"{run_dir} has no checkpoint yet; starting it from step 0", file=sys.stderr)
        return False

    def _write_config(self) -> None:
        run_dir = self.state.run_dir
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise ConfigError(f"{run_dir} already holds a run; add --resume to continue it "
                              "or choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").write_text("")
        config = run_config(self.spec, self.plugins, **self._extra())
        checkpoint.write_atomic(json.dumps(config, indent=2, default=str).encode(),
                                run_dir / "config.json")

    # -- checkpoints --------------------------------------------------------------------
    def checkpoint_payload(self) -> dict[str, Any]:
        s = self.state
        return {
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": s.step, "epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch,
            "rng": checkpoint.rng_state(),
            "nonfinite_steps": list(self.guard.seen),
            "config": run_config(self.spec, self.plugins, **self._extra()),
        }

    def _extra(self) -> dict[str, Any]:
        extra = {"num_samples": len(self.data), "world_size": self.world,
                 "peak_lr": self.peak_lr, "device": str(self.device),
                 "autocast": str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype
                 else "off", "channels_last": self.channels_last}
        skipped = list(getattr(self.data, "skipped", ()))
        if skipped:
            extra["skipped_files"] = {"count": len(skipped), "first": [
                {"path": path, "reason": reason} for path, reason in skipped[:10]]}
        return extra

    def check_numerics(self, log: MetricLog | None = None) -> None:
        """Read the device's non-finite record (one sync); log newly skipped steps.

        Raises:
            TrainingError: a non-finite loss beyond ``--skip-nonfinite``, naming its step.
        """
        new, over = self.guard.check()
        for step in new:
            msg = (f"skipped step {step}: the loss or a gradient was not finite ({len(self.guard.seen)} of "
                   f"--skip-nonfinite {self.guard.limit})")
            if log is not None:
                log.write({"step": step, "skipped_nonfinite": len(self.guard.seen)})
            if not self.quiet and distributed.is_main():
                print(msg, file=sys.stderr, flush=True)
        if over is not None:
            allowed = (f" (more than --skip-nonfinite {self.guard.limit})" if self.guard.limit
                       else "")
            raise TrainingError(
                f"the loss or a gradient is not finite at step {over}{allowed}; lower the "
                f"learning rate (--lr, now {self.peak_lr:g}), set --clip-grad or --skip-nonfinite N; the last "
                f"good checkpoint is in {self.state.run_dir / 'checkpoints'}")

    def save_checkpoint(self, periodic: bool = False) -> None:
        """Write ``checkpoints/last.pt`` durably (rank 0), with every rank's RNG state, and
        with ``periodic`` and ``--keep K`` a rotated ``step-NNNNNN.pt``.

        The non-finite record is checked first, so a broken state is never saved.
        """
        self.check_numerics()
        rngs = distributed.gather_object(checkpoint.rng_state())
        if distributed.is_main():
            payload = self.checkpoint_payload()
            payload["rng_ranks"] = rngs
            checkpoint.save_checkpoint(payload, self.state.run_dir / "checkpoints",
                                       step=self.state.step if periodic else None,
                                       keep=self.spec.train.keep)

    def _load_checkpoint(self) -> None:
        path = self.state.run_dir / "checkpoints" / "last.pt"
        if not path.exists():
            raise CheckpointError(f"--resume: no checkpoint at {path}; start the run without "
                                  "--resume, or point --out at an existing run directory")
        ckpt = checkpoint.load(path, map_location=self.device)
        if ckpt["config"]["method"]["name"] != self.spec.method_cls.name:
            raise CheckpointError(f"--resume: {path} is a {ckpt['config']['method']['name']} run, "
                                  f"not {self.spec.method_cls.name}")
        self.method.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        s = self.state
        s.step, s.epoch, s.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        self.guard = NonFiniteGuard(self.spec.train.skip_nonfinite, self.device, s.step,
                                    ckpt.get("nonfinite_steps", ()))
        if distributed.is_main():
            _truncate_metrics(s.run_dir / "metrics.jsonl", s.step)
        rngs = ckpt.get("rng_ranks") or [ckpt["rng"]]
        if len(rngs) == self.world:   # each rank continues its own augmentation stream
            checkpoint.set_rng_state(rngs[self.rank])
        else:                         # resumed on another number of processes
            torch.manual_seed(self.spec.train.seed + 7919 * self.rank + s.step)

    # -- the loop -----------------------------------------------------------------------
    def fit(self) -> Path:
        self._setup()
        s, t = self.state, self.spec.train
        log = MetricLog(s.run_dir / "metrics.jsonl", enabled=distributed.is_main(),
                        tensorboard=s.run_dir / "tensorboard" if t.logger == "tensorboard" else None)
        progress = Progress(s.total_steps, enabled=distributed.is_main() and not self.quiet)
        progress.start(s.step)
        with self._sigint_stops_training():
            while s.step < s.total_steps and s.epoch < t.epochs and not s.stop:
                self.loader.set_epoch(s.epoch)
                self.loader.skip(s.batch_in_epoch)
                for images, index, _ in self.loader:
                    out = self._step(images, index)
                    s.step += 1
                    s.batch_in_epoch += 1
                    log.add(out)
                    if s.step % t.log_every == 0 or s.step == s.total_steps:
                        self.check_numerics(log)
                        s.metrics = log.flush(s, self.step_lr, len(images))
                        progress.update(s.step, s.metrics)
                    for cb in self.callbacks:
                        cb(s)
                    if self.world > 1:  # every rank stops at the same step
                        s.stop = distributed.any_rank(s.stop)
                    if t.checkpoint_every and s.step % t.checkpoint_every == 0:
                        self.save_checkpoint(periodic=True)
                    if s.stop or s.step >= s.total_steps:
                        break
                else:
                    s.epoch, s.batch_in_epoch = s.epoch + 1, 0
                    if t.eval_every and s.epoch % t.eval_every == 0:
                        self.check_numerics(log)
                        self._monitor(log)
                    self.save_checkpoint()
                    continue
                break
        if log.pending:
            self.check_numerics(log)
            s.metrics = log.flush(s, self.step_lr, t.batch_size)
        self.save_checkpoint()
        progress.close(s)
        log.close()
        s.interrupted = s.stop
        distributed.barrier()
        return s.run_dir

    def _step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        """One optimiser step without a host-device sync (see :mod:`sslzoo.numerics`)."""
        t = self.spec.train
        guarded = list(self.method.parameters()) + list(self.method.buffers())
        with self.guard.protect(guarded, self.optimizer):
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                out = self.model(images, index)
            loss = out["loss"]
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            # fp16's scaler skips its own overflowing steps; otherwise a non-finite gradient
            # is a failure like a non-finite loss
            self.guard.observe(loss, None if self.scaler.is_enabled() else
                               [p.grad for p in self.method.parameters() if p.grad is not None])
            if t.clip_grad:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.method.parameters(), t.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.method.on_step_end()
        self.step_lr = self.scheduler.get_last_lr()[0]  # the rate this step used
        self.scheduler.step()
        return {k: v.detach() for k, v in out.items() if isinstance(v, Tensor) and v.numel() == 1}

    def _monitor(self, log: MetricLog) -> None:
        from sslzoo.data import load_data
        from sslzoo.evaluation import evaluate_features, extract_features

        t = self.spec.train
        test = load_data(t.data, "test", t.image_size, root=t.data_root, download=t.download,
                         registry=self.plugins.datasets)
        train_images, train_labels = _images_labels(self.data)
        test_images, test_labels = _images_labels(test)
        if train_images is None or test_images is None or (train_labels < 0).all():
            return
        feats = [extract_features(self.method, x, self.device) for x in (train_images, test_images)]
        result = evaluate_features(feats[0], train_labels.to(self.device), feats[1],
                                   test_labels.to(self.device), protocol="knn")
        log.write({"step": self.state.step, "epoch": self.state.epoch, "knn_top1": result["knn_top1"]})

    @contextlib.contextmanager
    def _sigint_stops_training(self) -> Iterator[None]:
        """First Ctrl-C (or SIGTERM, as schedulers send before preempting a job): finish
        the step, checkpoint, stop. A second one aborts at once."""
        def handler(signum: int, frame: Any) -> None:
            if self.state.stop:
                raise KeyboardInterrupt
            self.state.stop = True
        try:
            previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread
            yield
            return
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _given_settings(spec: RunSpec) -> str:
    """The settings that differ from their defaults, as flags (for error messages)."""
    from sslzoo import config as cfg

    parts = []
    for obj, prefix in ((spec.train, "--"), (spec.method_config, "--set "),
                        (spec.augment_config, "--set aug.")):
        defaults = cfg.to_dict(type(obj)())
        for key, value in cfg.to_dict(obj).items():
            if value != defaults.get(key) and key not in ("method", "out", "augment"):
                flag = prefix + key.replace("_", "-") if prefix == "--" else prefix + key
                parts.append(f"{flag}={cfg.format_value(tuple(value) if isinstance(value, list) else value)}")
    return ", ".join(parts) or "the default settings"


def _report_skipped(data: Any, quiet: bool) -> None:
    """Say on stderr how many image files were skipped, and the first few."""
    skipped = list(getattr(data, "skipped", ()))
    if skipped and not quiet:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        first = "; ".join(f"{path} ({reason})" for path, reason in skipped[:5])
        print(f"skipped {len(skipped)} file(s) that cannot be read as images: {first}{more} "
              "(listed in config.json; --strict-data stops instead)", file=sys.stderr, flush=True)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows a killed run logged after the checkpoint it resumes from."""
    if not path.exists():
        return
    rows = path.read_text().splitlines(keepends=True)
    kept = []
    for row in rows:
        try:
            if json.loads(row).get("step", 0) <= step:
                kept.append(row)
        except json.JSONDecodeError:  # a line cut short by the kill
            continue
    if len(kept) != len(rows):
        checkpoint.write_atomic("".join(kept).encode(), path)


def _images_labels(data: Any) -> tuple[Tensor | None, Tensor | None]:
    images = getattr(data, "images", None)
    return images, getattr(data, "labels", None)


def run_config(spec: RunSpec, plugins: Plugins, **extra: Any) -> dict[str, Any]:
    """``config.json``: the resolved configuration plus versions and the environment."""
    import sslzoo

    return {
        **spec.to_dict(),
        "versions": {"sslzoo": sslzoo.__version__, "torch": str(torch.__version__),
                     "python": sys.version.split()[0], "plugins": plugins.versions()},
        "method_plugin": plugins.methods.get(spec.method_cls.name).plugin,
        **extra,
    }


def train(spec: RunSpec, *, resume: bool = False, plugins: Plugins | None = None,
          callbacks: list[Callable[[TrainState], None]] | None = None, quiet: bool = False) -> Path:
    """Train ``spec`` and return its run directory."""
    return Trainer(spec, resume=resume, plugins=plugins, callbacks=callbacks, quiet=quiet).fit()
