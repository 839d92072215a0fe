"""Plugin discovery through entry points, broken plugins and name clashes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sslzoo
from sslzoo.errors import PluginError, UnknownNameError
from sslzoo.plugins import get_plugin_manager, load_plugins
from tests.plugin_helpers import TOY_METHOD, make_dist

BUILTIN_METHODS = {"simclr", "moco", "instdisc", "invaspread", "cpc", "rotation", "jigsaw",
                   "inpainting", "colorization"}


@pytest.fixture
def toy_dist(tmp_path, monkeypatch):
    root = make_dist(tmp_path / "site", "sslzoo-toy", "sslzoo_toy",
                     TOY_METHOD.format(name="toy"), {"toy": "sslzoo_toy"}, version="1.2.3")
    monkeypatch.syspath_prepend(str(root))
    return root


def test_builtin_methods_come_from_the_sslzoo_distribution_through_entry_points():
    plugins = load_plugins()
    for name in ("simclr",):
        entry = plugins.methods.get(name)
        assert entry.plugin == "sslzoo"
        assert entry.module == f"sslzoo_plugins.{name}"
    assert "small_resnet18" in plugins.backbones and "digits" in plugins.datasets
    assert plugins.augments.get("simclr").plugin == "sslzoo"


def test_core_never_imports_the_builtin_plugins():
    core = Path(sslzoo.__file__).parent
    for path in core.glob("*.py"):
        assert "sslzoo_plugins" not in path.read_text(), path


def test_third_party_plugin_is_discovered_with_its_distribution(toy_dist):
    plugins = load_plugins()
    entry = plugins.methods.get("toy")
    assert (entry.plugin, entry.version, entry.module) == ("sslzoo-toy", "1.2.3", "sslzoo_toy")
    assert "simclr" in plugins.methods


def test_plugin_that_fails_to_import_is_reported_and_the_rest_still_loads(tmp_path, monkeypatch):
    root = make_dist(tmp_path / "site", "sslzoo-bad", "sslzoo_bad",
                     "raise ImportError('needs libfoo')\n", {"bad": "sslzoo_bad"})
    monkeypatch.syspath_prepend(str(root))
    plugins = load_plugins()
    [broken] = [b for b in plugins.broken if b.plugin == "sslzoo-bad"]
    assert "needs libfoo" in broken.error and "sslzoo_bad" in broken.error
    assert "simclr" in plugins.methods


def test_a_name_registered_twice_names_both_plugins(tmp_path, monkeypatch):
    root = make_dist(tmp_path / "site", "sslzoo-clash", "sslzoo_clash",
                     TOY_METHOD.format(name="simclr"), {"clash": "sslzoo_clash"})
    monkeypatch.syspath_prepend(str(root))
    plugins = load_plugins()
    [broken] = [b for b in plugins.broken if "'simclr' is registered by both" in b.error]
    assert "'sslzoo'" in broken.error and "'sslzoo-clash'" in broken.error
    with pytest.raises(PluginError, match="sslzoo-clash"):
        plugins.methods.get("simclr")


def test_a_hook_that_raises_marks_only_its_plugin_broken():
    class Exploding:
        @sslzoo.hookimpl
        def register_methods(self, register):
            raise RuntimeError("boom")

    pm = get_plugin_manager()
    pm.register(Exploding(), name="exploding")
    plugins = load_plugins(pm)
    assert any("boom" in b.error and b.name == "exploding" for b in plugins.broken)
    assert "simclr" in plugins.methods


def test_misspelled_hook_name_is_caught_by_check_pending():
    import pluggy

    class Typo:
        @sslzoo.hookimpl
        def register_method(self, register):  # missing "s"
            pass

    pm = get_plugin_manager(entry_points=False)
    pm.register(Typo())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_unknown_method_suggests_closest_name():
    with pytest.raises(UnknownNameError) as err:
        load_plugins().methods.get("simclrr")
    assert "did you mean 'simclr'" in str(err.value)


def test_registry_lists_with_wildcards_in_natural_order():
    names = load_plugins().backbones.names("small_resnet*")
    assert names == sorted(names, key=lambda n: int(n.removeprefix("small_resnet")))
    assert "small_resnet10" in names and "small_resnet50" in names


def _env_with(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_third_party_plugin_lists_and_trains_from_the_cli(toy_dist, tmp_path):
    env = _env_with(toy_dist)
    listing = subprocess.run([sys.executable, "-m", "sslzoo", "list", "--kind", "methods"],
                             env=env, capture_output=True, text=True, check=True).stdout
    assert "toy" in listing and "plugin: sslzoo-toy" in listing
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "sslzoo", "train", "toy", "--data", "synthetic", "--max-steps", "2",
         "--batch-size", "16", "--backbone", "small_resnet10", "--image-size", "16",
         "--set", "scale=2", "--out", str(run)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (run / "checkpoints" / "last.pt").exists()
    assert '"scale": 2.0' in (run / "config.json").read_text()


@pytest.mark.slow
def test_cli_list_shows_a_broken_plugin_and_still_works(tmp_path):
    root = make_dist(tmp_path / "site", "sslzoo-bad", "sslzoo_bad",
                     "raise ImportError('needs libfoo')\n", {"bad": "sslzoo_bad"})
    proc = subprocess.run([sys.executable, "-m", "sslzoo", "list"], env=_env_with(root),
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert "BROKEN" in proc.stdout and "needs libfoo" in proc.stdout and "simclr" in proc.stdout
