"""Paired timing of two checkpoints: the verdict rule, bad input, and the fresh-process round trip."""

import math

import pytest

from melhubert_lib import paired_speed as paired_module
from melhubert_lib.efficiency import count_macs
from melhubert_lib.model import MelHuBERT, preset
from melhubert_lib.paired_speed import PairedSpeed, paired_speed, paired_speed_by_length


def speed(ratios: list[float]) -> PairedSpeed:
    return PairedSpeed(ratios=ratios, model_rtf=0.01, reference_rtf=0.01)


def test_a_verdict_needs_every_round_on_one_side_and_enough_rounds():
    assert speed([1.2, 1.05, 1.3, 1.1, 1.2, 1.15]).verdict == "faster"
    assert speed([0.8, 0.95, 0.9, 0.9, 0.85, 0.9]).verdict == "slower"
    assert speed([1.2, 0.99, 1.3, 1.1, 1.2, 1.15]).verdict == "indistinguishable"  # one round disagrees
    assert speed([1.0, 1.1, 1.2, 1.1, 1.2, 1.15]).verdict == "indistinguishable"  # a tie is not faster
    assert speed([2.0] * 5).verdict == "indistinguishable"  # sign test p = 2 x 0.5^5 = 0.0625: too few rounds
    assert speed([1.3, 1.05, 1.2]).speedup == 1.2  # the median round


def test_the_table_fields_are_the_median_the_extreme_rounds_and_the_verdict():
    pair = PairedSpeed(ratios=[1.3, 0.9, 1.2, 1.1, 1.25, 1.15, 1.05], model_rtf=0.02, reference_rtf=0.03)
    assert pair.table_fields() == {"model_rtf": 0.02, "reference_rtf": 0.03, "speedup": 1.15, "speedup_min": 0.9,
                                   "speedup_max": 1.3, "verdict": "indistinguishable", "rounds": 7}


def test_bad_input_fails_before_any_timing():
    model = MelHuBERT(preset("smoke"))
    with pytest.raises(ValueError, match="rounds=0"):
        paired_speed(model, model, rounds=0)
    with pytest.raises(ValueError, match="block_time=0"):
        paired_speed(model, model, block_time=0)
    with pytest.raises(ValueError, match="frame_ms 20 / 10"):
        paired_speed(model, MelHuBERT(preset("smoke", frame_ms=10)))
    for lengths in ([], [2.0, 0.0]):
        with pytest.raises(ValueError, match="positive utterance length"):
            paired_speed_by_length(model, model, lengths)


def test_the_length_table_has_one_paired_timing_and_both_mac_counts_per_length(monkeypatch):
    calls = []

    def fake(model, reference, seconds, threads, rounds, block_time):  # the timing itself is tested below
        calls.append((seconds, threads, rounds, block_time))
        ratios = [1.5] * 6 if seconds == 10 else [seconds, 2 * seconds, 3 * seconds]
        return PairedSpeed(ratios=ratios, model_rtf=1 / seconds, reference_rtf=0.5)

    monkeypatch.setattr(paired_module, "paired_speed", fake)
    small, large = MelHuBERT(preset("smoke")).truncate(1), MelHuBERT(preset("smoke"))
    table = paired_speed_by_length(small, large, [2, 10], threads=2, rounds=6, block_time=0.1)
    assert calls == [(2.0, 2, 6, 0.1), (10.0, 2, 6, 0.1)]
    assert table.seconds.dtype == float and list(table.seconds) == [2.0, 10.0]
    assert list(table.speedup) == [4.0, 1.5] and list(table.speedup_min) == [2.0, 1.5]
    assert list(table.speedup_max) == [6.0, 1.5] and list(table.rounds) == [3, 6]
    assert list(table.verdict) == ["indistinguishable", "faster"]  # 3 rounds are too few for any verdict
    assert list(table.model_rtf) == [0.5, 0.1] and list(table.reference_rtf) == [0.5, 0.5]
    assert list(table.threads) == [2, 2]
    for row in table.itertuples():  # the model's own MACs in the model's column, the reference's in its own
        assert row.model_macs_per_second == count_macs(small, row.seconds).per_second
        assert row.reference_macs_per_second == count_macs(large, row.seconds).per_second
        assert row.model_macs_per_second < row.reference_macs_per_second


def test_the_ratio_says_which_model_is_faster():
    # over a hundred times fewer MACs: every round must see the difference, whatever the CPU
    tiny = MelHuBERT(preset("smoke")).truncate(1)
    large = MelHuBERT(preset("default"))
    pair = paired_speed(tiny, large, seconds=1.0, rounds=6, block_time=0.05)
    assert len(pair.ratios) == 6 and all(math.isfinite(r) for r in pair.ratios)
    assert pair.speedup > 1 and pair.model_rtf < pair.reference_rtf
    assert pair.verdict == "faster"
    assert paired_speed(large, tiny, seconds=1.0, rounds=6, block_time=0.05).verdict == "slower"
