"""Paired CPU timing: is one checkpoint faster than another, with the drift of a shared machine cancelled?

`efficiency.measure` times each checkpoint once, in its own process, whenever a run writes it; on a shared machine
two such timings taken minutes apart drift apart (in one committed run every level of one model came out up to 3 %
slower than models of the same shape). Here both models run in one fresh process (the caching allocator of
`efficiency.process_speed`) in alternating blocks of passes, so that a drift hits both alike: each round times one
block of each, in alternating order, and gives one ratio. The verdict is a two-sided sign test over the rounds: "faster"
only where every round has the model faster and that is unlikely under no difference (p = 2 x 0.5^rounds below
0.05, so at least 6 rounds; with 7, p = 0.016); fewer rounds give no verdict.
Own code rather than `torch.utils.benchmark.Compare`, which tabulates timings but neither pairs nor tests them.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils import benchmark

from .efficiency import count_macs, run_timing_process
from .model import MelHuBERT

SIGN_TEST_ALPHA = 0.05


@dataclass
class PairedSpeed:
    """How much faster `model` ran than `reference`, round by round (reference time / model time; > 1: faster)."""

    ratios: list[float]  # one per round
    model_rtf: float  # median over rounds of the model's median seconds per second of audio
    reference_rtf: float

    @property
    def speedup(self) -> float:
        """The median of the rounds' ratios."""
        return float(np.median(self.ratios))

    @property
    def verdict(self) -> str:
        """"faster" or "slower" where every round agrees and the sign test's two-sided p is below 0.05, else
        "indistinguishable"."""
        if 2 * 0.5 ** len(self.ratios) >= SIGN_TEST_ALPHA:  # too few rounds for any verdict
            return "indistinguishable"
        if min(self.ratios) > 1.0:
            return "faster"
        if max(self.ratios) < 1.0:
            return "slower"
        return "indistinguishable"

    def table_fields(self) -> dict[str, float | str | int]:
        """The pair as columns of a results table: model_rtf, reference_rtf, speedup (the median round),
        speedup_min / speedup_max (the extreme rounds, not interval bounds), verdict and rounds."""
        return {"model_rtf": self.model_rtf, "reference_rtf": self.reference_rtf, "speedup": self.speedup,
                "speedup_min": min(self.ratios), "speedup_max": max(self.ratios), "verdict": self.verdict,
                "rounds": len(self.ratios)}


def paired_speed(model: MelHuBERT, reference: MelHuBERT, seconds: float = 10.0, threads: int = 1, rounds: int = 7,
                 block_time: float = 0.3) -> PairedSpeed:
    """Time `model` against `reference` in one fresh process: batch 1, `seconds` of random input, `threads` threads,
    `rounds` rounds of one block (at least `block_time` seconds of passes) per model, alternating which runs first."""
    if rounds < 1 or block_time <= 0:
        raise ValueError(f"rounds={rounds}, block_time={block_time}: time at least one round of a positive length")
    a, b = model.config, reference.config
    if (a.frame_ms, a.input_dim) != (b.frame_ms, b.input_dim):
        raise ValueError(f"the models read different inputs (frame_ms {a.frame_ms} / {b.frame_ms}, input_dim "
                         f"{a.input_dim} / {b.input_dim}): time models of the same frame rate and features")
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [model.save_pretrained(Path(tmp) / "model"), reference.save_pretrained(Path(tmp) / "reference")]
        args = [*map(str, dirs), str(seconds), str(threads), str(rounds), str(block_time)]
        return PairedSpeed(**run_timing_process(__name__, args))


def paired_speed_by_length(model: MelHuBERT, reference: MelHuBERT, seconds: Sequence[float], threads: int = 1,
                           rounds: int = 7, block_time: float = 0.3) -> pd.DataFrame:
    """How `model`'s speed against `reference` changes with the utterance's length: `paired_speed` at each length
    (one fresh process per length). One row per length: seconds, model_rtf, reference_rtf, speedup (reference time /
    model time, the median round), speedup_min / speedup_max (the extreme rounds), verdict, rounds, threads, and both
    models' MACs per second of audio (model_macs_per_second, reference_macs_per_second)."""
    lengths = [float(s) for s in seconds]
    if not lengths or min(lengths) <= 0:
        raise ValueError(f"seconds={list(seconds)}: give at least one positive utterance length (s)")
    rows = []
    for length in lengths:
        pair = paired_speed(model, reference, length, threads, rounds, block_time)
        rows.append({"seconds": length, **pair.table_fields(), "threads": threads,
                     "model_macs_per_second": count_macs(model, length).per_second,
                     "reference_macs_per_second": count_macs(reference, length).per_second})
    return pd.DataFrame(rows)


@torch.no_grad()
def _paired_probe(model_dir: str, reference_dir: str, seconds: float, threads: int, rounds: int,
                  block_time: float) -> None:
    """Body of the fresh process: load both, warm both up, time alternating blocks; print PairedSpeed as JSON."""
    torch.set_num_threads(threads)
    models = [MelHuBERT.from_pretrained(d).eval() for d in (model_dir, reference_dir)]
    frames = models[0].config.frames(seconds)
    x = torch.randn(1, frames, models[0].config.input_dim)
    timers = [benchmark.Timer("m(x)", globals={"m": m, "x": x}, num_threads=threads) for m in models]
    for timer in timers:
        timer.timeit(2)  # warm-up
    medians: list[list[float]] = [[], []]
    for r in range(rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            medians[i].append(timers[i].blocked_autorange(min_run_time=block_time).median / seconds)
    speed = PairedSpeed(ratios=[ref / mod for mod, ref in zip(*medians, strict=True)],
                        model_rtf=float(np.median(medians[0])), reference_rtf=float(np.median(medians[1])))
    print(json.dumps(asdict(speed)))


if __name__ == "__main__":
    _paired_probe(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
                  float(sys.argv[6]))
