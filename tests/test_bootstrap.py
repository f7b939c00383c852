"""Bootstrap intervals over utterances: they pin the estimate and its sign, and refuse mismatched inputs."""

from __future__ import annotations

import numpy as np
import pytest

from melhubert_lib.probes.bootstrap import RateCounts, paired_rate_difference, paired_statistic, rate_interval


def test_a_system_against_itself_differs_by_exactly_zero():
    rng = np.random.default_rng(0)
    errors, units = rng.integers(0, 10, 50), rng.integers(10, 20, 50)
    d = paired_rate_difference(RateCounts(errors, units), RateCounts(errors, units))
    assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0)


def test_a_uniformly_worse_system_has_an_interval_above_zero():
    rng = np.random.default_rng(1)
    units = rng.integers(10, 20, 80)
    good = rng.binomial(units, 0.3)
    bad = np.minimum(good + 2, units)  # two more errors on every utterance
    d = paired_rate_difference(RateCounts(bad, units), RateCounts(good, units))
    assert d.value == pytest.approx((bad.sum() - good.sum()) / units.sum())
    assert 0 < d.low <= d.high


def test_rate_interval_brackets_a_constant_rate_exactly():
    units = np.full(30, 4.0)
    interval = rate_interval(RateCounts(units / 2, units))
    assert (interval.value, interval.low, interval.high) == (0.5, 0.5, 0.5)


def test_an_accuracy_intervals_complement_is_the_interval_of_the_errors():
    units = np.full(40, 10.0)
    right = np.random.default_rng(0).integers(3, 10, size=40).astype(float)
    as_error = rate_interval(RateCounts(right, units)).complement()
    errors = rate_interval(RateCounts(units - right, units))  # the same bootstrap draws, on the complementary counts
    assert as_error.low < as_error.value < as_error.high
    for got, want in ((as_error.value, errors.value), (as_error.low, errors.low), (as_error.high, errors.high)):
        assert got == pytest.approx(want, abs=1e-12)


def test_seed_noise_widens_the_interval_and_the_estimate_is_the_mean_over_seeds():
    rng = np.random.default_rng(2)
    units = rng.integers(10, 20, 200).astype(float)
    errors = rng.binomial(units.astype(int), 0.3).astype(float)
    # three probe seeds whose error rates differ by a fixed offset on every utterance
    seeds = np.stack([np.clip(errors + shift, 0, units) for shift in (-3, 0, 3)])
    one, three = rate_interval(RateCounts(errors, units)), rate_interval(RateCounts(seeds, units))
    assert three.value == pytest.approx(np.mean(seeds.sum(1) / units.sum()))
    assert three.half_width > 1.5 * one.half_width  # the seeds' spread is far larger than the test-set noise
    same = rate_interval(RateCounts(np.stack([errors] * 3), units))  # identical seeds add no noise
    assert (same.value, same.low, same.high) == pytest.approx((one.value, one.low, one.high), rel=1e-12)


def test_a_difference_resolves_only_when_its_interval_excludes_zero():
    rng = np.random.default_rng(3)
    units = rng.integers(10, 20, 100).astype(float)
    good = rng.binomial(units.astype(int), 0.3).astype(float)
    noisy = np.stack([np.clip(good + s, 0, units) for s in (-4, 0, 4)])  # seeds straddling `good`
    assert paired_rate_difference(RateCounts(noisy, units), RateCounts(good, units)).sign == 0
    assert paired_rate_difference(RateCounts(np.minimum(good + 3, units), units), RateCounts(good, units)).sign == 1
    assert paired_rate_difference(RateCounts(good, units), RateCounts(np.minimum(good + 3, units), units)).sign == -1


def test_a_share_of_a_gain_is_exact_when_every_utterance_keeps_the_same_share():
    units = np.random.default_rng(4).integers(10, 20, 60).astype(float)
    floor, base, half = 0.6 * units, 0.2 * units, 0.4 * units  # `half` keeps half the baseline's gain everywhere
    share = paired_statistic([RateCounts(x, units) for x in (floor, base, half)], lambda f, b, x: (f - x) / (f - b))
    assert (share.value, share.low, share.high) == pytest.approx((0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="paired"):
        paired_statistic([RateCounts(floor, units), RateCounts(base[:-1], units[:-1])], lambda f, b: f - b)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="one count"):
        RateCounts(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="one count"):
        RateCounts(np.ones((2, 3)), np.ones((3, 3)))  # seeds disagree
    with pytest.raises(ValueError, match="paired"):
        paired_rate_difference(RateCounts(np.ones(3), np.ones(3)), RateCounts(np.ones(4), np.ones(4)))


def test_a_share_of_a_gain_is_undefined_not_infinite_where_floor_and_baseline_tie():
    units = np.full(40, 10)
    tied = np.full(40, 5.0)
    other = tied - np.where(np.arange(40) % 2 == 0, 1.0, 0.0)  # better than both on half the utterances
    systems = [RateCounts(x, units) for x in (tied, tied.copy(), other)]
    share = paired_statistic(systems, lambda f, b, x: (f - x) / (f - b))
    # every replicate draws the same utterances for floor and baseline, so each one is 0/0 or x/0: none is defined
    assert np.isnan(share.value) and np.isnan(share.low) and np.isnan(share.high)
