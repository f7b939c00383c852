"""Paired timing of two checkpoints: the verdict rule, bad input, and the fresh-process round trip."""

import math

import pytest

from melhubert_lib.model import MelHuBERT, preset
from melhubert_lib.paired_speed import PairedSpeed, paired_speed


def speed(ratios: list[float]) -> PairedSpeed:
    return PairedSpeed(ratios=ratios, model_rtf=0.01, reference_rtf=0.01)


def test_a_verdict_needs_every_round_on_one_side():
    assert speed([1.2, 1.05, 1.3]).verdict == "faster"
    assert speed([0.8, 0.95, 0.9]).verdict == "slower"
    assert speed([1.2, 0.99, 1.3]).verdict == "indistinguishable"  # one round disagrees
    assert speed([1.0, 1.1, 1.2]).verdict == "indistinguishable"  # a tie is not faster
    assert speed([1.3, 1.05, 1.2]).speedup == 1.2  # the median round


def test_bad_rounds_fail_before_any_timing():
    model = MelHuBERT(preset("smoke"))
    with pytest.raises(ValueError, match="rounds=0"):
        paired_speed(model, model, rounds=0)
    with pytest.raises(ValueError, match="block_time=0"):
        paired_speed(model, model, block_time=0)


def test_both_models_are_timed_every_round_in_one_process():
    shallow = MelHuBERT(preset("smoke")).truncate(1)
    whole = MelHuBERT(preset("smoke"))
    pair = paired_speed(shallow, whole, seconds=1.0, rounds=3, block_time=0.05)
    assert len(pair.ratios) == 3
    assert all(math.isfinite(r) and r > 0 for r in pair.ratios)
    assert pair.model_rtf > 0 and pair.reference_rtf > 0
    assert min(pair.ratios) <= pair.speedup <= max(pair.ratios)
