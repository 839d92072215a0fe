"""The target decay tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 (Sec. 3.3)."""
from __future__ import annotations

import math

import pytest

from sslzoo_byol import target_decay


@pytest.mark.parametrize("k, expected", [
    (0, 0.996),                                   # tau_base at the first step
    (25, 1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2),
    (50, 0.998),                                  # half-way: the mean of 0.996 and 1
    (100, 1.0),                                   # one at the end
    (150, 1.0),                                   # and beyond it
])
def test_decay_follows_the_cosine_from_tau_base_to_one(k, expected):
    assert math.isclose(float(target_decay(k, 100, 0.996)), expected, rel_tol=0, abs_tol=1e-12)


def test_decay_never_decreases_over_the_run():
    values = [float(target_decay(k, 37, 0.99)) for k in range(38)]
    assert values[0] == pytest.approx(0.99) and values[-1] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_unknown_run_length_keeps_tau_base():
    assert [float(target_decay(k, 0, 0.97)) for k in (0, 5, 1000)] == [0.97] * 3
