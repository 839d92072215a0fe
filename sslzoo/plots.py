"""Figures of a run for a person to look at: training curves and a 2-D map of features.

``sslzoo plot RUN`` writes ``curves.png`` (the loss and every other logged metric per
step, the learning rate, and the kNN monitor if ``--eval-every`` was on) and
``embedding.png`` (the frozen test-set features of :meth:`Method.embed`, projected to two
dimensions by scikit-learn's PCA or t-SNE and coloured by label). Drawing needs
matplotlib: ``pip install 'sslzoo[plot]'``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from sslzoo.errors import CheckpointError, ConfigError, DataError

#: columns of ``metrics.jsonl`` that are bookkeeping rather than curves
_NOT_CURVES = ("step", "epoch", "images_per_s")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``, one per step (the last row logged for a step
    wins, so a resumed run that logged a step twice counts it once). A line cut short by
    a crash is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; give a run directory that "
                              "`sslzoo train` wrote")
    rows: dict[tuple[int, bool], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows[(row["step"], "knn_top1" in row)] = row
    return [rows[k] for k in sorted(rows)]


def curves(rows: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """``{name: (steps, values)}`` for every finite metric in ``rows``, ``lr`` included."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key in _NOT_CURVES or not isinstance(value, (int, float)):
                continue
            if isinstance(value, bool) or not math.isfinite(value):
                continue
            steps, values = out.setdefault(key, ([], []))
            steps.append(row["step"])
            values.append(float(value))
    return out


def project(features: torch.Tensor, method: str = "pca", seed: int = 0) -> torch.Tensor:
    """``(N, F)`` features to ``(N, 2)`` with scikit-learn's PCA or t-SNE (on the
    L2-normalised features, the geometry kNN evaluation uses)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = torch.nn.functional.normalize(features.float(), dim=1).cpu().numpy()
    if len(x) < 3:
        raise DataError(f"a 2-D map needs at least 3 images, got {len(x)}")
    if method == "pca":
        xy = PCA(n_components=2, random_state=seed).fit_transform(x)
    elif method == "tsne":
        xy = TSNE(n_components=2, init="pca", random_state=seed,
                  perplexity=min(30.0, (len(x) - 1) / 3)).fit_transform(x)
    else:
        raise ConfigError(f"embedding must be pca or tsne, got {method!r}")
    return torch.from_numpy(xy)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'sslzoo[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(run_dir: str | Path, out: str | Path) -> Path:
    """Draw every metric of ``metrics.jsonl`` against the step into one PNG."""
    plt = _pyplot()
    series = curves(read_metrics(run_dir))
    names = [n for n in series if n != "lr"]
    if not names:
        raise DataError(f"{Path(run_dir) / 'metrics.jsonl'} holds no metrics yet; train "
                        "for at least --log-every steps")
    names.sort(key=lambda n: (n != "loss", n == "knn_top1", n))
    panels = names + (["lr"] if "lr" in series else [])
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, panels):
        steps, values = series[name]
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_title("learning rate" if name == "lr" else name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(Path(run_dir).resolve().name)
    fig.tight_layout()
    return _save(fig, plt, out)


def plot_embedding(run: Any, images: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                   out: str | Path, *, method: str = "pca", device: torch.device | str = "cpu",
                   title: str = "") -> Path:
    """Scatter the 2-D projection of ``run.method.embed`` of uint8 ``images``."""
    from sslzoo.evaluation import extract_features

    plt = _pyplot()
    feats = extract_features(run.method, images, torch.device(device))
    xy = project(feats, method).numpy()
    labels = labels.cpu()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c in labels.unique().tolist():
        mask = (labels == c).numpy()
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        ax.scatter(xy[mask, 0], xy[mask, 1], s=8, alpha=0.75, color=cmap(c % cmap.N), label=name)
    if len(class_names) <= 20:
        ax.legend(markerscale=2, fontsize="small", loc="best", frameon=False)
    ax.set_title(title or f"{method.upper()} of frozen features")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return _save(fig, plt, out)


def plot_run(path: str | Path, out_dir: str | Path | None = None, *, embedding: str = "pca",
             num: int = 2000, data: str | None = None, device: str = "cpu",
             random_init: bool = False, plugins: Any = None) -> list[Path]:
    """Write ``curves.png`` and ``embedding.png`` for a run directory; returns the paths.

    Args:
        embedding: ``pca``, ``tsne``, or ``none`` to skip the feature map.
        num: at most this many test images in the map (a seeded sample).
        random_init: map the same backbone at random initialisation instead (the
            curves are the run's either way).
    """
    from sslzoo.data import load_data
    from sslzoo.runs import find_checkpoint, load_run

    if embedding not in ("pca", "tsne", "none"):
        raise ConfigError(f"embedding must be pca, tsne or none, got {embedding!r}")
    _pyplot()  # fail before any work when matplotlib is missing
    _, run_dir = find_checkpoint(path)
    if run_dir is None:
        raise CheckpointError(f"{path} is a checkpoint file; give its run directory, which "
                              "holds metrics.jsonl")
    out = Path(out_dir) if out_dir is not None else run_dir
    paths = [plot_curves(run_dir, out / "curves.png")]
    if embedding == "none":
        return paths
    run = load_run(run_dir, device, plugins=plugins, random_init=random_init)
    t = run.spec.train
    test = load_data(data or t.data, "test", t.image_size, root=t.data_root, download=False,
                     registry=(plugins.datasets if plugins is not None else None))
    if not hasattr(test, "images"):
        raise DataError(f"{data or t.data} streams from disk; maps are drawn for data sets "
                        "that fit in memory")
    if not (test.labels >= 0).any():
        raise DataError(f"{data or t.data} (test) has no labels to colour the map with")
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(len(test.images), generator=generator)[:num]
    name = "embedding-random-init.png" if random_init else "embedding.png"
    title = (f"{run.spec.method_cls.name} ({t.backbone}, "
             f"{'random init' if random_init else f'step {run.step}'}), {embedding.upper()}")
    paths.append(plot_embedding(run, test.images[index], test.labels[index], test.classes or [],
                                out / name, method=embedding, device=device, title=title))
    return paths


def _save(fig: Any, plt: Any, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)
    return out
