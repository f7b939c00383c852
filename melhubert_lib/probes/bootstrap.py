"""Bootstrap intervals over utterances (and probe seeds) for rates built from per-utterance counts.

A rate is sum(counts) / sum(units): frame accuracy (correct frames / frames), PER or WER (edit errors
/ reference tokens), utterance accuracy (1 / 1 per utterance). Resampling whole utterances keeps
their internal correlation; the paired version resamples the same utterances for both systems.

Counts may carry one row per probe seed, shape (seeds, utterances): the estimate is then the mean of
the seeds' rates, and each bootstrap replicate also redraws the seeds with replacement (a two-level
bootstrap), so the interval holds test-set resampling and probe training noise together. Two systems'
seeds are drawn independently: their probes were trained independently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

N_BOOT = 1000


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95 % bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def sign(self) -> int:
        """+1 if the interval lies above zero, -1 if below, 0 if it contains zero (a difference not resolved)."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    @property
    def half_width(self) -> float:
        """Half the interval's width."""
        return (self.high - self.low) / 2

    def complement(self) -> Interval:
        """1 minus the estimate, its bounds swapped (an accuracy's interval as an error rate's, and back)."""
        return Interval(1 - self.value, 1 - self.high, 1 - self.low)


Difference = Interval  # a difference of two rates is an interval around it like any other estimate


def _per_seed(counts: np.ndarray, units: np.ndarray, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Counts and units as float arrays of shape (seeds, utterances); a 1-D pair is one seed."""
    counts, units = np.asarray(counts, float), np.asarray(units, float)
    if counts.ndim == 1:
        counts = counts[None]
    if units.ndim == 1 and units.shape[0] == counts.shape[-1]:
        units = np.broadcast_to(units, counts.shape)
    if counts.shape != units.shape or counts.ndim != 2 or counts.shape[1] == 0:
        raise ValueError(f"need one count and one unit total per utterance (and seed){name}, got "
                         f"{np.shape(counts)} and {np.shape(units)}")
    return counts, units


def _replicates(counts: np.ndarray, units: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mean rate over redrawn seeds on each replicate's utterances: (n_boot,)."""
    rates = counts[:, idx].sum(-1) / units[:, idx].sum(-1)  # (seeds, n_boot)
    n_seeds, n_boot = rates.shape
    if n_seeds == 1:
        return rates[0]
    drawn = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    return rates[drawn, np.arange(n_boot)[:, None]].mean(1)


def _estimate(counts: np.ndarray, units: np.ndarray) -> np.float64:
    """The mean of the seeds' rates (a numpy float: a statistic dividing by a zero difference gives nan, no error)."""
    return np.mean(counts.sum(1) / units.sum(1))


def rate_interval(counts: np.ndarray, units: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """The rate (mean over seeds) with its 95 % bootstrap interval, resampling utterances and seeds."""
    counts, units = _per_seed(counts, units)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, counts.shape[1], size=(n_boot, counts.shape[1]))
    lo, hi = np.percentile(_replicates(counts, units, idx, rng), [2.5, 97.5])
    return Interval(float(_estimate(counts, units)), float(lo), float(hi))


def paired_rate_difference(a_counts: np.ndarray, a_units: np.ndarray, b_counts: np.ndarray, b_units: np.ndarray,
                           n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Rate of a minus rate of b over the same utterances (same order), with a paired 95 % bootstrap interval."""
    return paired_statistic([(a_counts, a_units), (b_counts, b_units)], lambda a, b: a - b, n_boot, seed)


def paired_statistic(systems: list[tuple[np.ndarray, np.ndarray]], statistic: Callable[..., np.ndarray],
                     n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """A function of several systems' rates on the same utterances (e.g. the share of a gain one keeps), with a
    paired 95 % bootstrap interval: every replicate resamples the same utterances for all systems and draws each
    system's seeds independently. `statistic` takes one rate per system (floats or arrays of replicates)."""
    pairs = [_per_seed(c, u, f" for system {i}") for i, (c, u) in enumerate(systems)]
    if len({c.shape[1] for c, _ in pairs}) != 1:
        raise ValueError(f"systems: each system needs one result per paired utterance, got "
                         f"{[c.shape[1] for c, _ in pairs]} utterances")
    n = pairs[0][0].shape[1]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    with np.errstate(divide="ignore", invalid="ignore"):  # e.g. a share of a gain when floor and baseline tie
        replicates = statistic(*(_replicates(c, u, idx, rng) for c, u in pairs))
        value = statistic(*(_estimate(c, u) for c, u in pairs))
    # a ratio whose denominator is zero (a share of a gain where floor and baseline tie) is undefined, not infinite
    replicates = np.where(np.isfinite(replicates), replicates, np.nan)
    value = value if np.isfinite(value) else float("nan")
    if np.isnan(replicates).all():
        return Interval(float(value), float("nan"), float("nan"))
    lo, hi = np.nanpercentile(replicates, [2.5, 97.5])
    return Interval(float(value), float(lo), float(hi))
