"""``sslzoo compare``: which method works on these images?

Every method is pretrained on the same data, backbone, image size, batch size and step
budget, once per seed, and evaluated with the same frozen-feature protocol (weighted kNN
and the offline linear probe of :mod:`sslzoo.evaluation`) next to the *same* backbone at
random initialisation with the same seed. The comparison directory holds one run per
(method, seed) under ``runs/`` and, at the end, ``compare.json`` (settings, every run,
the summary), ``compare.md`` (the table) and ``compare.png`` (a bar chart).

A finished run leaves ``result.json`` in its directory; running the same command again
reuses it, so an interrupted comparison continues where it stopped. A run directory made
with other settings is an error rather than a silent mix.

The summary gives, per method and protocol, the mean and sample standard deviation over
seeds of the trained and the random-initialisation accuracies, and
``z = (mean_trained - mean_random) / sd_random``: how many random-init standard deviations
pretraining moved the score (undefined with one seed or a zero random-init spread).
"""
from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sslzoo.checkpoint import write_text_atomic
from sslzoo.errors import ConfigError

PROTOCOLS = ("knn", "linear")
RESULT = "result.json"


@dataclass
class CompareSettings:
    """What every method of a comparison shares, plus per-method ``--set`` overrides.

    Attributes:
        data: data set name or image folder (labelled: it is evaluated).
        methods: method names, in table order.
        backbone: backbone name.
        image_size: square image side.
        budget_steps: optimiser steps per run.
        seeds: one run per method and seed; the random-init baseline uses the same seeds.
        batch_size: images per step.
        features: which features are evaluated (``final``, a stage, ``embedding``).
        sets: ``{method: {key: value}}`` hyper-parameter overrides (``aug.KEY`` for the
            augment), as ``--set METHOD.KEY=VALUE``.
        device: training and evaluation device.
        precision: training precision (``--precision``; ``auto`` is bf16 on CUDA, fp32 on
            the CPU). Each run records the autocast it used.
        data_root: where torchvision data sets live.
    """

    data: str
    methods: list[str]
    backbone: str = "small_resnet18"
    image_size: int = 32
    budget_steps: int = 100
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    batch_size: int = 64
    features: str = "final"
    sets: dict[str, dict[str, str]] = field(default_factory=dict)
    device: str = "auto"
    precision: str = "auto"
    data_root: str | None = None

    def run_settings(self, method: str, seed: int) -> dict[str, Any]:
        """The settings one run depends on (its ``result.json`` records them)."""
        return {"method": method, "seed": seed, "data": self.data, "backbone": self.backbone,
                "image_size": self.image_size, "budget_steps": self.budget_steps,
                "batch_size": self.batch_size, "features": self.features,
                "precision": self.precision, "sets": dict(sorted(self.sets.get(method, {}).items()))}


def parse_method_sets(assignments: dict[str, str], methods: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{"moco.queue_size": "1024"}`` -> ``{"moco": {"queue_size": "1024"}}``."""
    out: dict[str, dict[str, str]] = {}
    for key, value in assignments.items():
        method, _, rest = key.partition(".")
        if not rest or method not in methods:
            raise ConfigError(f"--set {key}={value}: compare takes METHOD.KEY=VALUE with METHOD "
                              f"one of --methods ({', '.join(methods)}), e.g. "
                              f"--set {methods[0]}.lr=0.1")
        out.setdefault(method, {})[rest] = value
    return out


def run_compare(settings: CompareSettings, out: str | Path, *, plugins: Any = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate every (method, seed), reusing finished runs; write the report.

    Returns:
        The content of ``compare.json``.
    """
    from sslzoo.plugins import default_plugins

    plugins = plugins or default_plugins()
    if not settings.methods:
        raise ConfigError("--methods is empty; give e.g. --methods simclr,rotation")
    if not settings.seeds:
        raise ConfigError("--seeds is empty; give e.g. --seeds 0,1,2")
    for name in settings.methods:
        plugins.methods.get(name)  # unknown names fail before any training
    out = Path(out)
    runs: list[dict[str, Any]] = []
    total = len(settings.methods) * len(settings.seeds)
    for method in settings.methods:
        for seed in settings.seeds:
            result = _one_run(settings, method, seed, out / "runs" / f"{method}-seed{seed}",
                              plugins, log)
            if result is None:  # training was interrupted (Ctrl-C, SIGTERM)
                report = _report(settings, runs, complete=False)
                write_report(report, out, chart=False)
                return report
            runs.append(result)
            if len(runs) < total:  # a partial report after each run, for long comparisons
                write_report(_report(settings, runs, complete=False), out, chart=False)
    report = _report(settings, runs, complete=True)
    write_report(report, out)
    return report


def _report(settings: CompareSettings, runs: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
    methods = [m for m in settings.methods if any(r["method"] == m for r in runs)]
    return {"settings": asdict(settings), "complete": complete, "environment": _environment(),
            "runs": runs, "summary": summarise(runs, methods)}


def _one_run(settings: CompareSettings, method: str, seed: int, run_dir: Path, plugins: Any,
             log: Callable[[str], None]) -> dict[str, Any] | None:
    wanted = settings.run_settings(method, seed)
    done = run_dir / RESULT
    if done.exists():
        result = json.loads(done.read_text())
        if result.get("settings") != wanted:
            raise ConfigError(f"{run_dir} was made with other settings ({result.get('settings')}); "
                              "use a new --out, or delete that run directory to redo it")
        log(f"{method} seed {seed}: reusing {done}")
        return result
    if run_dir.exists():  # an unfinished run: start it again
        shutil.rmtree(run_dir)
    result = train_and_evaluate(settings, method, seed, run_dir, plugins)
    if result is None:
        log(f"{method} seed {seed}: interrupted; rerun the same command to continue")
        return None
    result["settings"] = wanted
    write_text_atomic(done, json.dumps(result, indent=2))
    log(f"{method} seed {seed}: kNN {result['knn_top1']:.3f} (random {result['random_knn_top1']:.3f}), "
        f"linear {result['linear_top1']:.3f} (random {result['random_linear_top1']:.3f}), "
        f"{result['train_seconds']:.0f} s")
    return result


def train_and_evaluate(settings: CompareSettings, method: str, seed: int, run_dir: Path,
                       plugins: Any) -> dict[str, Any] | None:
    """Pretrain one method with one seed, then evaluate it and its random initialisation
    (``None`` if training was interrupted)."""
    from sslzoo.build import resolve, split_overrides
    from sslzoo.engine import Trainer
    from sslzoo.evaluation import evaluate

    method_sets, aug_sets = split_overrides(settings.sets.get(method, {}))
    values = {"method": method, "data": settings.data, "backbone": settings.backbone,
              "image_size": settings.image_size, "max_steps": settings.budget_steps,
              "epochs": 1_000_000, "batch_size": settings.batch_size, "seed": seed,
              "device": settings.device, "precision": settings.precision,
              "out": str(run_dir), "log_every": 1,
              "data_root": settings.data_root}
    spec = resolve({k: v for k, v in values.items() if v is not None}, method_sets, aug_sets,
                   plugins)
    start = time.perf_counter()
    trainer = Trainer(spec, plugins=plugins, quiet=True)
    trainer.fit()
    seconds = time.perf_counter() - start
    if trainer.state.interrupted:
        return None
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = max((r.get("step", 0) for r in rows), default=0)
    last = next((r for r in reversed(rows) if "loss" in r), {})
    config = json.loads((run_dir / "config.json").read_text())
    autocast = config.get("autocast")
    augment_backend = config.get("augment", {}).get("backend")
    common = {"device": settings.device, "plugins": plugins, "features": settings.features}
    trained = evaluate(run_dir, **common)
    random = _random_init_eval(run_dir, run_dir.parent.parent / "random-init", common, plugins)
    return {"method": method, "seed": seed, "steps": steps, "train_seconds": seconds,
            "images_per_second": steps * settings.batch_size / seconds if seconds else None,
            "last_loss": last.get("loss"), "last_acc": last.get("acc"), "autocast": autocast,
            "augment_backend": augment_backend,
            "features": trained["features"], "feature_dim": trained["feature_dim"],
            "knn_k": trained["knn_k"], "knn_temperature": trained["knn_temperature"],
            "num_train": trained["num_train"], "num_test": trained["num_test"],
            **{f"{p}_top1": trained[f"{p}_top1"] for p in PROTOCOLS},
            **{f"random_{p}_top1": random[f"{p}_top1"] for p in PROTOCOLS}}


def _random_init_eval(run_dir: Path, cache: Path, common: dict[str, Any],
                      plugins: Any) -> dict[str, Any]:
    """``evaluate(run_dir, random_init=True)``, shared between runs whose random-init
    features are the same function: methods that build the same backbone from the same
    seed and keep the base class's ``embed``, ``preprocess`` and ``forward_stages`` (the
    key hashes the initial weights and those functions' code)."""
    from sslzoo.evaluation import evaluate

    key = _random_init_key(run_dir, common["features"], plugins)
    hit = cache / f"{key}.json"
    if hit.exists():
        return json.loads(hit.read_text())
    result = evaluate(run_dir, random_init=True, **common)
    write_text_atomic(hit, json.dumps(result, indent=2))
    return result


def _random_init_key(run_dir: Path, features: str, plugins: Any) -> str:
    import hashlib

    from sslzoo.runs import load_run

    run = load_run(run_dir, "cpu", plugins=plugins, random_init=True)
    h = hashlib.sha256()
    method_cls = type(run.method)
    fns = [method_cls.embed, method_cls.preprocess, type(run.method.encoder).forward_stages,
           type(run.method.encoder).forward]
    if features == "embedding":  # the method's head is part of it: never shared
        fns.append(method_cls.embedding)
    for fn in fns:
        h.update(f"{fn.__module__}.{fn.__qualname__}".encode())
    h.update(json.dumps([run.spec.train.data, run.spec.train.image_size, features]).encode())
    for name, tensor in sorted(run.method.encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def z_score(trained: Sequence[float], random: Sequence[float]) -> float | None:
    """``(mean(trained) - mean(random)) / sd(random)`` with the sample standard deviation;
    ``None`` when it is undefined (fewer than two random-init values, or no spread)."""
    if len(random) < 2:
        return None
    sd = statistics.stdev(random)
    if sd == 0:
        return None
    return (statistics.fmean(trained) - statistics.fmean(random)) / sd


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def summarise(runs: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """One row per method: mean and sd over seeds, z against random init, speed."""
    rows = []
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        row: dict[str, Any] = {"method": method, "seeds": [r["seed"] for r in mine],
                               "features": mine[0]["features"], "steps": mine[0]["steps"],
                               "knn_temperature": mine[0]["knn_temperature"]}
        for p in PROTOCOLS:
            trained = [r[f"{p}_top1"] for r in mine]
            random = [r[f"random_{p}_top1"] for r in mine]
            row[f"{p}_mean"], row[f"{p}_sd"] = _mean_sd(trained)
            row[f"random_{p}_mean"], row[f"random_{p}_sd"] = _mean_sd(random)
            row[f"{p}_z"] = z_score(trained, random)
        row["train_seconds_mean"] = statistics.fmean(r["train_seconds"] for r in mine)
        speeds = [r["images_per_second"] for r in mine if r["images_per_second"]]
        row["images_per_second_mean"] = statistics.fmean(speeds) if speeds else None
        rows.append(row)
    return rows


def _environment() -> dict[str, Any]:
    import platform
    from importlib.metadata import version

    import torch

    return {"sslzoo": version("sslzoo"), "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------ report


def _pm(mean: float, sd: float | None) -> str:
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f}"


def _z(z: float | None) -> str:
    return "n/a" if z is None or not math.isfinite(z) else f"{z:+.1f}"


def _autocast(report: dict[str, Any]) -> str:
    """", bf16 autocast" / ", fp32" from what the runs recorded (older runs: not recorded)."""
    used = {r.get("autocast") for r in report["runs"]} - {None}
    if not used:
        return ""
    return ", " + " and ".join("fp32" if a == "off" else f"{a} autocast" for a in sorted(used))


def _augment_backend(report: dict[str, Any]) -> str:
    """", fused augmentation" from what the runs recorded (older runs: not recorded)."""
    used = {r.get("augment_backend") for r in report["runs"]} - {None}
    return ", " + " and ".join(sorted(used)) + " augmentation" if used else ""


def format_table(report: dict[str, Any]) -> str:
    """The Markdown table of a comparison (rows in ``--methods`` order, none highlighted)."""
    s = report["settings"]
    lines = [f"{s['data']}, {s['backbone']}, {s['image_size']} px, {s['budget_steps']} steps of "
             f"{s['batch_size']} images, seeds {','.join(map(str, s['seeds']))}, features "
             f"{s['features']}{_autocast(report)}{_augment_backend(report)}; mean ± sd over seeds; z in random-init sd units."
             + ("" if report.get("complete", True) else " INCOMPLETE: runs still missing."), "",
             "| method | kNN random init | kNN | z kNN | linear random init | linear | z linear "
             "| train s | images/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["summary"]:
        speed = r["images_per_second_mean"]
        lines.append(
            f"| {r['method']} | {_pm(r['random_knn_mean'], r['random_knn_sd'])} | "
            f"{_pm(r['knn_mean'], r['knn_sd'])} | {_z(r['knn_z'])} | "
            f"{_pm(r['random_linear_mean'], r['random_linear_sd'])} | "
            f"{_pm(r['linear_mean'], r['linear_sd'])} | {_z(r['linear_z'])} | "
            f"{r['train_seconds_mean']:.0f} | {'n/a' if speed is None else f'{speed:.0f}'} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path, chart: bool = True) -> None:
    """``compare.json``, ``compare.md`` and (``chart``) ``compare.png`` in ``out``."""
    write_text_atomic(out / "compare.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "compare.md", format_table(report))
    if chart:
        plot_report(report, out / "compare.png")


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """Bars of random-init and trained accuracy per method, one panel per protocol,
    error bars one sd over seeds."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is in the plot extra
        from sslzoo.errors import DataError

        raise DataError("the chart needs matplotlib: pip install 'sslzoo[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["summary"]
    names = [r["method"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.1 * len(rows) + 3), 3.8), sharey=True)
    width = 0.38
    for ax, p, title in zip(axes, PROTOCOLS, ("weighted kNN", "linear probe")):
        xs = range(len(rows))
        for shift, key, label in ((-width / 2, f"random_{p}", "random init"),
                                  (width / 2, p, "pretrained")):
            ax.bar([x + shift for x in xs], [r[f"{key}_mean"] for r in rows], width,
                   yerr=[r[f"{key}_sd"] or 0 for r in rows], capsize=2, label=label)
        ax.set_xticks(list(xs), names, rotation=45, ha="right")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("test top-1")
    axes[0].legend(loc="lower left", fontsize=8)
    s = report["settings"]
    fig.suptitle(f"{s['data']}, {s['backbone']}, {s['budget_steps']} steps, "
                 f"{len(s['seeds'])} seeds, features {s['features']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
