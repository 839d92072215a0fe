"""Frozen-feature evaluation: weighted kNN and a linear probe.

Weighted kNN follows Wu et al., "Unsupervised Feature Learning via Non-Parametric
Instance Discrimination", CVPR 2018, Sec. 3.4: the k = 200 nearest training features
by cosine similarity s_i vote for their class with weight exp(s_i / t), t = 0.07.
The linear probe is an offline logistic regression trained on cached, standardised
features on the device (no augmentation, the features are computed once).

Which features (``features``):

- ``final`` (default): the backbone's pooled last map, ``Method.embed``.
- a stage of the backbone (``Backbone.stage_names``, e.g. ``stage2``), average-pooled:
  RotNet's headline uses conv-block-2 features (Gidaris et al. 2018, Table 1) and Zhang
  et al. 2016 probe conv1-conv5.
- ``embedding``: the method's own embedding (``Method.embedding``), scored by kNN with
  the method's temperature (``Method.knn_temperature``): InstDisc and InvaSpread report
  kNN on their L2-normalised 128-d embedding with k = 200 and their training
  temperature.
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
from sslzoo.backbone import FINAL_STAGE
from sslzoo.errors import ConfigError
from sslzoo.method import Method

#: ``features`` value for the method's own embedding.
EMBEDDING = "embedding"
#: Temperature of the kNN vote on backbone features (InstDisc Sec. 3.4).
KNN_TEMPERATURE = 0.07


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


def feature_names(method: Method) -> list[str]:
    """Valid ``features`` values for ``method``: ``final``, the backbone's stages and,
    when the method has one, ``embedding``."""
    names = [FINAL_STAGE, *(n for n in method.encoder.stage_names if n != FINAL_STAGE)]
    return names + ([EMBEDDING] if has_embedding(method) else [])


def has_embedding(method: Method) -> bool:
    """Whether ``method.embedding`` returns features (it is ``None`` by default)."""
    return type(method).embedding is not Method.embedding


def _embed_fn(method: Any, features: str) -> Any:
    """A function of images in [0, 1] to ``(B, F)`` features of the chosen kind."""
    if features == FINAL_STAGE:
        return method.embed
    if not isinstance(method, Method):
        raise ConfigError(f"features={features!r} needs a Method; use {FINAL_STAGE!r}")
    valid = feature_names(method)
    if features not in valid:
        raise ConfigError(f"{type(method).name} on {type(method.encoder).__name__} has no "
                          f"features {features!r}; choose from {', '.join(valid)} (--features)")
    if features == EMBEDDING:
        return method.embedding

    def stage(x: Tensor) -> Tensor:
        maps = method.encoder.forward_stages(method.preprocess(x))
        return maps[features].mean(dim=(-2, -1))                       # (B, C_stage)

    return stage


@torch.no_grad()
def extract_features(method: Any, images: Tensor, device: torch.device,
                     batch_size: int = 512, autocast: bool = False,
                     features: str = FINAL_STAGE) -> Tensor:
    """Frozen features of uint8 images ``(N, C, H, W)`` in eval mode: ``(N, F)`` float.

    ``features`` picks ``final`` (``method.embed``), a pooled backbone stage or the
    method's ``embedding`` (see the module docstring). Under torch.distributed each rank
    embeds a contiguous shard and the shards are gathered, so every rank returns the
    features of all N images.
    """
    fn = _embed_fn(method, features)
    n, world, rank = len(images), distributed.world_size(), distributed.rank()
    per_rank = math.ceil(n / world)
    lo, hi = min(rank * per_rank, n), min((rank + 1) * per_rank, n)
    chunks = []
    with eval_mode(method):
        for start in range(lo, hi, batch_size):
            x = images[start:min(start + batch_size, hi)].to(device, non_blocking=True).float() / 255
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                chunks.append(fn(x).float())
        feats = torch.cat(chunks) if chunks else torch.empty(
            0, fn(images[:1].to(device).float() / 255).shape[1], device=device)
    if world > 1:
        pad = per_rank - len(feats)
        feats = distributed.gather(F.pad(feats, (0, 0, 0, pad)))
        feats = torch.cat([feats[r * per_rank:r * per_rank + min(per_rank, max(n - r * per_rank, 0))]
                           for r in range(world)])
    return feats


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
        out["linear_protocol"] = LINEAR_PROTOCOL
    return out


#: How :func:`linear_probe` trains, as ``eval.json`` records it.
LINEAR_PROTOCOL = ("offline: logistic regression on frozen, standardised features computed "
                   "once without augmentation; AdamW lr 0.01, weight decay 1e-5, 100 epochs, "
                   "cosine decay")


def evaluate(path: Any, *, data: str | None = None, protocol: str = "all",
             device: str = "auto", random_init: bool = False, data_root: str | None = None,
             download: bool = False, plugins: Any = None, write: bool = True,
             features: str = FINAL_STAGE, k: int = 200) -> dict[str, Any]:
    """Evaluate a run directory or checkpoint on frozen features.

    Args:
        path: run directory (``runs/simclr-...``) or checkpoint file.
        data: data set to evaluate on (default: the one the run trained on); its
            ``train`` split is the kNN bank / probe training set, ``test`` the queries.
        protocol: ``knn``, ``linear`` or ``all``.
        random_init: evaluate the same backbone at random initialisation instead.
        write: write ``eval.json`` (``eval-random-init.json``) into the run directory;
            features other than ``final`` go to ``eval-FEATURES.json``
            (``eval-random-init-FEATURES.json``).
        features: ``final``, a backbone stage (``stage2``) or ``embedding`` (see the
            module docstring).
        k: neighbours of the kNN vote.

    Returns:
        ``knn_top1`` and/or ``linear_top1`` (fractions in [0, 1]) and details.
    """
    import json

    from sslzoo.data import load_data
    from sslzoo.errors import DataError
    from sslzoo.runs import load_run

    if protocol not in ("knn", "linear", "all"):
        raise ConfigError(f"protocol must be knn, linear or all, got {protocol!r}")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}; set it with --knn-k")
    dev = distributed.init_from_env(device)
    run = load_run(path, dev, plugins=plugins, random_init=random_init)
    _embed_fn(run.method, features)  # an unknown name fails before the data is loaded
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
    feats = {s: extract_features(run.method, splits[s][0], dev, autocast=autocast,
                                 features=features) for s in splits}
    temperature = run.method.knn_temperature if features == EMBEDDING else KNN_TEMPERATURE
    result = evaluate_features(feats["train"], splits["train"][1].to(dev), feats["test"],
                               splits["test"][1].to(dev), protocol=protocol, k=k,
                               temperature=temperature)
    result = {"method": run.spec.method_cls.name, "backbone": t.backbone, "data": name,
              "image_size": t.image_size, "step": 0 if random_init else run.step,
              "random_init": random_init, "features": features,
              "protocols": ["knn", "linear"] if protocol == "all" else [protocol],
              "checkpoint": str(run.checkpoint_path), **result}
    if write and run.run_dir is not None and distributed.is_main():
        out = run.run_dir / eval_file_name(features, random_init)
        from sslzoo.checkpoint import write_text_atomic

        write_text_atomic(out, json.dumps(result, indent=2))
    return result


def eval_file_name(features: str = FINAL_STAGE, random_init: bool = False) -> str:
    """``eval.json``, ``eval-random-init.json``, ``eval-stage2.json`` ..."""
    parts = ["eval"] + (["random-init"] if random_init else []) \
        + ([features] if features != FINAL_STAGE else [])
    return "-".join(parts) + ".json"


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
