"""Every hook and every built-in method is documented."""
from __future__ import annotations

from pathlib import Path

import pytest

from sslzoo.hookspecs import HOOKS
from sslzoo.plugins import load_plugins

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docs_section(hook):
    assert f"### {hook}" in (DOCS / "plugins.md").read_text()


def test_every_builtin_method_is_in_the_method_reference():
    text = (DOCS / "methods.md").read_text()
    for entry in load_plugins().methods.entries():
        if entry.plugin == "sslzoo":
            assert f"## {entry.name}" in text, entry.name


def test_method_reference_is_up_to_date_with_the_plugins():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_methods", DOCS / "make_methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DOCS / "methods.md").read_text().strip() == module.render().strip(), \
        "docs/methods.md is stale: run python docs/make_methods.py"
