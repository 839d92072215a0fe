"""Named recipes: layering under given values, listing in `info`, recorded in config.json."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
from click.testing import CliRunner

import sslzoo
from sslzoo import OptimConfig, Recipe, hp
from sslzoo.build import from_dict, resolve
from sslzoo.errors import UnknownNameError
from sslzoo.listing import describe_name
from sslzoo.plugins import default_plugins, get_plugin_manager, load_plugins


class Chef(sslzoo.Method):
    """A method that only exists to carry recipes."""

    name: ClassVar[str] = "chef"
    paper: ClassVar[str] = "none"
    default_augment: ClassVar[str] = "simclr"
    recipes: ClassVar[dict[str, Recipe]] = {
        "cifar": Recipe("CIFAR-size images.", "a paper, Sec. 1",
                        method={"temperature": 0.1, "lr": 0.06},
                        augment={"blur_prob": 0.0, "brightness": 0.4},
                        train={"image_size": 32, "epochs": 3}),
        "moco": Recipe("Another pipeline.", "a paper, Sec. 2",
                       augment={"name": "moco-v2", "hue": 0.05}),
    }

    @dataclass
    class Config(OptimConfig):
        temperature: float = hp(0.5, "temperature", gt=0)


@pytest.fixture(scope="module")
def plugins():
    class Kitchen:
        @sslzoo.hookimpl
        def register_methods(self, register):
            register(Chef)

    pm = get_plugin_manager()
    pm.register(Kitchen(), name="kitchen")
    return load_plugins(pm)


def test_a_recipe_sets_method_augment_and_train_values(plugins):
    spec = resolve({"method": "chef", "recipe": "cifar"}, plugins=plugins)
    assert spec.method_config.temperature == 0.1 and spec.method_config.lr == 0.06
    assert spec.augment_config.blur_prob == 0.0 and spec.augment_config.brightness == 0.4
    assert spec.train.image_size == 32 and spec.train.epochs == 3
    assert spec.train.recipe == "cifar"
    plain = resolve({"method": "chef"}, plugins=plugins)
    assert plain.method_config.temperature == 0.5 and plain.augment_config.blur_prob == 0.5


def test_given_values_override_the_recipe(plugins):
    spec = resolve({"method": "chef", "recipe": "cifar", "image_size": 16},
                   {"temperature": "0.2"}, {"blur_prob": "0.3"}, plugins=plugins)
    assert spec.method_config.temperature == 0.2 and spec.method_config.lr == 0.06
    assert spec.augment_config.blur_prob == 0.3 and spec.augment_config.brightness == 0.4
    assert spec.train.image_size == 16 and spec.train.epochs == 3


def test_a_recipe_can_pick_its_augment_pipeline_and_the_user_can_pick_another(plugins):
    spec = resolve({"method": "chef", "recipe": "moco"}, plugins=plugins)
    assert spec.augment_cls.name == "moco-v2" and spec.augment_config.hue == 0.05
    other = resolve({"method": "chef", "recipe": "moco", "augment": "none"}, plugins=plugins)
    assert other.augment_cls.name == "none" and other.augment_config.hue == 0.2


def test_a_saved_recipe_run_rebuilds_to_the_same_spec(plugins):
    spec = resolve({"method": "chef", "recipe": "moco"}, {"lr": "0.5"}, plugins=plugins)
    again = from_dict(json.loads(json.dumps(spec.to_dict())), plugins)
    assert again.to_dict() == spec.to_dict()
    assert again.to_dict()["train"]["recipe"] == "moco"


def test_unknown_recipe_suggests_the_closest_and_lists_them(plugins):
    with pytest.raises(UnknownNameError, match="did you mean 'cifar'.*chef's recipes: cifar, moco"):
        resolve({"method": "chef", "recipe": "cifra"}, plugins=plugins)


def test_info_lists_each_recipe_with_the_values_it_changes(plugins):
    [cifar, moco] = describe_name(plugins, "chef")["recipes"]
    assert (cifar["name"], cifar["source"]) == ("cifar", "a paper, Sec. 1")
    changes = {c["key"]: (c["default"], c["value"]) for c in cifar["changes"]}
    assert changes == {"temperature": ("0.5", "0.1"), "lr": ("0.03", "0.06"),
                       "aug.blur_prob": ("0.5", "0.0"), "aug.brightness": ("0.8", "0.4"),
                       "epochs": ("100", "3")}  # image_size 32 equals the default
    moco_changes = {c["key"]: c["value"] for c in moco["changes"]}
    assert moco_changes == {"augment": "moco-v2", "aug.hue": "0.05"}


@pytest.mark.parametrize("name", default_plugins().methods.names())
def test_every_registered_recipe_resolves_to_a_valid_run(name):
    method_cls = default_plugins().methods.get(name).obj
    for recipe in method_cls.recipes:
        spec = resolve({"method": name, "recipe": recipe})
        assert spec.train.recipe == recipe
        r = method_cls.recipes[recipe]
        assert r.summary.endswith(".") and r.source
        for key, value in r.method.items():
            assert getattr(spec.method_config, key) == (tuple(value) if isinstance(value, list)
                                                        else value)


def test_train_records_the_recipe_in_config_json(tmp_path):
    from sslzoo.cli import cli

    out = tmp_path / "run"
    name = next((n for n in default_plugins().methods.names()
                 if default_plugins().methods.get(n).obj.recipes), None)
    if name is None:
        pytest.skip("no registered method has a recipe yet")
    recipe = sorted(default_plugins().methods.get(name).obj.recipes)[0]
    result = CliRunner().invoke(cli, [
        "train", name, "--recipe", recipe, "--data", "synthetic", "--backbone", "small_resnet10",
        "--image-size", "16", "--batch-size", "16", "--max-steps", "1", "--device", "cpu",
        "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["train"]["recipe"] == recipe


def test_the_augment_named_none_can_be_chosen():
    assert resolve({"method": "simclr", "augment": "none"}).augment_cls.name == "none"
