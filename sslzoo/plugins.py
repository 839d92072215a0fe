"""Plugin discovery through the ``sslzoo`` entry-point group, on pluggy.

The nine built-in methods are entry points of the ``sslzoo`` distribution exactly like
a third-party plugin's; the core's own backbones, augments and data sets are registered
by :mod:`sslzoo.builtins`. A plugin that fails to import, raises in a hook or registers a
name that is already taken is recorded as broken; everything else keeps working.
"""
from __future__ import annotations

import functools
import inspect
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from sslzoo import hookspecs
from sslzoo.errors import PluginError
from sslzoo.registry import Entry, Registry

GROUP = "sslzoo"


@dataclass
class BrokenPlugin:
    """A plugin, or one registration of it, that could not be used."""

    plugin: str
    version: str
    name: str
    error: str


@dataclass
class Plugins:
    """Everything the loaded plugins registered."""

    manager: pluggy.PluginManager
    methods: Registry = field(default_factory=lambda: Registry("method"))
    backbones: Registry = field(default_factory=lambda: Registry("backbone"))
    augments: Registry = field(default_factory=lambda: Registry("augment"))
    datasets: Registry = field(default_factory=lambda: Registry("dataset"))
    broken: list[BrokenPlugin] = field(default_factory=list)
    dists: dict[str, tuple[str, str]] = field(default_factory=dict)

    def registry(self, kind: str) -> Registry:
        return {"method": self.methods, "backbone": self.backbones,
                "augment": self.augments, "dataset": self.datasets}[kind.rstrip("s")]

    def versions(self) -> dict[str, str]:
        """Distribution name -> version of every loaded plugin."""
        return {dist: ver for dist, ver in self.dists.values()}


def get_plugin_manager(entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with sslzoo's hookspecs, the core built-ins and installed plugins.

    Entry points are loaded one at a time so that a plugin that fails to import is
    recorded (in ``pm.sslzoo_broken``) instead of stopping the others.
    """
    from sslzoo import builtins

    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    pm.sslzoo_broken = []  # type: ignore[attr-defined]
    pm.sslzoo_dists = {}  # type: ignore[attr-defined]
    pm.register(builtins, name="sslzoo.builtins")
    pm.sslzoo_dists["sslzoo.builtins"] = _dist_of(builtins)  # type: ignore[attr-defined]
    if entry_points:
        for ep in metadata.entry_points(group=GROUP):
            dist = (ep.dist.name, ep.dist.version) if ep.dist else (ep.value, "")
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                module = ep.load()
                pm.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must not take the tool down
                pm.sslzoo_broken.append(BrokenPlugin(  # type: ignore[attr-defined]
                    dist[0], dist[1], ep.name, _describe(exc, f"cannot load {ep.value}")))
                continue
            pm.sslzoo_dists[ep.name] = dist  # type: ignore[attr-defined]
    pm.check_pending()
    return pm


def load_plugins(pm: pluggy.PluginManager | None = None) -> Plugins:
    """Call every registration hook and collect the results into registries."""
    pm = pm if pm is not None else get_plugin_manager()
    plugins = Plugins(manager=pm, broken=list(getattr(pm, "sslzoo_broken", [])),
                      dists=dict(getattr(pm, "sslzoo_dists", {})))
    for hook_name, kind, adapter in (
        ("register_methods", "method", _class_entry),
        ("register_backbones", "backbone", _factory_entry),
        ("register_augments", "augment", _class_entry),
        ("register_datasets", "dataset", _factory_entry),
    ):
        registry = plugins.registry(kind)
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            dist, version = plugins.dists.get(impl.plugin_name) or _dist_of(impl.plugin)
            plugins.dists.setdefault(impl.plugin_name, (dist, version))

            def register(*args: Any, _dist: str = dist, _ver: str = version,
                         _registry: Registry = registry, _kind: str = kind,
                         _adapter: Callable[..., Entry] = adapter, **kwargs: Any) -> None:
                _registry.add(_adapter(_kind, _dist, _ver, *args, **kwargs))

            try:
                impl.function(register=register)
            except Exception as exc:
                plugins.broken.append(BrokenPlugin(dist, version, impl.plugin_name,
                                                   _describe(exc, f"{hook_name} failed")))
    return plugins


@functools.lru_cache(maxsize=1)
def default_plugins() -> Plugins:
    """The installed plugins, loaded once per process."""
    return load_plugins()


def add_commands(cli: Any, pm: pluggy.PluginManager) -> list[BrokenPlugin]:
    """Let plugins add CLI sub-commands; failures are returned, not raised."""
    broken = []
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:
            dist, version = _dist_of(impl.plugin)
            broken.append(BrokenPlugin(dist, version, impl.plugin_name,
                                       _describe(exc, "register_commands failed")))
    return broken


def _class_entry(kind: str, dist: str, version: str, cls: type, **_: Any) -> Entry:
    name = getattr(cls, "name", None)
    if not inspect.isclass(cls) or not isinstance(name, str) or not name:
        raise PluginError(f"{kind} {cls!r} from {dist!r} must be a class with a `name`")
    return Entry(kind, name, cls, dist, version, cls.__module__, summary_of(cls))


def _factory_entry(kind: str, dist: str, version: str, name: str,
                   factory: Callable[..., Any], summary: str = "") -> Entry:
    if not callable(factory):
        raise PluginError(f"{kind} {name!r} from {dist!r}: factory is not callable")
    module = getattr(factory, "__module__", "") or ""
    return Entry(kind, name, factory, dist, version, module, summary or summary_of(factory))


def summary_of(obj: Any) -> str:
    """The first paragraph of an object's docstring on one line (its summary sentence,
    whole even where it wraps)."""
    doc = (inspect.getdoc(obj) or "").strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc else ""


def _dist_of(module: ModuleType | Any) -> tuple[str, str]:
    """The distribution (name, version) that provides ``module``."""
    top = getattr(module, "__name__", type(module).__module__).split(".")[0]
    dists = metadata.packages_distributions().get(top) or []
    for dist in dists:
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return top, ""


def _describe(exc: BaseException, context: str) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
    return f"{context}: {type(exc).__name__}: {exc}{where}"
