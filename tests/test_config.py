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
    ({"span": "-1,1"}, "span's first value -1.0 must be >= 0"),
    ({"flag": "perhaps"}, "flag expects bool"),
    ({"rat": "1"}, "unknown key 'rat' for Example; did you mean 'rate'"),
    ({"zzz": "1"}, "unknown key 'zzz' for Example; valid keys: flag, maybe, mode, rate, span"),
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


def test_unknown_key_suggests_the_closest_key():
    with pytest.raises(ConfigError, match=r"did you mean 'rate' \(--set rate=\.\.\.\)\? valid keys"):
        cfg.build(Example, {"rat": "1"})
    with pytest.raises(ConfigError, match=r"did you mean 'span' \(--set aug\.span=\.\.\.\)"):
        cfg.build(Example, {"spam": "1"}, where="--set aug.")


@pytest.mark.parametrize("span, message", [
    ((-0.5, 1.0), "span's first value -0.5 must be >= 0, got (-0.5, 1.0)"),
    ([0.4, -1.0], "span's second value -1.0 must be >= 0, got (0.4, -1.0)"),
])
def test_a_bounded_pair_names_the_value_and_the_bound_that_failed(span, message):
    with pytest.raises(ConfigError) as err:
        cfg.validate(Example(span=span))
    assert message in str(err.value)
    assert " and must be" not in str(err.value)


def test_a_field_whose_value_changes_through_json_fails_the_round_trip_naming_it():
    @dataclass
    class Plain:
        span: tuple = cfg.hp((0.2, 1.0), "annotated plain tuple")
        rate: float = cfg.hp(1, "an int default of a float field still round-trips")

    with pytest.raises(ConfigError, match=r"field 'span' \(annotated tuple\) does not survive "
                                          r"config\.json: \(0\.2, 1\.0\) is read back as \[0\.2, 1\.0\]"):
        cfg.check_round_trip(Plain(), "augment 'plain'")
    cfg.check_round_trip(Example(), "method")   # typed fields survive


def test_to_toml_reads_back_to_the_same_config():
    import tomllib

    original = Example(rate=0.25, span=(0.1, 0.9), maybe=None)
    table = tomllib.loads(cfg.to_toml({"method": cfg.to_dict(original)}))["method"]
    assert cfg.build(Example, table) == original
