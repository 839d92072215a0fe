"""Property-based: any --set KEY=VALUE for any field of any registered method and augment,
and any TOML config file, either trains a step or exits 2 with one line naming the flag:
never a traceback, never exit 1."""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sslzoo.build import TrainConfig
from sslzoo.cli import cli
from sslzoo.plugins import default_plugins

PLUGINS = default_plugins()
METHODS = sorted(PLUGINS.methods.names())
AUGMENTS = sorted(PLUGINS.augments.names())
FIXED = ["--data", "synthetic", "--backbone", "test_efficientnet", "--image-size", "16",
         "--batch-size", "8", "--max-steps", "1", "--device", "cpu", "--epochs", "1"]
# values that keep a step fast: the heads and banks of every method stay tiny
SMALL = ["--set", "proj_hidden_dim=8", "--set", "proj_dim=8", "--set", "dim=8",
         "--set", "mlp_hidden_dim=8", "--set", "queue_size=16", "--set", "nce_k=8"]
FUZZ = settings(max_examples=3, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

NASTY_TEXT = st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "-1", "0", "1", "2.5",
                              "true", "none", "0.2,1.0", "(1,2,3)", "[]", "é😀", "a=b", "\x00"])
NUMBERS = st.one_of(st.integers(-3, 3), st.sampled_from([2 ** 40, -(2 ** 40), 10 ** 18]),
                    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.5,
                                     0.5, 1e-12]))
VALUES = st.one_of(NASTY_TEXT, NUMBERS.map(str), st.text(max_size=6))


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _method_keys(method: str) -> list[str]:
    cls = PLUGINS.methods.get(method).obj
    return _fields(cls.Config)


def _run(method: str, *args: str):
    with tempfile.TemporaryDirectory() as tmp:
        result = CliRunner().invoke(cli, ["train", method, *FIXED, *SMALL_FOR[method], *args,
                                          "--out", str(Path(tmp) / "run")])
    return result


SMALL_FOR = {m: [a for pair in zip(SMALL[::2], SMALL[1::2])
                 if pair[1].split("=")[0] in _method_keys(m) for a in pair] for m in METHODS}


def _assert_trained_or_one_line_naming(result, names: list[str]) -> None:
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert any(n in lines[0] for n in names), (names, lines[0])


@st.composite
def method_assignment(draw):
    method = draw(st.sampled_from(METHODS))
    key = draw(st.sampled_from(_method_keys(method)))
    return method, key, draw(VALUES)


@st.composite
def augment_assignment(draw):
    augment = draw(st.sampled_from(AUGMENTS))
    cls = PLUGINS.augments.get(augment).obj
    keys = _fields(cls.Config)
    key = draw(st.sampled_from(keys)) if keys else "size"
    return augment, key, draw(VALUES)


@pytest.mark.slow
@FUZZ
@given(method_assignment())
def test_any_method_setting_trains_or_exits_2_naming_it(case):
    method, key, value = case
    _assert_trained_or_one_line_naming(_run(method, "--set", f"{key}={value}"), [key])


@pytest.mark.slow
@FUZZ
@given(augment_assignment())
def test_any_augment_setting_trains_or_exits_2_naming_it(case):
    augment, key, value = case
    result = _run("simclr", "--augment", augment, "--set", f"aug.{key}={value}")
    _assert_trained_or_one_line_naming(result, [key, "augment"])


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


TOML_SCALARS = st.one_of(st.booleans(), NUMBERS, st.text(max_size=5), NASTY_TEXT)
TOML_VALUES = st.recursive(TOML_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1, max_size=3), inner,
                                                 max_size=2)), max_leaves=4)
TRAIN_KEYS = [k for k in _fields(TrainConfig) if k not in ("out", "method", "max_steps", "device")]


@st.composite
def toml_file(draw):
    method = draw(st.sampled_from(METHODS))
    table = draw(st.sampled_from(["train", "method", "augment", "bogus"]))
    keys = {"train": TRAIN_KEYS, "method": _method_keys(method)}.get(table, ["name", "x"])
    key = draw(st.one_of(st.sampled_from(keys), st.text(min_size=1, max_size=4)))
    return method, table, key, draw(TOML_VALUES)


@pytest.mark.slow
@FUZZ
@given(toml_file())
def test_any_toml_config_trains_or_exits_2_naming_the_setting(case):
    method, table, key, value = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(f"[{table}]\n{json.dumps(key, ensure_ascii=False)} = {_toml_value(value)}\n")
        result = _run(method, "--config", str(path))
    names = [key, key.replace("_", "-"), table, "config file", "TOML"]
    _assert_trained_or_one_line_naming(result, names)
