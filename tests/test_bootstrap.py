"""Bootstrap intervals over utterances: they pin the estimate and its sign, and refuse mismatched inputs."""

from __future__ import annotations

import numpy as np
import pytest

from melhubert_lib.bootstrap import paired_rate_difference, rate_interval


def test_a_system_against_itself_differs_by_exactly_zero():
    rng = np.random.default_rng(0)
    errors, units = rng.integers(0, 10, 50), rng.integers(10, 20, 50)
    d = paired_rate_difference(errors, units, errors, units)
    assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0)


def test_a_uniformly_worse_system_has_an_interval_above_zero():
    rng = np.random.default_rng(1)
    units = rng.integers(10, 20, 80)
    good = rng.binomial(units, 0.3)
    bad = np.minimum(good + 2, units)  # two more errors on every utterance
    d = paired_rate_difference(bad, units, good, units)
    assert d.value == pytest.approx((bad.sum() - good.sum()) / units.sum())
    assert 0 < d.low <= d.high


def test_rate_interval_brackets_a_constant_rate_exactly():
    units = np.full(30, 4.0)
    assert rate_interval(units / 2, units) == (0.5, 0.5)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="one count"):
        rate_interval(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="paired"):
        paired_rate_difference(np.ones(3), np.ones(3), np.ones(4), np.ones(4))
