"""What trains must load: a configuration that does not survive config.json fails at step 0."""
from __future__ import annotations

import pytest

from sslzoo.build import resolve
from sslzoo.engine import Trainer
from sslzoo.errors import ConfigError
from sslzoo.plugins import load_plugins
from tests.plugin_helpers import make_dist

PLAIN_TUPLE_AUGMENT = '''
from dataclasses import dataclass

import sslzoo
from sslzoo import hp


class Shift(sslzoo.Augment):
    """Adds a constant: an augment whose field is annotated plain ``tuple``."""

    name = "plain-tuple"

    @dataclass
    class Config:
        span: tuple = hp((0.0, 0.1), "a range, annotated without element types")

    def forward(self, x):
        return x + self.config.span[0]


@sslzoo.hookimpl
def register_augments(register):
    register(Shift)
'''


def test_config_that_cannot_round_trip_fails_before_the_first_step(tmp_path, monkeypatch):
    root = make_dist(tmp_path / "site", "sslzoo-plain", "sslzoo_plain", PLAIN_TUPLE_AUGMENT,
                     {"plain": "sslzoo_plain"})
    monkeypatch.syspath_prepend(str(root))
    plugins = load_plugins()
    out = tmp_path / "run"
    spec = resolve({"method": "rotation", "data": "synthetic", "backbone": "small_resnet10",
                    "image_size": 16, "batch_size": 8, "max_steps": 2, "device": "cpu",
                    "augment": "plain-tuple", "out": str(out)}, plugins=plugins)
    steps = []
    trainer = Trainer(spec, plugins=plugins, quiet=True, callbacks=[lambda s: steps.append(s.step)])
    with pytest.raises(ConfigError, match=r"augment 'plain-tuple' field 'span' \(annotated tuple\) "
                                          r"does not survive config\.json"):
        trainer.fit()
    assert steps == [] and not (out / "checkpoints").exists()
