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


@dataclass(frozen=True, eq=False)  # arrays: no meaningful == or hash
class RateCounts:
    """One system's per-utterance counts on a test set: the events counted (errors, or right answers for an
    accuracy) and the units they are out of (words, phones, frames, clips), float arrays of shape (seeds,
    utterances); a 1-D pair is one seed, and 1-D units serve every seed."""

    counts: np.ndarray
    units: np.ndarray

    def __post_init__(self) -> None:
        counts, units = np.asarray(self.counts, float), np.asarray(self.units, float)
        if counts.ndim == 1:
            counts = counts[None]
        if units.ndim == 1 and units.shape[0] == counts.shape[-1]:
            units = np.broadcast_to(units, counts.shape)
        if counts.shape != units.shape or counts.ndim != 2 or counts.shape[1] == 0:
            raise ValueError(f"need one count and one unit total per utterance (and seed), got "
                             f"{np.shape(self.counts)} and {np.shape(self.units)}")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "units", units)

    @property
    def n_utterances(self) -> int:
        """How many test utterances the counts cover."""
        return self.counts.shape[1]

    @property
    def n_seeds(self) -> int:
        """How many probe seeds the counts cover."""
        return self.counts.shape[0]


def _replicates(system: RateCounts, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mean rate over redrawn seeds on each replicate's utterances: (n_boot,)."""
    rates = system.counts[:, idx].sum(-1) / system.units[:, idx].sum(-1)  # (seeds, n_boot)
    n_seeds, n_boot = rates.shape
    if n_seeds == 1:
        return rates[0]
    drawn = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    return rates[drawn, np.arange(n_boot)[:, None]].mean(1)


def _estimate(system: RateCounts) -> np.float64:
    """The mean of the seeds' rates (a numpy float: a statistic dividing by a zero difference gives nan, no error)."""
    return np.mean(system.counts.sum(1) / system.units.sum(1))


def rate_interval(system: RateCounts, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """The rate (mean over seeds) with its 95 % bootstrap interval, resampling utterances and seeds."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, system.n_utterances, size=(n_boot, system.n_utterances))
    lo, hi = np.percentile(_replicates(system, idx, rng), [2.5, 97.5])
    return Interval(float(_estimate(system)), float(lo), float(hi))


def paired_rate_difference(a: RateCounts, b: RateCounts, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Rate of a minus rate of b over the same utterances (same order), with a paired 95 % bootstrap interval."""
    return paired_statistic([a, b], lambda x, y: x - y, n_boot, seed)


def paired_statistic(systems: list[RateCounts], statistic: Callable[..., np.ndarray],
                     n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """A function of several systems' rates on the same utterances (e.g. the share of a gain one keeps), with a
    paired 95 % bootstrap interval: every replicate resamples the same utterances for all systems and draws each
    system's seeds independently. `statistic` takes one rate per system (floats or arrays of replicates)."""
    if len({system.n_utterances for system in systems}) != 1:
        raise ValueError(f"systems: each system needs one result per paired utterance, got "
                         f"{[system.n_utterances for system in systems]} utterances")
    n = systems[0].n_utterances
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    with np.errstate(divide="ignore", invalid="ignore"):  # e.g. a share of a gain when floor and baseline tie
        replicates = statistic(*(_replicates(system, idx, rng) for system in systems))
        value = statistic(*(_estimate(system) for system in systems))
    # a ratio whose denominator is zero (a share of a gain where floor and baseline tie) is undefined, not infinite
    replicates = np.where(np.isfinite(replicates), replicates, np.nan)
    value = value if np.isfinite(value) else float("nan")
    if np.isnan(replicates).all():
        return Interval(float(value), float("nan"), float("nan"))
    lo, hi = np.nanpercentile(replicates, [2.5, 97.5])
    return Interval(float(value), float(lo), float(hi))
