"""Frozen-feature evaluation: weighted kNN and a linear probe.

Weighted kNN follows Wu et al., "Unsupervised Feature Learning via Non-Parametric
Instance Discrimination", CVPR 2018, Sec. 3.4: the k = 200 nearest training features
by cosine similarity s_i vote for their class with weight exp(s_i / t), t = 0.07.
The linear probe is a logistic regression trained on cached, standardised features on
the device.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sslzoo import distributed
from sslzoo.method import Method


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module.eval()`` inside the block; its training flag is restored afterwards,
    also when the block raises."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@torch.no_grad()
def extract_features(method: Method, images: Tensor, device: torch.device,
                     batch_size: int = 512, autocast: bool = False) -> Tensor:
    """``method.embed`` of uint8 images ``(N, C, H, W)`` in eval mode: ``(N, F)`` float.

    Under torch.distributed each rank embeds a contiguous shard and the shards are
    gathered, so every rank returns the features of all N images.
    """
    n, world, rank = len(images), distributed.world_size(), distributed.rank()
    per_rank = math.ceil(n / world)
    lo, hi = min(rank * per_rank, n), min((rank + 1) * per_rank, n)
    chunks = []
    with eval_mode(method):
        for start in range(lo, hi, batch_size):
            x = images[start:min(start + batch_size, hi)].to(device, non_blocking=True).float() / 255
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                chunks.append(method.embed(x).float())
        feats = torch.cat(chunks) if chunks else torch.empty(
            0, _feature_dim(method, images, device), device=device)
    if world > 1:
        pad = per_rank - len(feats)
        feats = distributed.gather(F.pad(feats, (0, 0, 0, pad)))
        feats = torch.cat([feats[r * per_rank:r * per_rank + min(per_rank, max(n - r * per_rank, 0))]
                           for r in range(world)])
    return feats


def _feature_dim(method: Method, images: Tensor, device: torch.device) -> int:
    return method.embed(images[:1].to(device).float() / 255).shape[1]


@torch.no_grad()
def knn_predict(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor,
                num_classes: int, k: int = 200, temperature: float = 0.07,
                chunk: int = 1024) -> Tensor:
    """Weighted kNN class predictions ``(M,)`` for ``test_feats`` ``(M, F)``."""
    train = F.normalize(train_feats.float(), dim=1)
    k = min(k, len(train))
    preds = []
    for start in range(0, len(test_feats), chunk):
        q = F.normalize(test_feats[start:start + chunk].float(), dim=1)
        sim, idx = (q @ train.T).topk(k, dim=1)             # (m, k)
        weights = (sim / temperature).exp()
        votes = torch.zeros(len(q), num_classes, device=q.device)
        votes.scatter_add_(1, train_labels[idx], weights)   # (m, classes)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def linear_probe(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor,
                 test_labels: Tensor, num_classes: int, epochs: int = 100,
                 lr: float = 0.01, weight_decay: float = 1e-5, batch_size: int = 1024,
                 seed: int = 0) -> float:
    """Top-1 accuracy of a logistic regression trained on frozen features."""
    mean, std = train_feats.mean(0), train_feats.std(0).clamp_min(1e-6)
    x_train, x_test = (train_feats - mean) / std, (test_feats - mean) / std
    gen = torch.Generator(device="cpu").manual_seed(seed)
    head = torch.nn.Linear(x_train.shape[1], num_classes).to(x_train.device)
    with torch.no_grad():
        w = torch.randn(head.weight.shape, generator=gen) * 0.01
        head.weight.copy_(w.to(head.weight.device))
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x_train) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(x_train), generator=gen).to(x_train.device)
            for start in range(0, len(x_train), batch_size):
                idx = order[start:start + batch_size]
                loss = F.cross_entropy(head(x_train[idx]), train_labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    with torch.no_grad():
        return (head(x_test).argmax(1) == test_labels).float().mean().item()


def evaluate_features(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor,
                      test_labels: Tensor, protocol: str = "all", k: int = 200,
                      temperature: float = 0.07) -> dict[str, Any]:
    """kNN and/or linear-probe top-1 accuracy (fractions in [0, 1])."""
    keep = train_labels >= 0
    train_feats, train_labels = train_feats[keep], train_labels[keep]
    num_classes = int(max(train_labels.max(), test_labels.max()).item()) + 1
    out: dict[str, Any] = {"num_train": len(train_feats), "num_test": len(test_feats),
                           "num_classes": num_classes, "feature_dim": train_feats.shape[1]}
    if protocol in ("knn", "all"):
        pred = knn_predict(train_feats, train_labels, test_feats, num_classes, k, temperature)
        out["knn_top1"] = (pred == test_labels).float().mean().item()
        out["knn_k"], out["knn_temperature"] = min(k, len(train_feats)), temperature
    if protocol in ("linear", "all"):
        out["linear_top1"] = linear_probe(train_feats, train_labels, test_feats, test_labels,
                                          num_classes)
    return out


def evaluate(path: Any, *, data: str | None = None, protocol: str = "all",
             device: str = "auto", random_init: bool = False, data_root: str | None = None,
             download: bool = False, plugins: Any = None, write: bool = True) -> dict[str, Any]:
    """Evaluate a run directory or checkpoint on frozen features.

    Args:
        path: run directory (``runs/simclr-...``) or checkpoint file.
        data: data set to evaluate on (default: the one the run trained on); its
            ``train`` split is the kNN bank / probe training set, ``test`` the queries.
        protocol: ``knn``, ``linear`` or ``all``.
        random_init: evaluate the same backbone at random initialisation instead.
        write: write ``eval.json`` (``eval-random-init.json``) into the run directory.

    Returns:
        ``knn_top1`` and/or ``linear_top1`` (fractions in [0, 1]) and details.
    """
    import json

    from sslzoo.data import load_data
    from sslzoo.errors import ConfigError, DataError
    from sslzoo.runs import load_run

    if protocol not in ("knn", "linear", "all"):
        raise ConfigError(f"protocol must be knn, linear or all, got {protocol!r}")
    dev = distributed.init_from_env(device)
    run = load_run(path, dev, plugins=plugins, random_init=random_init)
    t = run.spec.train
    name = data or t.data
    root = data_root if data_root is not None else t.data_root
    registry = plugins.datasets if plugins is not None else None
    splits = {}
    for split in ("train", "test"):
        d = load_data(name, split, t.image_size, root=root, download=download, registry=registry)
        images, labels = _images_labels_of(d)
        if not (labels >= 0).any():
            raise DataError(f"{name} ({split}) has no labels, so it cannot be evaluated; give "
                            "labelled data with --data (e.g. an image folder with one subfolder "
                            "per class)")
        splits[split] = (images, labels)
    autocast = dev.type == "cuda"
    feats = {s: extract_features(run.method, splits[s][0], dev, autocast=autocast) for s in splits}
    result = evaluate_features(feats["train"], splits["train"][1].to(dev), feats["test"],
                               splits["test"][1].to(dev), protocol=protocol)
    result = {"method": run.spec.method_cls.name, "backbone": t.backbone, "data": name,
              "step": 0 if random_init else run.step, "random_init": random_init,
              "checkpoint": str(run.checkpoint_path), **result}
    if write and run.run_dir is not None and distributed.is_main():
        out = run.run_dir / ("eval-random-init.json" if random_init else "eval.json")
        out.write_text(json.dumps(result, indent=2))
    return result


def _images_labels_of(data: Any) -> tuple[Tensor, Tensor]:
    """uint8 images and labels of a split (streamed data sets are decoded here)."""
    if hasattr(data, "images"):
        return data.images, data.labels
    images, labels = [], []
    for i in range(len(data)):
        img, label, _ = data[i]
        images.append(img)
        labels.append(int(label))
    return torch.stack(images), torch.tensor(labels)
