"""Typed errors: each says what was wrong, what is valid and how to fix it.

Library code raises these; the CLI turns them into one line and exit status 2.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class SslzooError(Exception):
    """Base class of the errors a user can fix (bad names, values, files)."""


class UnknownNameError(SslzooError, KeyError):
    """A method, backbone, augment or data set name that nothing registered."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], hint: str = "") -> None:
        choices = list(choices)
        self.kind, self.name, self.choices = kind, name, choices
        close = closest(name, choices)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        msg += f" (`sslzoo list --kind {kind}s` shows all)"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ConfigError(SslzooError, ValueError):
    """An invalid hyper-parameter, option or configuration file."""


class DataError(SslzooError, ValueError):
    """A data set that cannot be used: missing, empty, corrupt or unlabelled."""


class PluginError(SslzooError):
    """A plugin that failed to load, or a name that two plugins both registered."""


class CheckpointError(SslzooError):
    """A run directory or checkpoint that cannot be read or resumed."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The registered names closest to ``name`` (prefix matches first)."""
    choices = list(choices)
    low = name.lower()
    prefix = [c for c in choices if c.lower().startswith(low) and c != name][:n]
    fuzzy = difflib.get_close_matches(name, choices, n=n, cutoff=0.6)
    return list(dict.fromkeys(prefix + fuzzy))[:n]


class TrainingError(SslzooError):
    """Training cannot go on (e.g. the loss became NaN)."""
