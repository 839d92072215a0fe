"""Typed hyper-parameters: parsing, bounds, unknown keys."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from sslzoo import config as cfg
from sslzoo.errors import ConfigError


@dataclass
class Example:
    rate: float = cfg.hp(0.5, "a rate", gt=0, le=1)
    steps: int = cfg.hp(3, "steps", ge=1)
    flag: bool = cfg.hp(False, "a flag")
    mode: Literal["a", "b"] = cfg.hp("a", "a mode")
    span: tuple[float, float] = cfg.hp((0.2, 1.0), "a range", ge=0)
    maybe: int | None = cfg.hp(None, "optional")
    version: Literal[1, 2] = cfg.hp(2, "version")


def test_strings_are_parsed_to_the_field_types():
    c = cfg.build(Example, {"rate": "0.25", "steps": "7", "flag": "true", "mode": "b",
                            "span": "0.1,0.9", "maybe": "none", "version": "1"})
    assert (c.rate, c.steps, c.flag, c.mode, c.span, c.maybe, c.version) == \
        (0.25, 7, True, "b", (0.1, 0.9), None, 1)


@pytest.mark.parametrize("values, message", [
    ({"rate": "0"}, "rate must be > 0, got 0.0; set it with --set rate=0.5"),
    ({"rate": "2"}, "rate must be <= 1"),
    ({"steps": "2.5"}, "steps expects int"),
    ({"mode": "c"}, "mode expects a|b"),
    ({"span": "0.1"}, "span expects tuple[float, float]"),
    ({"span": "-1,1"}, "span must be >= 0"),
    ({"flag": "perhaps"}, "flag expects bool"),
    ({"rat": "1"}, "unknown key 'rat' for Example; valid keys: flag, maybe, mode, rate, span"),
])
def test_invalid_values_name_the_field_and_the_fix(values, message):
    with pytest.raises(ConfigError) as err:
        cfg.build(Example, values)
    assert message in str(err.value)


def test_describe_lists_type_default_and_help():
    fields = {f.name: f for f in cfg.describe(Example)}
    assert fields["span"].type == "tuple[float, float]" and fields["span"].default == (0.2, 1.0)
    assert fields["maybe"].type == "int | None" and fields["rate"].help == "a rate"


def test_parse_assignments_splits_on_the_first_equals_sign():
    assert cfg.parse_assignments(["a=1", "aug.b=x=y"]) == {"a": "1", "aug.b": "x=y"}
