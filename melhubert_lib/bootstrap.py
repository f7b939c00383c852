"""Bootstrap intervals over utterances for rates built from per-utterance counts.

A rate is sum(counts) / sum(units): frame accuracy (correct frames / frames), PER or WER (edit errors
/ reference tokens), utterance accuracy (1 / 1 per utterance). Resampling whole utterances keeps
their internal correlation; the paired version resamples the same utterances for both systems.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOT = 1000


@dataclass(frozen=True)
class Difference:
    """Rate of a minus rate of b on the same utterances, with a 95 % paired bootstrap interval."""

    value: float
    low: float
    high: float


def _check(counts: np.ndarray, units: np.ndarray) -> None:
    if counts.shape != units.shape or counts.ndim != 1 or len(units) == 0:
        raise ValueError(f"need one count and one unit total per utterance, got {counts.shape} and {units.shape}")


def rate_interval(counts: np.ndarray, units: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of sum(counts) / sum(units), resampling utterances."""
    counts, units = np.asarray(counts, float), np.asarray(units, float)
    _check(counts, units)
    idx = np.random.default_rng(seed).integers(0, len(units), size=(n_boot, len(units)))
    lo, hi = np.percentile(counts[idx].sum(1) / units[idx].sum(1), [2.5, 97.5])
    return float(lo), float(hi)


def paired_rate_difference(a_counts: np.ndarray, a_units: np.ndarray, b_counts: np.ndarray, b_units: np.ndarray,
                           n_boot: int = N_BOOT, seed: int = 0) -> Difference:
    """Rate of a minus rate of b over the same utterances (same order), with a paired 95 % bootstrap interval."""
    a_counts, a_units, b_counts, b_units = (np.asarray(x, float) for x in (a_counts, a_units, b_counts, b_units))
    _check(a_counts, a_units)
    _check(b_counts, b_units)
    if len(a_units) != len(b_units):
        raise ValueError(f"paired utterances differ in number: {len(a_units)} and {len(b_units)}")
    idx = np.random.default_rng(seed).integers(0, len(a_units), size=(n_boot, len(a_units)))
    diffs = a_counts[idx].sum(1) / a_units[idx].sum(1) - b_counts[idx].sum(1) / b_units[idx].sum(1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return Difference(float(a_counts.sum() / a_units.sum() - b_counts.sum() / b_units.sum()), float(lo), float(hi))
