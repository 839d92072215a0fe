"""What ``sslzoo list`` and ``sslzoo info`` show, as plain data."""
from __future__ import annotations

import dataclasses
from typing import Any

from sslzoo import config as cfg
from sslzoo.errors import UnknownNameError
from sslzoo.build import TrainConfig
from sslzoo.plugins import Plugins
from sslzoo.recipes import describe_recipes

KINDS = ("method", "backbone", "augment", "dataset")


def list_rows(plugins: Plugins, pattern: str | None = None,
              kind: str | None = None) -> list[dict[str, Any]]:
    """One row per registered name (and per broken plugin), natural-sorted per kind."""
    kinds = [kind.rstrip("s")] if kind else list(KINDS)
    rows: list[dict[str, Any]] = []
    if pattern and pattern.startswith("timm/"):
        return _timm_rows(pattern[len("timm/"):]) if "backbone" in kinds else []
    for k in kinds:
        for e in plugins.registry(k).entries(pattern):
            rows.append({"kind": k, "name": e.name, "plugin": e.plugin, "version": e.version,
                         "summary": e.summary, "module": e.module})
        if k == "backbone" and not pattern:
            import timm

            rows.append({"kind": "backbone", "name": "timm/*", "plugin": "timm",
                         "version": timm.__version__, "module": "timm",
                         "summary": f"any of timm's {len(timm.list_models())} models by name "
                                    "(sslzoo list 'timm/resnet*')"})
    if not kind or pattern is None:
        for b in plugins.broken:
            rows.append({"kind": "plugin", "name": b.name, "plugin": b.plugin,
                         "version": b.version, "summary": "", "error": b.error})
    return rows


def _timm_rows(pattern: str) -> list[dict[str, Any]]:
    import timm

    return [{"kind": "backbone", "name": n, "plugin": "timm", "version": timm.__version__,
             "summary": "timm model", "module": "timm"} for n in timm.list_models(pattern or "*")]


def describe_name(plugins: Plugins, name: str) -> dict[str, Any]:
    """Everything ``sslzoo info NAME`` prints."""
    for kind in KINDS:
        registry = plugins.registry(kind)
        if name in registry:
            e = registry.get(name)
            break
    else:
        all_names = [n for k in KINDS for n in plugins.registry(k).names()]
        raise UnknownNameError("name", name, all_names)
    out: dict[str, Any] = {"kind": kind, "name": e.name, "plugin": e.plugin,
                           "version": e.version, "module": e.module, "summary": e.summary}
    if kind == "method":
        method_cls = e.obj
        config = method_cls.Config()
        aug_name = method_cls.augment_name(config)
        out.update(paper=method_cls.paper, augment=aug_name, config=_fields(method_cls.Config),
                   recipes=describe_recipes(method_cls, plugins.augments, TrainConfig))
        if aug_name in plugins.augments:
            out["augment_config"] = _fields(plugins.augments.get(aug_name).obj.Config)
    elif kind == "augment":
        out["config"] = _fields(e.obj.Config)
    return out


def _fields(config_cls: type) -> list[dict[str, Any]]:
    return [dataclasses.asdict(f) for f in cfg.describe(config_cls)]
