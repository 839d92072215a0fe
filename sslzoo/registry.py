"""Name registries for methods, backbones, augments and data sets.

Like timm's model registry: wildcard listing with natural sort, and the module and
plugin that defined each name recorded. Unlike timm, a name registered by two plugins
is not silently overwritten: it becomes unusable with an error naming both plugins.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from sslzoo.errors import PluginError, UnknownNameError


@dataclass(frozen=True)
class Entry:
    """One registered name and where it came from."""

    kind: str
    name: str
    obj: Any
    plugin: str
    version: str
    module: str
    summary: str


def natural_key(name: str) -> list[Any]:
    """Sort key that puts ``resnet18`` before ``resnet101``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class Registry:
    """Names of one kind (``method``, ``backbone``, ``augment`` or ``dataset``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._clashes: dict[str, list[Entry]] = {}

    def add(self, entry: Entry) -> None:
        """Register ``entry``; raise :class:`PluginError` if the name is taken."""
        name = entry.name
        if not name or not isinstance(name, str):
            raise PluginError(f"{self.kind} registered by {entry.plugin!r} has no name")
        other = self._entries.get(name) or (self._clashes.get(name) or [None])[0]
        if other is not None:
            self._clashes.setdefault(name, [other]).append(entry)
            self._entries.pop(name, None)
            raise PluginError(
                f"{self.kind} {name!r} is registered by both {other.plugin!r} "
                f"({other.module}) and {entry.plugin!r} ({entry.module}); "
                "uninstall one of them to use the name"
            )
        self._entries[name] = entry

    def get(self, name: str, hint: str = "") -> Entry:
        """The entry for ``name``; unknown names suggest the closest ones."""
        if name in self._entries:
            return self._entries[name]
        if name in self._clashes:
            plugins = " and ".join(repr(e.plugin) for e in self._clashes[name])
            raise PluginError(
                f"{self.kind} {name!r} is registered by {plugins}; uninstall one of them"
            )
        raise UnknownNameError(self.kind, name, self.names(), hint)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names matching the shell ``pattern``, in natural order."""
        names = self._entries if pattern is None else fnmatch.filter(self._entries, pattern)
        return sorted(names, key=natural_key)

    def entries(self, pattern: str | None = None) -> list[Entry]:
        return [self._entries[n] for n in self.names(pattern)]
